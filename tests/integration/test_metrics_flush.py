"""A worker's flusher against real Redis and a real directory."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.application.cdn_health import CdnHealthView
from app.application.metrics import ServerCounts, Tally
from app.application.snapshot import ConfigSnapshot
from app.domain.ratelimit import ClientLimiter
from app.domain.router import Redirect
from app.infrastructure.backend_errors import BackendErrors, backend_errors
from app.infrastructure.loop_watch import LoopWatch
from app.infrastructure.metrics import FileFigures, MetricsFlusher
from app.infrastructure.redis.sequence import RedisLeasedSequence
from app.infrastructure.redis.stats import RATE_WINDOW_SECONDS, RedisStats
from tests.support.fakes import version
from tests.support.proxy import CuttableProxy

CDN = "http://cdn.example.com"
REDIRECT = Redirect("cdn", f"{CDN}/s1/v.m3u8", 301, "s1", 1, "default", CDN)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def flusher_for(
    redis: Redis,
    key: str,
    directory: Path,
    tally: Tally,
    tick: float | None = None,
    *,
    cdn_health: CdnHealthView | None = None,
    watch: LoopWatch | None = None,
) -> MetricsFlusher:
    snapshot = ConfigSnapshot()
    snapshot.offer(version(3))
    return MetricsFlusher(
        tally,
        snapshot,
        RedisLeasedSequence(redis, key=key, block=10, timeout=0.3, period=lambda _: 10),
        ClientLimiter(time.monotonic),
        BackendErrors(),
        cdn_health or CdnHealthView(),
        FileFigures(directory),
        RedisStats(redis, key=f"{key}.stats", timeout=0.3),
        watch or LoopWatch(),
        tick=tick,
    )


@pytest.mark.parametrize("tick", [0.01, None], ids=["counting", "off"])
async def test_a_running_flusher_folds_the_appended_redirects_every_tick(
    redis: Redis, sequence_key: str, tmp_path: Path, tick: float | None
) -> None:
    tally = Tally()
    flusher = flusher_for(redis, sequence_key, tmp_path, tally, tick)
    await flusher.start()
    try:
        for round_ in range(1, 6):  # within the first second: no periodic flush yet
            tally.sample = False
            for _ in range(50):
                tally.redirect(REDIRECT)
            await asyncio.sleep(0.15)  # an idle worker ticks every 0.1 s
            assert len(tally.pending) == (0 if tick else 50 * round_)
            assert tally.sample is bool(tick)
    finally:
        await flusher.stop()
    assert tally.redirects == {("cdn", CDN, 301, "default"): 250}


async def test_each_flush_adds_only_what_was_counted_since_the_last_one(
    redis: Redis, sequence_key: str, tmp_path: Path
) -> None:
    tally = Tally()
    cdn_health = CdnHealthView()
    flusher = flusher_for(redis, sequence_key, tmp_path, tally, cdn_health=cdn_health)
    store = RedisStats(redis, key=f"{sequence_key}.stats", timeout=0.3)
    cdn_health.round_failures = 2  # this worker is the prober, and two rounds failed
    for _ in range(5):
        tally.redirect(REDIRECT)
    await flusher.flush()
    await flusher.flush()  # nothing new: nothing added
    for _ in range(2):
        tally.redirect(REDIRECT)
    tally.reject("rate-limited")
    await flusher.flush()

    counts = await store.read()
    (written,) = FileFigures(tmp_path).read_all()

    assert counts.fields == {
        "total": 7,
        "target:cdn": 7,
        "region:default": 7,
        "cdn_host:cdn.example.com": 7,
        "rejected:rate-limited": 1,
    }
    assert (counts.servers, counts.server_error) == ({"s1": 7}, 0)
    assert written.total == 7
    assert written.servers == {"s1": 7}
    assert written.config_version == 3
    assert written.cdn_up == {"cdn.example.com": True}
    assert written.probe_round_failures == 2


async def test_the_rate_is_what_was_flushed_over_the_last_seconds(
    redis: Redis, sequence_key: str
) -> None:
    store = RedisStats(redis, key=f"{sequence_key}.stats", timeout=0.3)
    now = 1_800_000_000.5
    for age, count in ((1, 40), (2, 60), (RATE_WINDOW_SECONDS + 1, 1000)):
        store.clock = float(now - age).__float__
        await store.add({"total": count})
    store.clock = lambda: now
    await store.add({"total": 7})  # the current second is not complete: not in the rate

    counts = await store.read()

    assert counts.fields["total"] == 1107
    assert counts.requests_per_second == 100 / RATE_WINDOW_SECONDS


async def test_counts_a_flush_could_not_send_go_with_the_next_one(
    redis_url: str, sequence_key: str, tmp_path: Path
) -> None:
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    through = Redis.from_url(proxy.proxied(redis_url), socket_timeout=0.3)
    direct = Redis.from_url(redis_url)
    tally = Tally()
    flusher = flusher_for(through, sequence_key, tmp_path, tally)
    errors_before = _redis_errors()
    store = RedisStats(direct, key=f"{sequence_key}.stats", timeout=0.3)
    try:
        tally.redirect(REDIRECT)
        await flusher.flush()
        await proxy.cut()
        for _ in range(3):
            tally.redirect(REDIRECT)
        await flusher.flush()
        during = (await store.read()).fields["total"]
        await proxy.restore()
        await flusher.flush()
        stored = await store.read()
        after, servers = stored.fields["total"], stored.servers
    finally:
        await through.aclose()
        await direct.aclose()
        await proxy.close()

    assert (during, after) == (1, 4)
    assert servers == {"s1": 4}  # the servers counted while Redis was away went too
    assert _redis_errors() > errors_before


def _redis_errors() -> int:
    return sum(count for (backend, _), count in backend_errors.counts.items() if backend == "redis")


async def test_a_directory_that_cannot_be_written_does_not_stop_the_redis_flush(
    redis: Redis, sequence_key: str, tmp_path: Path
) -> None:
    tally = Tally()
    flusher = flusher_for(redis, sequence_key, tmp_path / "gone", tally)
    tally.redirect(REDIRECT)

    await flusher.flush()

    store = RedisStats(redis, key=f"{sequence_key}.stats", timeout=0.3)
    assert (await store.read()).fields["total"] == 1


def summary(counts: dict[str, int], error: int = 0) -> ServerCounts:
    """A worker's summary as the flusher sends it."""
    servers = ServerCounts()
    servers.counts.update(counts)
    servers.inherited = error
    return servers


