"""A worker's life on a real two-worker service: start-up without PostgreSQL, SIGTERM under
load (drain, then a clean stop), SIGKILL under load (the other worker unharmed, a
replacement started by uvicorn's supervisor)."""

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadtest.support import ServerProcess
from tests.support.proxy import CuttableProxy
from tests.support.servers import reset_config, running_server, server_environ

VIDEO = "/?video=http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
DRAIN = 2.0
# Spawning a worker imports the whole app: seconds on this shared two-core machine.
REPLACED_WITHIN = 60.0


class Connection:
    """One HTTP/1.1 connection, spoken by hand so the test knows which worker holds it."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.closed_by_server = False

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        self.closed_by_server = False

    async def send(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def request(self, target: str) -> tuple[int, dict[str, str], bytes]:
        await self.send(f"GET {target} HTTP/1.1\r\nHost: balancer\r\n\r\n".encode())
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        assert self._reader is not None
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *lines = head.strip().split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.closed_by_server = True
            await self.close()
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None


async def worker_of(connection: Connection) -> int:
    """The pid of the worker holding `connection` (from `/ready`, 200 or 503)."""
    _, _, body = await connection.request("/ready")
    pid: int = json.loads(body)["worker"]
    return pid


async def connect_to(port: int, pid: int, attempts: int = 200) -> Connection:
    """A keep-alive connection held by worker `pid` (the kernel picks who accepts)."""
    for _ in range(attempts):
        connection = Connection(port)
        await connection.open()
        if await worker_of(connection) == pid and connection.is_open:
            return connection
        await connection.close()
    raise AssertionError(f"no connection reached worker {pid}")


async def workers(port: int, count: int = 2, timeout: float = REPLACED_WITHIN) -> set[int]:
    """The pids of the workers answering on `port`: new connections until `count` are seen
    (a worker still starting accepts nothing) or `timeout` ends."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        connection = Connection(port)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
            await connection.open()
            seen.add(await worker_of(connection))
        await connection.close()
        if len(seen) < count:
            await asyncio.sleep(0.02)
    return seen


