"""CDN health across real server processes: one prober per cluster elected through Redis,
every worker of every instance routing by what it publishes, probes never in the way."""

import contextlib
import gc
import os
import signal
import statistics
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from loadtest.fake_cdn import FakeCdn
from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.servers import WorkerLines, key_prefix, running_server

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLOSE = {"Connection": "close"}  # a new connection per request spreads them over workers
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
INTERVAL, TIMEOUT, FALL, RISE = 0.5, 0.25, 2, 2
FAST = {
    "enabled": True,
    "interval_seconds": INTERVAL,
    "timeout_seconds": TIMEOUT,
    "fall": FALL,
    "rise": RISE,
}
LEASE = 1.5
SLACK = 1.0  # the workers' 0.25 s refresh, plus scheduling on a busy 2-core machine


@pytest.fixture
def cluster(
    database_url: str, redis_url: str, initial_config: None
) -> Iterator[list[ServerProcess]]:
    """Two instances sharing PostgreSQL and Redis: one with 2 workers, one with 1."""
    with contextlib.ExitStack() as stack:
        prefix = stack.enter_context(key_prefix(redis_url))
        yield [
            stack.enter_context(
                running_server(
                    database_url,
                    redis_url,
                    workers=workers,
                    prefix=prefix,
                    cdn_prober_lease_seconds=LEASE,
                )
            )
            for workers in (2, 1)
        ]


