"""`/metrics` and `/stats` on the real server: two workers, and two instances sharing Redis."""

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.proxy import CuttableProxy
from tests.support.servers import behind_redis_proxy, key_prefix, reset_config, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"


class Instance:
    def __init__(self, process: ServerProcess, metrics_dir: Path) -> None:
        self.process = process
        self.url = process.url
        self.metrics_dir = metrics_dir

    def worker_counts(self) -> dict[int, int]:
        """Redirects each worker (dead or alive) last published in its own file."""
        counts = {}
        for path in self.metrics_dir.glob("worker-*.json"):
            data = json.loads(path.read_text())
            counts[data["pid"]] = sum(row[-1] for row in data["redirects"])
        return counts


@pytest.fixture(scope="module")
def instances(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Instance]]:
    """Two instances sharing PostgreSQL and Redis (one stats key): two workers, then one."""
    with contextlib.ExitStack() as stack:
        key = stack.enter_context(key_prefix(redis_url))
        started = []
        for workers in (2, 1):
            metrics_dir = tmp_path_factory.mktemp("metrics")
            process = stack.enter_context(
                running_server(
                    database_url, redis_url, workers=workers, prefix=key, metrics_dir=metrics_dir
                )
            )
            started.append(Instance(process, metrics_dir))
        reset_config(started[0].url)
        yield started


