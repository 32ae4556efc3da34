"""What the bench, the Locust runner and the stack each need to start a balancer."""

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis import Redis
from redis.exceptions import RedisError

from app.infrastructure.postgres.migrations import migrate

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "app", "serve"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def backing_services(workdir: Path) -> Iterator[tuple[str, str]]:
    """PostgreSQL and Redis URLs: the environment's, else embedded servers under `workdir`."""
    database_url = os.environ.get("BALANCER_DATABASE_URL", "")
    redis_url = os.environ.get("BALANCER_REDIS_URL", "")
    if database_url and redis_url:
        yield database_url, redis_url
        return
    from app.main.embedded import EmbeddedServices  # noqa: PLC0415 - optional packages

    print(f"starting embedded PostgreSQL and Redis in {workdir}", flush=True)
    with EmbeddedServices(workdir / "services") as services:
        yield database_url or services.database_url, redis_url or services.redis_url


@contextmanager
def scratch_database(database_url: str, prefix: str = "balancer_scratch") -> Iterator[str]:
    """A migrated database of its own on `database_url`'s server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))

    async def execute(statement: str) -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        migrate(url)
        yield url
    finally:
        asyncio.run(execute(f'DROP DATABASE "{name}" WITH (FORCE)'))


def redis_keys(prefix: str) -> dict[str, str]:
    """Every Redis key setting of the service under `prefix`: the sequence is `prefix` itself
    (its per-server counters `prefix:<server>`), the others `prefix.<name>`. A fresh prefix
    shares no key with any other run, and `forget_keys` removes all that the run wrote."""
    return {
        "BALANCER_SEQUENCE_KEY": prefix,
        "BALANCER_CDN_HEALTH_KEY": f"{prefix}.cdn-health",
        "BALANCER_RATE_LIMIT_KEY": f"{prefix}.ratelimit",
        "BALANCER_STATS_KEY": f"{prefix}.stats",
    }


def forget_keys(redis_url: str, prefix: str) -> None:
    """Drop a run's keys (all under `prefix`, see `redis_keys`) from a Redis that outlives it."""
    client = Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    except RedisError as error:
        print(f"warning: could not remove the keys {prefix}*: {error}", file=sys.stderr)
    finally:
        client.close()


def serve_until_exit(
    environ: Mapping[str, str], timeout: float = 60
) -> "subprocess.CompletedProcess[str]":
    """`python -m app serve` with exactly `environ`, for a server that is to stop on its own
    (refused settings, no database): its exit code and output."""
    return subprocess.run(
        SERVE, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout, check=False
    )


class ServerProcess:
    """`python -m app serve` in a child process on 127.0.0.1, as it runs in production.

    `environ` adds to the parent's environment with its `BALANCER_*` variables removed;
    `log_file`, when given, takes the server's output (the terminal's otherwise).
    """

    def __init__(
        self, environ: Mapping[str, str], *, workers: int, log_file: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")},
            "BALANCER_LOG_FORMAT": "console",
            # No load balancer to wait for: stop at once unless a test asks for a drain.
            "BALANCER_DRAIN_SECONDS": "0",
            **environ,
            "BALANCER_HOST": "127.0.0.1",
            "BALANCER_PORT": str(self.port),
            "BALANCER_WORKERS": str(workers),
        }
        self._process: subprocess.Popen[bytes] | None = None
        self.log_file = log_file

    @property
    def process(self) -> "subprocess.Popen[bytes]":
        assert self._process is not None, "not started"
        return self._process

    def start(self, timeout: float = 30) -> None:
        """Start the server and return once `/ready` answers 200."""
        output = self.log_file.open("ab") if self.log_file is not None else None
        try:
            self._process = subprocess.Popen(
                SERVE,
                cwd=ROOT,
                env=self._environ,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
            )
        finally:
            if output is not None:
                output.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the balancer exited with {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/ready", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the balancer did not become ready at {self.url} in {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
