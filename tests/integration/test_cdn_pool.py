"""CDN pools and health checks in process, on real PostgreSQL and Redis, probing real
fake-CDN HTTP servers on loopback ports that the tests stop and start."""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from itertools import groupby
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from app.application.cdn_health import CdnHealthView, GetCdnHealth, RefreshCdnHealth
from app.application.snapshot import ConfigSnapshot
from app.domain.cdn_health import HealthSettings, HostState
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.pool import CdnPool
from app.domain.split import Split
from app.infrastructure.http.probe import HttpProbe
from app.infrastructure.redis.cdn_health import RedisHealthBoard
from loadtest.fake_cdn import FakeCdn
from tests.support.app import ADMIN, VIDEO

# Fast checks so the timings can be watched in a test: out within fall x interval + timeout.
INTERVAL, TIMEOUT, FALL, RISE = 0.4, 0.2, 2, 2
FAST = {
    "enabled": True,
    "interval_seconds": INTERVAL,
    "timeout_seconds": TIMEOUT,
    "fall": FALL,
    "rise": RISE,
}
# Refresh period of the workers' views, plus scheduling slack on a busy 2-core machine.
SLACK = 0.25 + 0.5
# How long a stopped host may take to leave: `fall` failed checks (the last timing out), one
# interval out of phase at worst, and SLACK.
DOWN_WITHIN = FALL * INTERVAL + TIMEOUT + INTERVAL + SLACK


