"""Every query of the Grafana dashboard, evaluated by a real Prometheus that scrapes real
servers with the repository's scrape config, agrees with the traffic the test sent.

Two topologies: one instance of 2 workers (one target whose /metrics covers both) with a
Prometheus of the test's, and `make stack` (two instances behind nginx) with the Prometheus
it starts itself, which scrapes each instance, never nginx.
The test sends known traffic: redirects to a CDN pool with one healthy and one dead host,
origin redirects, fallbacks (a server whose own pool is dead), rejections of three codes and
429s from a client with a limit; it changes the config once, then cuts Redis until a worker
runs degraded. Each panel's PromQL, with Grafana's $__rate_interval set to the measured
window, must return data and figures that match what the clients saw.
"""

import asyncio
import secrets
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from loadtest.fake_cdn import FakeCdn
from loadtest.stack import Stack, find_nginx
from loadtest.support import ServerProcess, forget_keys, free_port, redis_keys
from tests.support.app import ADMIN_TOKEN
from tests.support.grafana import Query, annotation_queries, panel_queries, panels
from tests.support.prometheus import PrometheusApi, PrometheusServer, duration
from tests.support.proxy import CuttableProxy
from tests.support.servers import fresh_prefix, reset_config
from tests.support.tools import can_bind, require, require_tool

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
METRICS_TOKEN = secrets.token_urlsafe(32)
INTERVAL = 1.0  # Prometheus's scrape interval here
FLUSH = 1.2  # workers write their figures for /metrics once a second
# Grafana's $__rate_interval for range queries: max(4 x scrape interval, step + scrape).
RATE_INTERVAL = f"{round(4 * INTERVAL)}s"
LIMITED = "127.0.0.2"  # loopback on Linux; the client with a limit of its own
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
FALLBACK_VIDEO = "http://s9.origin-cluster/video/7/fallback.m3u8"  # s9's own pool is dead
BAD = {
    "missing-video": "",
    "host-not-allowed": "http://s1.origin-cluster.evil.example/v.m3u8",
    "invalid-path": "http://s1.origin-cluster/a/%2e%2e/b.m3u8",
}
HEALTH = {
    "enabled": True,
    "interval_seconds": 0.5,
    "timeout_seconds": 0.25,
    "fall": 2,
    "rise": 2,
    "load": "utilization",
}
# What the live CDN host reports (ORCA): its effective weight is 1 x (1 - 0.3).
UTILIZATION = 0.3
CDN_ANSWER = (
    b"HTTP/1.1 200 OK\r\nendpoint-load-metrics: TEXT cpu_utilization=0.3\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


@dataclass
class Traffic:
    """What the clients saw."""

    redirects: Counter[str] = field(default_factory=Counter)  # by target
    cdn_hosts: Counter[str] = field(default_factory=Counter)
    fallback: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by code
    latencies: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.redirects.values())


@dataclass
class Run:
    topology: str
    prometheus: PrometheusApi
    instances: list[str]
    cdn_up: str
    cdn_down: str
    traffic: Traffic
    start: float  # the measured traffic was sent after this
    end: float  # the measured window is [end - window, end], on the first target's scrapes
    window: float
    changed_at: float  # the one config change inside the window
    version_before: int
    version: int
    cut_at: float = 0.0  # Redis cut
    degraded_at: float = 0.0  # Prometheus saw a degraded worker
    errors_at: float = 0.0  # a few scrapes later, Redis still cut

    def query(self, query: Query, at: float, window: float) -> list[dict[str, Any]]:
        return self.prometheus.query(query.rendered(duration(window)), at)

    def agrees(self, rate: float, count: float, at: float | None = None) -> bool:
        """`rate` is what rate() over the window makes of `count` requests sent in it."""
        low, high = self.prometheus.rate_bounds(at or self.end, self.window)
        return count * low * 0.99 - 1e-9 <= rate <= count * high * 1.01 + 1e-9


async def send(
    client: httpx.AsyncClient, video: str, traffic: Traffic, *, timed: bool = False
) -> None:
    started = time.perf_counter()
    response = await client.get("/", params={"video": video})
    elapsed = time.perf_counter() - started
    if response.status_code in {301, 302, 307, 308}:
        host = urlsplit(response.headers["location"]).netloc
        if host.endswith(".origin-cluster"):
            traffic.redirects["origin"] += 1
            traffic.fallback += host.startswith("s9.")
        else:
            traffic.redirects["cdn"] += 1
            traffic.cdn_hosts[host] += 1
        if timed:
            traffic.latencies.append(elapsed)
        return
    assert 400 <= response.status_code < 500, response.text
    traffic.rejected[response.json()["code"]] += 1