async def test_the_store_keeps_the_heaviest_servers_within_its_stated_error(
    redis: Redis, sequence_key: str
) -> None:
    store = RedisStats(redis, key=f"{sequence_key}.stats", timeout=0.3, capacity=3)
    sent = [
        summary({"s1": 50, "s2": 40, "s3": 30}),
        summary({"j1": 1, "j2": 1}),  # lighter than every kept one: dropped at once
        summary({"s4": 35, "j3": 2}, error=1),  # s4 takes s3's place
        summary({"s3": 3}),
    ]
    for servers in sent:
        await store.add({"total": sum(servers.counts.values())}, servers)

    counts = await store.read()

    assert list(counts.servers) == ["s1", "s2", "s4"]  # heaviest first
    assert counts.servers["s1"] == 50
    # dropped: j1, j2 (1 each), j3 (1 + 2), s3 (30, then 30 + 3): floor 33, plus s4's sender's 1
    assert counts.server_error == 33 + 1
    truth = {"s1": 50, "s2": 40, "s3": 33, "s4": 35, "j1": 1, "j2": 1, "j3": 2}
    for server, true in truth.items():
        listed = counts.servers.get(server)
        assert (listed is None and true <= counts.server_error) or (
            listed is not None and abs(listed - true) <= counts.server_error
        )


async def test_a_reset_forgets_the_servers_and_their_error(redis: Redis, sequence_key: str) -> None:
    store = RedisStats(redis, key=f"{sequence_key}.stats", timeout=0.3, capacity=2)
    await store.add({"total": 6}, summary({"j1": 1, "j2": 2, "j3": 3}, error=4))
    before = await store.read()

    await store.reset()
    await store.add({"total": 1}, summary({"s9": 1}))
    after = await store.read()

    assert (len(before.servers), before.server_error) == (2, 1 + 4)
    assert (after.servers, after.server_error) == ({"s9": 1}, 0)