@pytest.fixture
def cdns() -> Iterator[list[FakeCdn]]:
    servers = [FakeCdn().start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def configure(server: ServerProcess, **values: object) -> int:
    response = httpx.patch(f"{server.url}/config", json=values, headers=ADMIN)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def workers_view(servers: list[ServerProcess], rounds: int = 12) -> dict[int, dict[str, object]]:
    """`/ready` of every worker reached, by worker pid."""
    seen = {}
    for server in servers:
        for _ in range(rounds):
            body = httpx.get(f"{server.url}/ready", headers=CLOSE, timeout=5).json()
            seen[body["worker"]] = body
    return seen


def wait_for_workers(servers: list[ServerProcess], count: int, version: int) -> None:
    deadline = time.monotonic() + 5
    while True:
        seen = workers_view(servers)
        if len(seen) >= count and {body["config_version"] for body in seen.values()} == {version}:
            return
        assert time.monotonic() < deadline, seen


def check_on_every_worker(cluster: list[ServerProcess], cdns: list[FakeCdn]) -> None:
    """The pool of `cdns` with fast checks, on all three workers of the cluster."""
    version = configure(cluster[0], cdn_hosts=[{"host": cdn.host} for cdn in cdns], cdn_health=FAST)
    wait_for_workers(cluster, 3, version)


def test_every_worker_of_every_instance_sees_a_stopped_host_leave_and_return_in_time(
    cluster: list[ServerProcess], cdns: list[FakeCdn]
) -> None:
    b = cdns[1]
    check_on_every_worker(cluster, cdns)
    time.sleep(2 * INTERVAL)
    with WorkerLines(cluster, 3) as workers:
        b.stop()
        stopped = time.monotonic()
        first_down: dict[int, float] = {}
        limit = FALL * INTERVAL + TIMEOUT + INTERVAL + SLACK
        while len(first_down) < 3:
            assert time.monotonic() - stopped < limit, first_down
            for pid, body in workers.ready().items():
                if body["cdn_hosts"][b.base_url] == "down":  # type: ignore[index]
                    first_down.setdefault(pid, time.monotonic() - stopped)
        assert max(first_down.values()) - min(first_down.values()) < 1.0, first_down
        for _ in range(20):
            response = httpx.get(f"{cluster[1].url}/", params={"video": VIDEO}, headers=CLOSE)
            assert urlsplit(response.headers["location"]).netloc != b.host
        b.start()
        back = time.monotonic()
        while not all(
            body["cdn_hosts"][b.base_url] == "up"  # type: ignore[index]
            for body in workers.ready().values()
        ):
            assert time.monotonic() - back < RISE * INTERVAL + INTERVAL + SLACK


def test_one_prober_per_cluster_and_a_survivor_takes_over_when_it_dies(
    cluster: list[ServerProcess], cdns: list[FakeCdn]
) -> None:
    a, b = cdns
    check_on_every_worker(cluster, cdns)
    time.sleep(LEASE)
    with WorkerLines(cluster, 3) as workers:
        probers = [pid for pid, body in workers.ready().items() if body["cdn_prober"]]
    assert len(probers) == 1, probers
    hits = a.hits
    time.sleep(4 * INTERVAL)
    assert a.hits - hits <= 4 + 1  # one prober's rounds, not one per worker

    os.kill(probers[0], signal.SIGKILL)  # the prober's process dies without a word
    b.stop()
    died = time.monotonic()
    while True:
        survivors = workers_view([cluster[1]], rounds=2)
        if all(body["cdn_hosts"][b.base_url] == "down" for body in survivors.values()):  # type: ignore[index]
            break
        assert time.monotonic() - died < LEASE + FALL * INTERVAL + TIMEOUT + INTERVAL + SLACK
    # One /ready snapshot can miss the prober (the kernel picks the worker of each
    # connection) or catch it between lease renewals: CI once saw none. Within a lease:
    deadline = time.monotonic() + LEASE + SLACK
    while len(new := [p for p, body in workers_view(cluster).items() if body["cdn_prober"]]) != 1:
        assert time.monotonic() < deadline, new
    assert new != probers


def test_a_probe_target_that_hangs_does_not_slow_redirects(
    database_url: str, redis_url: str, initial_config: None
) -> None:
    hanging, up = FakeCdn(hang=True).start(), FakeCdn().start()
    try:
        # its only worker is the prober
        with running_server(
            database_url, redis_url, workers=1, cdn_prober_lease_seconds=LEASE
        ) as server:
            configure(
                server,
                cdn_weight=1,
                origin_weight=0,
                cdn_hosts=[{"host": hanging.host}, {"host": up.host}],
                cdn_health={"enabled": True, "interval_seconds": 1.0, "timeout_seconds": 0.9},
            )
            latencies = []
            gc.disable()  # the server's pauses are measured, not this process's collector's
            try:
                with httpx.Client(base_url=server.url) as client:
                    started = time.monotonic()
                    while time.monotonic() - started < 3.0:  # three probe rounds, each hangs 0.9 s
                        sent = time.perf_counter()
                        response = client.get("/", params={"video": VIDEO})
                        latencies.append(time.perf_counter() - sent)
                        assert response.status_code == 301
            finally:
                gc.enable()
            assert hanging.hits >= 2
            print(
                f"redirects while probes hang: {len(latencies)}, median "
                f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
            )
            assert max(latencies) < 0.3  # a probe that blocked the loop would stall one for 0.9 s
    finally:
        hanging.stop()
        up.stop()


def test_a_host_answering_garbage_leaves_the_others_probed_and_ready_current(
    cluster: list[ServerProcess], cdns: list[FakeCdn]
) -> None:
    """`HTTP/1.1 ²00 OK` (a Latin-1 superscript two) from one host once failed every round:
    nothing was published, a host stopped meanwhile stayed up for every worker, and `/ready`
    went stale. That host is down by its own answer now, and the others' states move on."""
    a, b = cdns
    garbage = FakeCdn(answer=b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n").start()
    try:
        check_on_every_worker(cluster, [garbage, a, b])
        limit = FALL * INTERVAL + TIMEOUT + INTERVAL + SLACK
        with WorkerLines(cluster, 3) as workers:
            b.stop()
            stopped = time.monotonic()
            first_down: dict[int, float] = {}
            while len(first_down) < 3:
                assert time.monotonic() - stopped < limit, first_down
                for pid, body in workers.ready().items():
                    assert body["checks"]["cdn_health"] == "ok", body  # type: ignore[index]
                    if body["cdn_hosts"][b.base_url] == "down":  # type: ignore[index]
                        first_down.setdefault(pid, time.monotonic() - stopped)
            print(f"stopped host down on every worker after {max(first_down.values()):.2f} s")
            for _ in range(20):
                response = httpx.get(f"{cluster[1].url}/", params={"video": VIDEO}, headers=CLOSE)
                assert urlsplit(response.headers["location"]).netloc not in (b.host, garbage.host)
            # Past the point where a frozen prober's view is called stale, still current.
            watch_until = stopped + 2 * INTERVAL + TIMEOUT + 1.0 + INTERVAL
            while time.monotonic() < watch_until:
                for body in workers.ready().values():
                    assert body["status"] == "ok", body
                    assert body["cdn_hosts"][garbage.base_url] == "down"  # type: ignore[index]
                time.sleep(0.1)
        health = httpx.get(f"{cluster[0].url}/cdn/health", headers=ADMIN).json()
        states = {host["host"]: host for host in health}
        assert states[garbage.base_url]["last_error"] == (
            "not an HTTP/1.x status line: b'HTTP/1.1 \\xb200 OK'"
        )
        assert states[b.base_url]["last_error"].startswith("connection failed")
        assert states[a.base_url]["healthy"] is True
    finally:
        garbage.stop()