@dataclass
class Load:
    """`lanes` clients sending redirects back to back, each on its own keep-alive
    connection, reconnecting when the server closes it. Each request is filed under the
    worker that held its connection."""

    port: int
    # Each lane's first connection is held by one of these workers in turn (the kernel
    # may otherwise hand every connection to one of them).
    pins: list[int]
    lanes: int = 6
    ok: dict[int, int] = field(default_factory=dict)
    failures: list[tuple[int, str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _lane(self, index: int) -> None:
        pid = self.pins[index % len(self.pins)]
        connection = await connect_to(self.port, pid)
        while not self._stop.is_set():
            try:
                if not connection.is_open:
                    await connection.open()
                    pid = await worker_of(connection)
                    if not connection.is_open:  # a draining worker: unknown which one next
                        await connection.open()
                        pid = 0
                status, headers, body = await connection.request(VIDEO)
                if status != 301 or "location" not in headers:
                    self.failures.append((pid, f"{status} {body[:200]!r}"))
                else:
                    self.ok[pid] = self.ok.get(pid, 0) + 1
                if pid == 0:  # one request only: the next connection learns its worker
                    await connection.close()
            except (OSError, asyncio.IncompleteReadError) as error:
                self.failures.append((pid, repr(error)))
                await connection.close()
        await connection.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Load"]:
        tasks = [asyncio.create_task(self._lane(index)) for index in range(self.lanes)]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    @property
    def total(self) -> int:
        return sum(self.ok.values())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of the supervisor still "exists" until reaped.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


@pytest.fixture(scope="module")
def service(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with running_server(
        database_url,
        redis_url,
        workers=2,
        log_file=tmp_path_factory.mktemp("lifecycle") / "server.log",
        timeout=90,
        drain_seconds=DRAIN,
    ) as process:
        reset_config(process.url)
        yield process


async def test_sigterm_drains_a_worker_under_load_and_no_request_fails(
    service: ServerProcess,
) -> None:
    pids = await workers(service.port)
    assert len(pids) == 2, pids
    target, other = sorted(pids)
    asked_ready = await connect_to(service.port, target)
    asks_redirect = await connect_to(service.port, target)
    in_flight = await connect_to(service.port, target)
    body = b'{"video": "http://s1.origin-cluster/v.m3u8"}'
    load = Load(service.port, sorted(pids))
    async with load.running():
        await asyncio.sleep(1)
        # A request the worker is still receiving when the listener closes.
        await in_flight.send(
            b"POST /balance HTTP/1.1\r\nHost: balancer\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
        )
        os.kill(target, signal.SIGTERM)
        signalled = time.monotonic()

        status, _, ready = await asked_ready.request("/ready")
        assert status == 503, ready
        assert b'"draining"' in ready
        assert time.monotonic() - signalled < 0.5

        await asyncio.sleep(DRAIN / 2)
        status, headers, _ = await asks_redirect.request(VIDEO)
        assert status == 301, "a draining worker still serves new requests"
        assert headers["connection"] == "close", "and tells keep-alive clients to go"

        await asyncio.sleep(DRAIN / 2 + 0.5)  # the listener is closed now
        await in_flight.send(body[10:])
        status, _, answer = await in_flight.response()
        assert status == 200, answer

        async def stopped() -> bool:
            return not alive(target)

        await wait_for(stopped, 15, "the drained worker did not exit")

        async def replaced() -> bool:
            return len((await workers(service.port, 3, timeout=1)) - {target}) == 2

        await wait_for(replaced, REPLACED_WITHIN, "uvicorn's supervisor did not replace it")
        await asyncio.sleep(0.5)

    print(
        f"SIGTERM under load: {load.total} redirects by worker {load.ok}, "
        f"{len(load.failures)} failed"
    )
    assert load.failures == [], load.failures[:10]
    assert load.ok.get(target, 0) > 0, load.ok
    assert load.ok.get(other, 0) > 0, load.ok
    assert load.total > 500, load.ok


async def test_sigkill_leaves_the_other_worker_unharmed_and_the_worker_is_replaced(
    service: ServerProcess,
) -> None:
    pids = await workers(service.port)
    assert len(pids) == 2, pids
    target, other = sorted(pids)
    load = Load(service.port, sorted(pids), lanes=8)
    async with load.running():
        await asyncio.sleep(1)
        os.kill(target, signal.SIGKILL)
        killed_at, killed = load.total, time.monotonic()

        async def replaced() -> bool:
            return len((await workers(service.port, 3, timeout=1)) - {target}) == 2

        await wait_for(replaced, REPLACED_WITHIN, "uvicorn's supervisor did not replace it")
        print(f"SIGKILL: a replacement served /ready {time.monotonic() - killed:.1f} s later")
        await asyncio.sleep(1)
        after = load.total - killed_at

    print(
        f"SIGKILL under load: {load.total} redirects by worker {load.ok}, "
        f"{after} after the kill; failed: {load.failures}"
    )
    assert [f for f in load.failures if f[0] != target] == [], load.failures[:10]
    # At most one failed request per connection the killed worker held.
    assert len(load.failures) <= load.lanes, load.failures
    assert load.ok.get(other, 0) > 0, load.ok
    assert after > 200, load.ok
    assert not alive(target)


async def test_sigterm_to_the_service_drains_every_worker_and_stops_cleanly(
    service: ServerProcess,
) -> None:
    pids = await workers(service.port)
    held = [await connect_to(service.port, pid) for pid in sorted(pids)]
    load = Load(service.port, sorted(pids))
    async with load.running():
        await asyncio.sleep(0.5)
        service.process.send_signal(signal.SIGTERM)
        # The supervisor passes SIGTERM on to its workers within half a second.
        await asyncio.sleep(0.8)
        for connection in held:
            status, _, ready = await connection.request("/ready")
            assert status == 503, ready
            assert b'"draining"' in ready
        served = load.total
        await asyncio.sleep(0.6)
        print(f"service SIGTERM: {load.total - served} redirects in 0.6 s of the drain")
        assert load.total > served, "the workers still serve during the drain"
        # The load stops before the drain ends: past it nobody accepts on this port.
    assert load.failures == [], load.failures[:10]
    returncode = await asyncio.to_thread(service.process.wait, 30)
    assert returncode == 0
    assert service.log_file is not None
    log = service.log_file.read_text()
    assert log.count("draining") >= 2, log[-3000:]
    assert log.count("Application shutdown complete.") >= 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "[error" not in log, log[-3000:]


async def test_start_waits_for_postgres_with_ready_503_then_serves(
    database_url: str, redis_url: str, sequence_key: str, tmp_path: Path
) -> None:
    postgres = CuttableProxy.for_url(database_url)
    await postgres.start()
    await postgres.cut()
    server = ServerProcess(
        server_environ(
            postgres.proxied(database_url), redis_url, sequence_key, startup_timeout_seconds=120
        ),
        workers=1,
        log_file=tmp_path / "server.log",
    )
    started = asyncio.create_task(asyncio.to_thread(server.start, 120))
    try:
        connection = Connection(server.port)

        async def answers_503() -> bool:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await connection.open()
                status, _, body = await connection.request("/ready")
                await connection.close()
                return status == 503 and b'"starting"' in body and b"postgres" in body
            return False

        await wait_for(answers_503, 60, "/ready did not answer 503 starting")
        await connection.open()
        status, headers, _ = await connection.request(VIDEO)
        assert status == 503
        assert headers["retry-after"] == "1"
        await connection.close()
        await asyncio.sleep(1)
        assert "startup_waiting" in server.log_file.read_text()  # type: ignore[union-attr]

        await postgres.restore()
        restored = time.monotonic()
        await started
        print(f"start-up: ready {time.monotonic() - restored:.1f} s after PostgreSQL returned")
        assert time.monotonic() - restored < 8, "5 s between attempts at most"
        connection = Connection(server.port)
        await connection.open()
        status, _, _ = await connection.request(VIDEO)
        assert status == 301
        await connection.close()
    finally:
        await asyncio.to_thread(server.stop)
        await postgres.close()
        with contextlib.suppress(BaseException):
            await started
    log = server.log_file.read_text()  # type: ignore[union-attr]
    waiting = [line for line in log.splitlines() if "startup_waiting" in line]
    assert waiting, log[-3000:]
    assert f"127.0.0.1:{postgres.listen_port}" in waiting[0]
    assert "next_attempt_in_seconds=" in waiting[0]
    assert "gives_up_in_seconds=" in waiting[0]
    assert "Traceback" not in log, log[-3000:]


async def test_start_without_redis_serves_degraded_and_says_where_redis_is(
    database_url: str, redis_url: str, sequence_key: str, tmp_path: Path
) -> None:
    redis = CuttableProxy.for_url(redis_url)
    await redis.start()
    await redis.cut()
    server = ServerProcess(
        server_environ(database_url, redis.proxied(redis_url), sequence_key),
        workers=1,
        log_file=tmp_path / "server.log",
    )
    try:
        await asyncio.to_thread(server.start, 90)
        connection = Connection(server.port)
        await connection.open()
        status, _, body = await connection.request("/ready")
        assert status == 200
        assert json.loads(body)["status"] == "degraded"
        status, _, _ = await connection.request(VIDEO)
        assert status == 301
        await connection.close()
    finally:
        await asyncio.to_thread(server.stop)
        await redis.close()
    log = (tmp_path / "server.log").read_text()
    lines = [line for line in log.splitlines() if "startup_without_redis" in line]
    assert lines, log[-3000:]
    assert f"127.0.0.1:{redis.listen_port}" in lines[0]