async def drive(
    url: str, count: int, concurrency: int = 16, video: Callable[[int], str] = lambda _: VIDEO
) -> None:
    """`count` redirects (the n-th for `video(n)`), each on a connection of its own (so either
    worker may take it)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        queue = iter(range(count))

        async def one_by_one() -> None:
            for number in queue:
                response = await client.get("/", params={"video": video(number)})
                assert response.status_code == 301

        await asyncio.gather(*(one_by_one() for _ in range(concurrency)))


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    response = httpx.get(f"{url}/metrics", headers={"Connection": "close"})
    assert response.status_code == 200
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def redirects_total(url: str) -> float:
    return sum(scrape(url).get("balancer_redirects_total", {}).values())


def eventually(check: Any, expected: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    value = check()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = check()
    assert value == expected
    return value


def stats(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/stats", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_metrics_cover_both_workers_whichever_answers(instances: list[Instance]) -> None:
    instance = instances[0]
    sent = 0
    # Until both workers have served some: the kernel, not the test, spreads connections.
    while sent < 6000 and not (
        len(instance.worker_counts()) == 2 and all(instance.worker_counts().values())
    ):
        asyncio.run(drive(instance.url, 200))
        sent += 200
        time.sleep(1.2)

    eventually(lambda: redirects_total(instance.url), sent)
    # Twenty scrapes on connections of their own land on either worker: all say the same.
    totals = {redirects_total(instance.url) for _ in range(20)}
    each = instance.worker_counts()

    assert totals == {sent}
    assert len(each) == 2
    assert sum(each.values()) == sent
    assert all(0 < count < sent for count in each.values())
    workers = scrape(instance.url)["process_resident_memory_bytes"]
    assert {dict(labels)["worker"] for labels in workers} == {str(pid) for pid in each}


def test_a_killed_workers_counts_stay_in_the_total(instances: list[Instance]) -> None:
    instance = instances[0]
    before = eventually(
        lambda: redirects_total(instance.url), sum(instance.worker_counts().values())
    )
    victim = max(instance.worker_counts(), key=lambda pid: instance.worker_counts()[pid])

    os.kill(victim, signal.SIGKILL)
    # The supervisor starts a replacement, which publishes a file of its own.
    eventually(lambda: len(instance.worker_counts()), 3, timeout=30)
    after_death = redirects_total(instance.url)
    asyncio.run(drive(instance.url, 100))

    assert after_death == before
    eventually(lambda: redirects_total(instance.url), before + 100)
    live = {dict(labels)["worker"] for labels in scrape(instance.url)["process_cpu_seconds_total"]}
    assert str(victim) not in live
    assert len(live) == 2
    assert scrape(instance.url)["balancer_workers"][()] == 2


def test_stats_add_up_every_instance_sharing_redis(instances: list[Instance]) -> None:
    first, second = instances
    # A reset counts whatever a worker flushes after it: up to a second of earlier traffic.
    time.sleep(1.5)
    reset = httpx.post(f"{first.url}/stats/reset", headers=ADMIN)
    assert reset.status_code == 204

    asyncio.run(drive(first.url, 300))
    asyncio.run(drive(second.url, 200))

    body = eventually(lambda: stats(second.url)["total"], 500)
    seen_from_first = stats(first.url)
    assert body == 500
    assert seen_from_first["scope"] == "cluster"
    assert seen_from_first["total"] == 500
    # Exact per leased block; each worker's partly used blocks leave it at most one off.
    assert sum(seen_from_first["by_target"].values()) == 500
    assert abs(seen_from_first["by_target"]["origin"] - 50) <= 4
    assert seen_from_first["by_server"] == {"s1": 500}
    # Each instance's /metrics covers its own workers only.
    assert redirects_total(second.url) == 200


def test_a_real_server_shows_in_the_clusters_stats_after_5000_junk_servers_and_a_reset(
    instances: list[Instance],
) -> None:
    first, second = instances
    time.sleep(1.5)  # what earlier tests sent is flushed before the reset
    assert httpx.post(f"{first.url}/stats/reset", headers=ADMIN).status_code == 204

    asyncio.run(drive(first.url, 5000, video=lambda n: f"http://junk{n}.origin-cluster/v.m3u8"))
    asyncio.run(drive(second.url, 40, video=lambda _: "http://s9.origin-cluster/v.m3u8"))
    eventually(lambda: stats(first.url)["total"], 5040)
    flooded = stats(second.url)
    assert httpx.post(f"{second.url}/stats/reset", headers=ADMIN).status_code == 204
    asyncio.run(drive(first.url, 3, video=lambda _: "http://s7.origin-cluster/v.m3u8"))
    eventually(lambda: stats(second.url)["total"], 3)
    again = stats(first.url)

    assert len(flooded["by_server"]) <= 2000
    error = flooded["by_server_error"]
    assert error < 10  # each junk label was seen once: what was dropped weighs little
    assert 40 <= flooded["by_server"]["s9"] <= 40 + error
    assert next(iter(flooded["by_server"])) == "s9"
    assert (again["by_server"], again["by_server_error"]) == ({"s7": 3}, 0)


METRICS_TOKEN = "Hq3vNc8RtZx5LmW2pYb7KdF4sJg9TeU6"


@pytest.fixture
async def behind_proxy(
    database_url: str, redis_url: str, sequence_key: str
) -> AsyncIterator[tuple[ServerProcess, CuttableProxy]]:
    """Two workers whose Redis is behind a proxy the test can cut; /metrics needs a token."""
    async with behind_redis_proxy(
        database_url, redis_url, sequence_key, workers=2, metrics_token=METRICS_TOKEN
    ) as running:
        yield running


async def test_with_redis_down_stats_cover_both_workers_of_this_instance_and_say_so(
    behind_proxy: tuple[ServerProcess, CuttableProxy],
) -> None:
    process, redis = behind_proxy
    async with httpx.AsyncClient(base_url=process.url, headers={"Connection": "close"}) as http:
        await drive(process.url, 300)
        await redis.cut()
        await drive(process.url, 100)
        bodies = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = await http.get("/stats", headers=ADMIN)
            assert response.status_code == 200, response.text
            bodies.append(response.json())
            if len(bodies) >= 10 and all(body["total"] == 400 for body in bodies[-10:]):
                break
            await asyncio.sleep(0.1)
        reset = await http.post("/stats/reset", headers=ADMIN)
        await redis.restore()
        back = None
        for _ in range(100):
            back = (await http.get("/stats", headers=ADMIN)).json()
            if back["scope"] == "cluster" and back["total"] == 400:
                break
            await asyncio.sleep(0.1)

    # Ten answers in a row, from either worker, count both workers' redirects.
    assert [body["total"] for body in bodies[-10:]] == [400] * 10
    assert {body["scope"] for body in bodies[-10:]} == {"instance"}
    assert "this instance only" in bodies[-1]["note"]
    assert reset.status_code == 503
    assert back is not None
    assert (back["scope"], back["total"]) == ("cluster", 400)  # the kept counts arrive


async def test_metrics_need_the_metrics_token_when_one_is_set(
    behind_proxy: tuple[ServerProcess, CuttableProxy],
) -> None:
    process, _ = behind_proxy
    async with httpx.AsyncClient(base_url=process.url) as http:
        missing = await http.get("/metrics")
        admin = await http.get("/metrics", headers=ADMIN)
        right = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert admin.status_code == 403
    assert right.status_code == 200
    assert "balancer_config_version" in right.text