async def drive(url: str, traffic: Traffic, scale: int, *, timed: bool = False) -> None:
    """`scale` x (50 redirects for s1, 2 for s9, 3 + 2 + 1 rejections) from 127.0.0.1, then
    3 x `scale` requests from the limited client (most of them refused with 429)."""
    jobs = [VIDEO] * 50 + [FALLBACK_VIDEO] * 2
    jobs += [BAD["missing-video"]] * 3 + [BAD["host-not-allowed"]] * 2 + [BAD["invalid-path"]]
    jobs = jobs * scale
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        queue = iter(jobs)

        async def worker() -> None:
            for video in queue:
                await send(client, video, traffic, timed=timed)

        await asyncio.gather(*(worker() for _ in range(8)))
    transport = httpx.AsyncHTTPTransport(local_address=LIMITED)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=10) as client:
        for _ in range(3 * scale):
            await send(client, VIDEO, traffic)


def patch(url: str, **values: object) -> int:
    response = httpx.patch(f"{url}/config", json=values, headers=ADMIN)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def configure(url: str, cdn: str, dead: str) -> int:
    """The baseline, a limit for LIMITED, a pool of a live and a dead CDN host, and a
    server (s9) whose own pool is only the dead host; the version that makes."""
    reset_config(url)
    httpx.delete(f"{url}/limits/{LIMITED}", headers=ADMIN)
    response = httpx.post(
        f"{url}/limits",
        json={"client_id": LIMITED, "capacity": 5, "refill_per_second": 1},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return patch(
        url,
        cdn_hosts=[{"host": cdn}, {"host": dead}],
        cdn_health=HEALTH,
        cdn_weight=9,
        origin_weight=1,
        server_rules={"s9": {"cdn_weight": 1, "origin_weight": 0, "cdn_hosts": [{"host": dead}]}},
    )


def unconfigure(url: str) -> None:
    reset_config(url)
    httpx.delete(f"{url}/limits/{LIMITED}", headers=ADMIN)


def workers_settled(urls: list[str], workers: int, version: int, dead: str) -> bool:
    seen = {}
    for url in urls:
        for _ in range(8):
            body = httpx.get(f"{url}/ready", headers={"Connection": "close"}).json()
            seen[body["worker"]] = body
    return len(seen) >= workers and all(
        body["config_version"] >= version and body["cdn_hosts"].get(dead) == "down"
        for body in seen.values()
    )


async def eventually(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module", params=["service", "stack"])
async def run(
    request: pytest.FixtureRequest,
    database_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Run]:
    prometheus_binary = require_tool("prometheus", install="apt-get install prometheus")
    require(can_bind(LIMITED), f"the local address {LIMITED}", "a Linux loopback")
    topology: str = request.param
    workdir: Path = tmp_path_factory.mktemp(f"dashboard-{topology}")
    key = fresh_prefix("balancer-dashboard")
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    settings = {
        **redis_keys(key),
        # Short leases, so a worker needs Redis soon after it is cut.
        "BALANCER_SEQUENCE_BLOCK": "20",
        # /metrics behind a token, as compose runs it when one is set: Prometheus sends it.
        "BALANCER_METRICS_TOKEN": METRICS_TOKEN,
        "BALANCER_DRAIN_SECONDS": "0",  # no load balancer to wait for when it stops
    }
    server: ServerProcess | Stack
    prometheus: PrometheusApi
    if topology == "service":
        server = ServerProcess(
            {
                **settings,
                "BALANCER_DATABASE_URL": database_url,
                "BALANCER_REDIS_URL": proxy.proxied(redis_url),
                "BALANCER_ADMIN_TOKEN": ADMIN_TOKEN,
            },
            workers=2,
        )
        front, instance_urls = server.url, [server.url]
        prometheus = PrometheusServer(
            prometheus_binary,
            workdir / "prometheus",
            [urlsplit(server.url).netloc],
            INTERVAL,
            METRICS_TOKEN,
        )
    else:
        nginx = require_tool("nginx", install="apt-get install nginx-light", locate=find_nginx)
        server = Stack(
            nginx=nginx,
            database_url=database_url,
            redis_url=proxy.proxied(redis_url),
            admin_token=ADMIN_TOKEN,
            workdir=workdir / "stack",
            port=free_port(),
            settings=settings,
            # make stack's own Prometheus: each instance scraped, never nginx.
            prometheus=prometheus_binary,
            prometheus_port=free_port(),
            scrape_interval=INTERVAL,
        )
        front, instance_urls = server.front_url, server.instance_urls
        assert server.prometheus_url is not None
        targets = [urlsplit(url).netloc for url in instance_urls]
        prometheus = PrometheusApi(server.prometheus_url, targets, INTERVAL)
    await asyncio.to_thread(server.start)  # the proxy runs on this loop meanwhile
    cdn = FakeCdn(answer=CDN_ANSWER).start()
    dead = f"127.0.0.1:{free_port()}"
    try:
        version = await asyncio.to_thread(configure, front, cdn.host, dead)
        await eventually(
            lambda: workers_settled(instance_urls, 2, version, f"http://{dead}"),
            "every worker on the new config, with the dead CDN host down",
        )
        if isinstance(prometheus, PrometheusServer):
            await asyncio.to_thread(prometheus.start)
        # Every series the panels read exists on every instance before the window opens, so
        # each counts from a sample taken before the measured traffic: sent to each instance
        # itself (through nginx, one instance could get all of a kind).
        for url in instance_urls:
            await drive(url, Traffic(), 1)
        await asyncio.sleep(FLUSH)
        await asyncio.to_thread(prometheus.wait_for_scrapes, 2)
        start = time.time()
        # Two scrapes: each target then has one between `start` and the traffic.
        await asyncio.to_thread(prometheus.wait_for_scrapes, 2)
        changed_at = time.time()
        changed = await asyncio.to_thread(patch, front, down_servers=["s42"])
        traffic = Traffic()
        await drive(front, traffic, 12, timed=True)
        await asyncio.sleep(FLUSH)
        await asyncio.to_thread(prometheus.wait_for_scrapes, 2)
        end, window = await asyncio.to_thread(prometheus.scraped_window, start)
        result = Run(
            topology=topology,
            prometheus=prometheus,
            instances=prometheus.targets,
            cdn_up=cdn.host,
            cdn_down=dead,
            traffic=traffic,
            start=start,
            end=end,
            window=window,
            changed_at=changed_at,
            version_before=version,
            version=changed,
        )
        result.cut_at = time.time()
        await proxy.cut()
        while True:
            await drive(front, Traffic(), 1)
            now = time.time()
            seen = await asyncio.to_thread(prometheus.query, "max(balancer_sequence_degraded)", now)
            if seen and seen[0]["value"][1] == "1":
                result.degraded_at = now
                break
            assert now - result.cut_at < 30, "no worker went degraded with Redis cut"
        # Counted errors show as a rate from the second scrape of their series on.
        for _ in range(3):
            await drive(front, Traffic(), 1)
            await asyncio.sleep(FLUSH)
            await asyncio.to_thread(prometheus.wait_for_scrapes, 1)
        result.errors_at = time.time()
        await proxy.restore()
        yield result
    finally:
        if isinstance(prometheus, PrometheusServer):
            prometheus.stop()
        await proxy.restore()
        await asyncio.to_thread(unconfigure, front)
        await asyncio.to_thread(server.stop)
        cdn.stop()
        await proxy.close()
        forget_keys(redis_url, key)


def by(label: str, results: list[dict[str, Any]]) -> dict[str, float]:
    return {series["metric"].get(label, ""): float(series["value"][1]) for series in results}


def single(results: list[dict[str, Any]]) -> float:
    (series,) = results
    return float(series["value"][1])


Figures = dict[str, list[dict[str, Any]]]  # refId -> the instant query's result


def check_config_version(run: Run, figures: Figures) -> None:
    assert single(figures["A"]) == run.version


def check_requests(run: Run, figures: Figures) -> None:
    assert run.agrees(single(figures["A"]), run.traffic.total)


def check_buckets(run: Run, figures: Figures) -> None:
    # Buckets of the limited client, in each worker that saw it; other clients may have one.
    assert 1 <= single(figures["A"]) <= 2 * 2


def check_degraded(run: Run, figures: Figures) -> None:
    assert by("instance", figures["A"]) == dict.fromkeys(run.instances, 0.0)


def check_by_target(run: Run, figures: Figures) -> None:
    rates = by("target", figures["A"])
    assert set(rates) == {"cdn", "origin"}
    for target in ("cdn", "origin"):
        assert run.agrees(rates[target], run.traffic.redirects[target]), (target, rates)
    assert run.traffic.fallback > 0
    assert run.agrees(single(figures["B"]), run.traffic.fallback)


def check_origin_share(run: Run, figures: Figures) -> None:
    assert single(figures["A"]) == pytest.approx(1 / (9 + 1))
    low, high = run.prometheus.rate_bounds(run.end, run.window)
    origin, cdn = run.traffic.redirects["origin"], run.traffic.redirects["cdn"]
    least = origin * low / (origin * low + cdn * high)
    most = origin * high / (origin * high + cdn * low)
    assert least - 0.001 <= single(figures["B"]) <= most + 0.001, (least, most, figures["B"])


def check_latency(run: Run, figures: Figures) -> None:
    p50, p99 = single(figures["A"]), single(figures["B"])
    assert 0 < p50 <= p99
    # Time inside the service is part of what each client waited for.
    assert p50 <= statistics.median(run.traffic.latencies)
    assert p99 <= max(run.traffic.latencies)


def check_rejections(run: Run, figures: Figures) -> None:
    rates = by("code", figures["A"])
    assert set(BAD) <= set(rates), rates
    assert "rate-limited" not in rates
    for code, rate in rates.items():
        assert run.agrees(rate, run.traffic.rejected[code]), (code, rates, run.traffic.rejected)


def check_rate_limited(run: Run, figures: Figures) -> None:
    assert run.traffic.rejected["rate-limited"] > 0
    assert run.agrees(single(figures["A"]), run.traffic.rejected["rate-limited"])


def check_cdn_health(run: Run, figures: Figures) -> None:
    assert by("host", figures["A"]) == {run.cdn_up: 1.0, run.cdn_down: 0.0}


def check_cdn_hosts(run: Run, figures: Figures) -> None:
    rates = by("cdn_host", figures["A"])
    assert set(run.traffic.cdn_hosts) == {run.cdn_up}
    assert run.agrees(rates.pop(run.cdn_up), run.traffic.cdn_hosts[run.cdn_up])
    assert all(rate == 0 for rate in rates.values()), rates


def check_cdn_weights(run: Run, figures: Figures) -> None:
    assert by("host", figures["A"]) == {run.cdn_up: 1 - UTILIZATION, run.cdn_down: 0.0}
    assert by("host", figures["B"]) == {run.cdn_up: UTILIZATION}


# Panel title -> its check at the end of the measured window.
CHECKS: dict[str, Callable[[Run, Figures], None]] = {
    "Config version": check_config_version,
    "Requests/s": check_requests,
    "Rate-limit buckets": check_buckets,
    "Degraded mode": check_degraded,
    "Requests/s by target": check_by_target,
    "Origin share: configured vs achieved": check_origin_share,
    "Redirect latency": check_latency,
    "Rejections by code": check_rejections,
    "Rate-limited": check_rate_limited,
    "CDN health": check_cdn_health,
    "CDN redirects/s by host": check_cdn_hosts,
    "CDN effective weights and reported utilization": check_cdn_weights,
}
# Panels whose figures show only once Redis is cut: checked at the moment a worker degraded.
AFTER_CUT = {"PostgreSQL and Redis errors"}


def test_every_panel_has_a_check_here() -> None:
    assert {panel["title"] for panel in panels()} == set(CHECKS) | AFTER_CUT


@pytest.mark.parametrize("title", sorted(CHECKS))
def test_panel_figures_agree_with_the_traffic_sent(run: Run, title: str) -> None:
    queries = [query for query in panel_queries() if query.panel == title]
    figures = {query.ref: run.query(query, run.end, run.window) for query in queries}
    for ref, result in figures.items():
        assert result, f"{title} {ref}: no data"
    CHECKS[title](run, figures)


@pytest.mark.parametrize("query", list(panel_queries()), ids=lambda q: f"{q.panel}-{q.ref}")
def test_every_panel_query_draws_a_graph_over_the_window(run: Run, query: Query) -> None:
    """As Grafana asks for a graph: a range query, step = scrape interval, $__rate_interval
    four scrapes."""
    until = run.errors_at if query.panel in AFTER_CUT else run.end
    series = run.prometheus.query_range(query.rendered(RATE_INTERVAL), run.start, until, INTERVAL)
    assert series, f"{query.panel} {query.ref}: no data"
    assert all(s["values"] for s in series)


def test_degraded_mode_shows_the_worker_that_lost_redis(run: Run) -> None:
    (query,) = [q for q in panel_queries() if q.panel == "Degraded mode"]
    shown = by("instance", run.query(query, run.degraded_at, 1))
    assert set(shown) == set(run.instances)
    assert 1.0 in shown.values()


def test_backend_errors_show_redis_failing_while_it_is_cut(run: Run) -> None:
    (query,) = [q for q in panel_queries() if q.panel == "PostgreSQL and Redis errors"]
    window = run.errors_at - run.cut_at + 2
    shown = run.query(query, run.errors_at, window)
    redis = [s for s in shown if s["metric"]["backend"] == "redis" and float(s["value"][1]) > 0]
    assert redis, shown


def test_config_change_is_annotated_once_where_it_happened(run: Run) -> None:
    (query,) = annotation_queries()
    # Grafana draws an annotation for each step where the query returns a value.
    (series,) = run.prometheus.query_range(
        query.rendered(RATE_INTERVAL), run.start, run.end, INTERVAL
    )
    marked = [float(t) for t, _ in series["values"]]
    assert {float(v) for _, v in series["values"]} == {run.version}
    # From the scrape after the change until $__rate_interval later, and nowhere else.
    assert run.changed_at <= marked[0] <= run.changed_at + FLUSH + 3 * INTERVAL
    assert marked[-1] - marked[0] <= 4 * INTERVAL + FLUSH + INTERVAL
    assert run.version == run.version_before + 1