@pytest.fixture
def cdns() -> Iterator[list[FakeCdn]]:
    servers = [FakeCdn().start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


async def patch(client: httpx.AsyncClient, **values: object) -> httpx.Response:
    response = await client.patch("/config", json=values, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response


async def wait_until(check: Callable[[], Awaitable[bool]], limit: float) -> float:
    """Seconds until `check` holds; fails after `limit`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < limit, f"not within {limit:.2f} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def until_refused(client: httpx.AsyncClient) -> None:
    """Until redirects are refused (503): what they get once every host they may use is out."""

    async def refused() -> bool:
        return (await client.get("/", params={"video": VIDEO})).status_code == 503

    await wait_until(refused, DOWN_WITHIN)


async def cdn_bases(client: httpx.AsyncClient, count: int) -> list[str]:
    found = []
    for _ in range(count):
        response = await client.get("/", params={"video": VIDEO})
        assert response.status_code == 301
        parts = urlsplit(response.headers["location"])
        found.append(f"{parts.scheme}://{parts.netloc}")
    return found


async def test_one_worker_spreads_cdn_redirects_exactly_by_weight(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    a, b, _ = cdns
    await patch(
        client,
        cdn_weight=1,
        origin_weight=0,
        cdn_hosts=[{"host": a.host, "weight": 3}, {"host": b.host, "weight": 1}],
        cdn_health=FAST,
    )
    picked = await cdn_bases(client, 400)
    assert Counter(picked) == {a.base_url: 300, b.base_url: 100}
    assert max(len(list(run)) for _, run in groupby(picked)) == 3


async def test_a_stopped_host_leaves_the_rotation_in_time_and_comes_back(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    a, b, c = cdns
    await patch(
        client,
        cdn_weight=1,
        origin_weight=0,
        cdn_hosts=[{"host": cdn.host} for cdn in cdns],
        cdn_health=FAST,
    )
    await asyncio.sleep(2 * INTERVAL)  # a few rounds while all are up
    b.stop()

    async def b_out() -> bool:
        return b.base_url not in await cdn_bases(client, 3)

    took = await wait_until(b_out, DOWN_WITHIN)
    assert took >= (FALL - 1) * INTERVAL  # not at the first failure: `fall` counts
    assert set(await cdn_bases(client, 30)) == {a.base_url, c.base_url}
    health = (await client.get("/cdn/health", headers=ADMIN)).json()
    down = next(host for host in health if host["host"] == b.base_url)
    assert down["healthy"] is False
    assert down["consecutive_failures"] >= FALL
    assert down["last_error"].startswith("connection failed")
    ready = (await client.get("/ready")).json()
    assert ready["cdn_hosts"][b.base_url] == "down"

    b.start()

    async def b_back() -> bool:
        return b.base_url in await cdn_bases(client, 3)

    await wait_until(b_back, RISE * INTERVAL + INTERVAL + SLACK)


async def test_cdn_requests_go_to_the_origin_when_every_host_is_stopped(
    client: httpx.AsyncClient, cdns: list[FakeCdn], capsys: pytest.CaptureFixture[str]
) -> None:
    await patch(
        client,
        cdn_weight=1,
        origin_weight=0,
        cdn_hosts=[{"host": cdn.host} for cdn in cdns[:2]],
        cdn_health=FAST,
    )
    for cdn in cdns[:2]:
        cdn.stop()

    async def at_origin() -> bool:
        response = await client.get("/", params={"video": VIDEO})
        return bool(response.headers["location"] == VIDEO)

    await wait_until(at_origin, DOWN_WITHIN)
    assert (await client.get("/ready")).json()["cdn_fallbacks"]["origin"] >= 1
    logged = capsys.readouterr().err
    assert logged.count("cdn_pool_unhealthy") == 1
    assert logged.count("cdn_down") == 2


async def test_without_fallback_cdn_requests_get_503_with_retry_after(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    only = cdns[0]
    await patch(
        client,
        cdn_weight=1,
        origin_weight=0,
        cdn_hosts=[{"host": only.host}],
        cdn_health=FAST,
        origin_fallback=False,
    )
    only.stop()
    await until_refused(client)
    response = await client.get("/", params={"video": VIDEO})
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "no-healthy-cdn"
    assert "location" not in response.headers
    assert int(response.headers["retry-after"]) >= 1  # ceil(rise x interval), at least 1 s
    balance = await client.post("/balance", json={"video": VIDEO})
    assert balance.status_code == 503
    assert balance.json()["code"] == "no-healthy-cdn"
    assert int(balance.headers["retry-after"]) >= 1


async def test_a_down_server_goes_to_the_pool_and_gets_503_when_the_pool_is_down(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    only = cdns[0]
    await patch(
        client,
        cdn_weight=0,
        origin_weight=1,
        cdn_hosts=[{"host": only.host}],
        cdn_health=FAST,
        down_servers=["s1"],
    )
    assert await cdn_bases(client, 5) == [only.base_url] * 5
    other = await client.get("/", params={"video": "http://s2.origin-cluster/v.m3u8"})
    assert other.headers["location"] == "http://s2.origin-cluster/v.m3u8"
    only.stop()
    await until_refused(client)
    response = await client.get("/", params={"video": VIDEO})
    assert response.json()["code"] == "no-healthy-target"
    assert "retry-after" in response.headers


async def test_cdn_host_and_cdn_hosts_read_back_consistently(
    client: httpx.AsyncClient,
) -> None:
    pool = [{"host": "cdn-a.example.com", "weight": 3}, {"host": "cdn-b.example.com", "weight": 1}]
    body = (await patch(client, cdn_hosts=pool)).json()
    assert body["cdn_hosts"] == pool
    assert body["cdn_host"] == "cdn-a.example.com"
    body = (await patch(client, cdn_host="https://cdn-c.example.com:8443")).json()
    assert body["cdn_hosts"] == [{"host": "https://cdn-c.example.com:8443", "weight": 1}]
    rules = {"s9": {"cdn_weight": 1, "origin_weight": 0, "cdn_hosts": pool}}
    body = (await patch(client, server_rules=rules)).json()
    assert body["server_rules"] == rules
    assert body["cdn_health"]["enabled"] is False  # rows older than health checks: off
    current = await client.get("/config")
    assert current.json()["server_rules"] == rules


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"cdn_hosts": []}, "cdn_hosts"),
        (
            {"cdn_hosts": [{"host": "a.example.com"}, {"host": "A.example.com"}]},
            "cdn_hosts[1].host",
        ),
        ({"cdn_hosts": [{"host": "a.example.com", "weight": 0}]}, "cdn_hosts[0].weight"),
        ({"cdn_hosts": [{"host": "a.example.com/video"}]}, "cdn_hosts[0].host"),
        ({"cdn_hosts": [{"host": f"c{i}.example.com"} for i in range(65)]}, "cdn_hosts"),
        ({"cdn_health": {"interval_seconds": 0}}, "cdn_health.interval_seconds"),
        ({"cdn_health": {"timeout_seconds": 2}}, "cdn_health.timeout_seconds"),
        ({"cdn_health": {"fall": 0}}, "cdn_health.fall"),
        ({"down_servers": ["s 1"]}, "down_servers"),
        ({"cdn_host": "http://169.254.169.254"}, "cdn_host"),
        (
            {"cdn_hosts": [{"host": "cdn-a.example.com"}, {"host": "169.254.169.254:8080"}]},
            "cdn_hosts[1].host",
        ),
        (
            {
                "server_rules": {
                    "s9": {
                        "cdn_weight": 1,
                        "origin_weight": 0,
                        "cdn_hosts": [{"host": "https://169.254.0.1"}],
                    }
                }
            },
            "server_rules.s9.cdn_hosts[0].host",
        ),
        (
            {"server_rules": {"s9": {"cdn_weight": 1, "origin_weight": 0, "cdn_hosts": []}}},
            "server_rules.s9.cdn_hosts",
        ),
    ],
)
async def test_invalid_pool_or_health_settings_are_422_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, values: dict[str, object], field: str
) -> None:
    response = await client.patch("/config", json=values, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field
    assert (await client.get("/config")).json()["version"] == 1


async def test_cdn_health_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/cdn/health")).status_code == 401
    body = (await client.get("/cdn/health", headers=ADMIN)).json()
    assert body == [
        {
            "host": "http://cdn.example.com",
            "healthy": True,
            "since": None,
            "last_check": None,
            "last_error": None,
            "consecutive_failures": 0,
            "configured_weight": 1,
            "effective_weight": 1.0,
            "reported": None,
            "load_error": None,
        }
    ]


async def test_probe_is_healthy_on_2xx_and_names_refusals_timeouts_and_bad_statuses() -> None:
    probe = HttpProbe()
    up = FakeCdn().start()
    hung = FakeCdn(hang=True).start()
    stopped = FakeCdn()
    try:
        assert await probe(f"{up.base_url}/health", method="GET", timeout=1) is None
        assert up.hits == 1
        refused = await probe(f"{stopped.base_url}/", method="HEAD", timeout=1)
        assert refused is not None
        assert refused.startswith("connection failed")
        started = time.monotonic()
        assert await probe(f"{hung.base_url}/", method="HEAD", timeout=0.3) == (
            "no answer within 0.3 s"
        )
        assert time.monotonic() - started < 1
    finally:
        up.stop()
        hung.stop()


async def test_probe_reports_the_status_of_a_5xx_answer() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await HttpProbe()(f"http://127.0.0.1:{port}/", method="GET", timeout=1) == (
            "status 503"
        )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def board(redis: Redis, key: str, me: str, lease: float = 0.6) -> RedisHealthBoard:
    return RedisHealthBoard(redis, key=key, lease_seconds=lease, timeout=0.5, me=me)


async def test_one_prober_holds_the_lease_and_another_takes_over_when_it_dies(
    redis: Redis, sequence_key: str
) -> None:
    key = f"{sequence_key}.cdn-health"
    first, second = board(redis, key, "first"), board(redis, key, "second")
    assert await first.hold_lease() is True
    assert await second.hold_lease() is False
    assert await first.hold_lease() is True  # renewed by its holder
    assert await first.publish({"http://a": HostState()}) is True
    assert await second.publish({"http://a": HostState(healthy=False)}) is False
    # `first` dies: it stops renewing, and the lease runs out
    took = await wait_until(second.hold_lease, 2.0)
    assert 0.2 < took <= 0.6 + 0.2
    assert await first.hold_lease() is False
    assert (await second.read()).hosts == {"http://a": HostState()}


async def test_a_worker_keeps_the_last_state_and_reports_stale_when_redis_is_down(
    redis: Redis, sequence_key: str
) -> None:
    key = f"{sequence_key}.cdn-health"
    a, b = "http://cdn-a.example.com", "http://cdn-b.example.com"
    snapshot = ConfigSnapshot()
    config = BalancerConfig(
        cdn_host="x",
        split=Split(1, 0),
        cdn_hosts=CdnPool.of([(a, 1), (b, 1)]),
        cdn_health=HealthSettings(),
    )
    snapshot.offer(ConfigVersion(1, config, datetime.now(UTC)))
    prober = board(redis, key, "prober", lease=5)
    assert await prober.hold_lease()
    await prober.publish({a: HostState(healthy=False), b: HostState()})
    view = CdnHealthView()
    await RefreshCdnHealth(snapshot, prober, view)()
    assert snapshot.down_hosts == {a}

    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        await RefreshCdnHealth(snapshot, board(unreachable, key, "w"), view)()
    finally:
        await unreachable.aclose()
    assert snapshot.down_hosts == {a}  # neither all down nor all up: the last known state
    report = await GetCdnHealth(snapshot, view)()
    assert report.stale is not None
    assert report.stale.startswith("health board unreadable")
