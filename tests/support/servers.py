"""Balancers for the end-to-end tests, each on Redis keys no other run shares."""

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from app.main.settings import Settings
from loadtest.support import ROOT, ServerProcess, forget_keys, redis_keys
from tests.support.app import ADMIN_TOKEN
from tests.support.proxy import CuttableProxy

# What the split tests assume, whatever an earlier test left in the session's database
# (CDN health checks left on, say, would send everything to the origin here: no CDN answers;
# a rate limit the fuzzer stored would refuse this machine's redirects with 429).
BASELINE = {
    "cdn_hosts": [{"host": "cdn.example.com", "weight": 1}],
    "cdn_weight": 9,
    "origin_weight": 1,
    "redirect_status": 301,
    "origin_domains": ["origin-cluster"],
    "server_rules": {},
    "down_servers": [],
    "cdn_health": {"enabled": False},
    "origin_fallback": True,
    "rate_limit": None,
    "regions": [],
    "content_steering": {"enabled": False, "ttl_seconds": 10},
    "comment": "e2e baseline",
}
_ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_VIDEO = {"video": "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"}


def reset_config(url: str) -> int:
    """Store the baseline as the active version and remove every client's limit of its own
    (waiting until this machine's redirects are no longer refused); the version's number."""
    response = httpx.patch(f"{url}/config", json=BASELINE, headers=_ADMIN)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    if _remove_client_limits(url):
        deadline = time.monotonic() + 10
        while httpx.get(url, params=_VIDEO).status_code == 429:
            assert time.monotonic() < deadline, "a removed client limit still applies after 10 s"
            time.sleep(0.05)
    return version


def _remove_client_limits(url: str) -> int:
    removed = 0
    while items := httpx.get(f"{url}/limits", params={"limit": 1000}, headers=_ADMIN).json()[
        "items"
    ]:
        for item in items:
            path = f"{url}/limits/{quote(item['client_id'], safe='')}"
            assert httpx.delete(path, headers=_ADMIN).status_code in (204, 404)
        removed += len(items)
    return removed


def fresh_prefix(name: str = "balancer-e2e") -> str:
    """A Redis key prefix no other run uses."""
    return f"{name}:{uuid.uuid4().hex}"


def server_environ(
    database_url: str, redis_url: str, prefix: str, **settings: object
) -> dict[str, str]:
    """The service's environment: the test admin token, every Redis key under `prefix`, and
    `settings` by field name (`drain_seconds=0.5` is BALANCER_DRAIN_SECONDS=0.5)."""
    unknown = set(settings) - set(Settings.__dataclass_fields__)
    assert not unknown, f"no such settings: {sorted(unknown)}"
    return {
        "BALANCER_DATABASE_URL": database_url,
        "BALANCER_REDIS_URL": redis_url,
        "BALANCER_ADMIN_TOKEN": ADMIN_TOKEN,
        **redis_keys(prefix),
        **{f"BALANCER_{name.upper()}": str(value) for name, value in settings.items()},
    }


@contextmanager
def running_server(
    database_url: str,
    redis_url: str,
    *,
    workers: int,
    prefix: str | None = None,
    log_file: Path | None = None,
    timeout: float = 30,
    **settings: object,
) -> Iterator[ServerProcess]:
    """A started server, stopped afterwards. Without `prefix` its Redis keys are its own and
    removed afterwards; with one (instances that share keys) they are the caller's."""
    own = prefix is None
    keys = fresh_prefix() if prefix is None else prefix
    process = ServerProcess(
        server_environ(database_url, redis_url, keys, **settings),
        workers=workers,
        log_file=log_file,
    )
    try:
        process.start(timeout)
        yield process
    finally:
        process.stop()
        if own:
            forget_keys(redis_url, keys)


@contextmanager
def until_banner(command: Sequence[str], environ: Mapping[str, str]) -> Iterator[str]:
    """`make run` or `make demo` (their commands, with `environ` for the BALANCER_* of the
    parent's environment): what they printed until the banner's last line; Ctrl-C after."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}, **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # the banner's last line is how to stop
            lines.append(line)
            if line.startswith("  stop  "):
                break
        yield "".join(lines)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix whose keys are removed afterwards: for instances that share their
    keys, or a test that reads them."""
    prefix = fresh_prefix()
    try:
        yield prefix
    finally:
        forget_keys(redis_url, prefix)


@asynccontextmanager
async def behind_redis_proxy(
    database_url: str, redis_url: str, prefix: str, *, workers: int, **settings: object
) -> AsyncIterator[tuple[ServerProcess, CuttableProxy]]:
    """A server on the baseline config whose Redis is behind a proxy the test can cut."""
    redis = CuttableProxy.for_url(redis_url)
    await redis.start()
    process = ServerProcess(
        server_environ(database_url, redis.proxied(redis_url), prefix, **settings),
        workers=workers,
    )
    try:
        await asyncio.to_thread(process.start)  # the proxy runs on this loop meanwhile
        await asyncio.to_thread(reset_config, process.url)
        yield process, redis
    finally:
        await asyncio.to_thread(process.stop)
        await redis.close()


class WorkerLines:
    """A kept-alive connection to each worker of some servers, by worker pid.

    A new connection lands on whichever worker the kernel hands it to, and sequential ones
    can land on the same worker for a second or more: a test that must hear from every
    worker by a deadline finds a connection to each first, then asks each over its own.
    """

    def __init__(self, servers: list[ServerProcess], workers: int, attempts: int = 200) -> None:
        self._clients: dict[int, httpx.Client] = {}
        for attempt in range(attempts):
            client = httpx.Client(
                base_url=servers[attempt % len(servers)].url,
                timeout=5,
                limits=httpx.Limits(max_connections=1),
            )
            pid = client.get("/ready").json()["worker"]
            if pid in self._clients:
                client.close()
            else:
                self._clients[pid] = client
            if len(self._clients) == workers:
                return
        self.close()
        raise AssertionError(f"only workers {sorted(self._clients)} answered in {attempts} tries")

    def ready(self) -> dict[int, dict[str, object]]:
        """`/ready` of every worker, each asked over its own connection."""
        seen = {}
        for pid, client in self._clients.items():
            body = client.get("/ready").json()
            assert body["worker"] == pid, "a kept-alive connection reached another worker"
            seen[pid] = body
        return seen

    @property
    def pids(self) -> list[int]:
        return list(self._clients)

    def statuses(self, path: str, **request: object) -> dict[int, int]:
        """The status of `GET path` from every worker, each asked over its own connection."""
        return {
            pid: client.get(path, **request).status_code  # type: ignore[arg-type]
            for pid, client in self._clients.items()
        }

    @property
    def clients(self) -> dict[int, httpx.Client]:
        """The connection to each worker, by pid."""
        return dict(self._clients)

    def get(self, path: str, **options: Any) -> dict[int, httpx.Response]:
        """`GET path` of every worker, one after the other, each over its own connection."""
        return {pid: client.get(path, **options) for pid, client in self._clients.items()}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> "WorkerLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
