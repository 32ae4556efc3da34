import asyncio
import os
from collections import Counter
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.application.metrics import (
    MAX_SERVERS,
    GetStats,
    MetricsDisabled,
    ServerCounts,
    StatsUnavailable,
    SteeringFigures,
    Tally,
    merge,
    report,
    stats_fields,
)
from app.application.ports import DURATION_BUCKETS, Figures, StatsCounts
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig
from app.domain.router import Redirect
from app.domain.split import Split
from app.infrastructure.metrics import FileFigures, clear_metrics_directory
from app.presentation.api.metrics import figure_families
from app.presentation.edge import redirect as redirect_module
from app.presentation.edge.redirect import RedirectFront
from tests.support.fakes import CountingSequence, redirect_for, version

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8?token=abc&exp=1"
CDN = "http://cdn.example.com"


def cdn(server: str = "s1", region: str = "default") -> Redirect:
    return Redirect("cdn", f"{CDN}/{server}/v.m3u8", 301, server, 1, region, CDN)


def origin(server: str = "s1", region: str = "default") -> Redirect:
    return Redirect("origin", f"http://{server}.origin/v.m3u8", 301, server, 1, region, "")


def test_a_tally_counts_redirects_by_target_host_status_region_and_by_server() -> None:
    tally = Tally()
    for redirect in (cdn(), cdn(), origin(), cdn("s2", "eu")):
        tally.redirect(redirect)

    assert tally.redirects == {
        ("cdn", CDN, 301, "default"): 2,
        ("origin", "", 301, "default"): 1,
        ("cdn", CDN, 301, "eu"): 1,
    }
    servers = tally.take_servers()
    assert (servers.counts, servers.error) == ({"s1": 3, "s2": 1}, 0)
    assert tally.take_servers().counts == {}  # taken: the next take starts from nothing


def test_a_real_server_is_listed_after_junk_labels_filled_what_a_worker_keeps() -> None:
    tally = Tally()
    # 5,000 valid labels once each, folded 150 at a time as 10 ms ticks would
    for number in range(5000):
        tally.redirect(cdn(f"junk{number}"))
        if number % 150 == 0:
            tally.tick()
    for _ in range(50):
        tally.redirect(cdn("s9"))

    servers = tally.take_servers()

    assert len(servers.counts) <= 2 * MAX_SERVERS
    assert servers.error == 1  # the junk labels dropped were seen once each
    assert 50 <= servers.counts["s9"] <= 50 + servers.error
    assert servers.counts.most_common(1)[0][0] == "s9"


def test_what_a_worker_keeps_per_server_is_bounded_whatever_is_sent() -> None:
    servers = ServerCounts(capacity=100)
    for batch in range(50):
        servers.add(f"junk{batch}-{number}" for number in range(1000))
        assert len(servers.counts) <= 200
    servers.add(["s1"] * 5000)
    assert servers.counts.most_common(1) == [("s1", 5000 + servers.floor)]


def test_a_summary_that_keeps_everything_it_saw_is_exact() -> None:
    servers = ServerCounts(capacity=10)
    servers.add(["s1", "s2", "s1"])
    other = ServerCounts(capacity=10)
    other.add(["s2", "s3"])

    servers.merge(other)

    assert (servers.counts, servers.error) == ({"s1": 2, "s2": 2, "s3": 1}, 0)


# A few heavy servers among many labels seen once or twice.
LABELS = st.integers(min_value=0, max_value=60).map(lambda n: f"s{n % 4}" if n < 24 else f"j{n}")
BATCHES = st.lists(st.lists(LABELS, max_size=40), max_size=10)


@settings(max_examples=300)
@given(batches=BATCHES, capacity=st.integers(min_value=1, max_value=6))
def test_a_listed_count_is_never_below_the_true_one_nor_more_than_the_floor_above(
    batches: list[list[str]], capacity: int
) -> None:
    servers, truth = ServerCounts(capacity), Counter[str]()
    for batch in batches:
        servers.add(batch)
        truth.update(batch)

    assert len(servers.counts) <= 2 * capacity
    for label, true in truth.items():
        if label in servers.counts:
            assert true <= servers.counts[label] <= true + servers.floor
        else:
            assert true <= servers.floor


@settings(max_examples=300)
@given(intervals=st.lists(BATCHES, max_size=6), capacity=st.integers(min_value=1, max_value=6))
def test_merged_summaries_keep_every_count_within_the_error_of_the_true_one(
    intervals: list[list[list[str]]], capacity: int
) -> None:
    since_start, truth = ServerCounts(capacity), Counter[str]()
    for interval in intervals:
        taken = ServerCounts(capacity)
        for batch in interval:
            taken.add(batch)
            truth.update(batch)
        since_start.merge(taken)

    assert len(since_start.counts) <= 2 * capacity
    for label, true in truth.items():
        listed = since_start.counts.get(label)
        if listed is None:
            assert true <= since_start.error
        else:
            assert abs(listed - true) <= since_start.error


def test_a_duration_lands_in_the_first_bucket_that_holds_it() -> None:
    tally = Tally()
    tally.observe(DURATION_BUCKETS[0])  # a bucket's bound is inclusive (le)
    tally.observe(DURATION_BUCKETS[2] * 0.9)
    tally.observe(10.0)

    assert tally.buckets[0] == 1
    assert tally.buckets[2] == 1
    assert tally.buckets[-1] == 1
    assert tally.duration_count == 3


def worker(pid: int, redirects: int, *, live: bool = True, **gauges: Any) -> Figures:
    return Figures(
        pid=pid,
        started=100.0 + pid,
        live=live,
        redirects={("cdn", CDN, 301, "default"): redirects},
        servers={"s1": redirects},
        rejected={"rate-limited": pid},
        buckets=[redirects] + [0] * len(DURATION_BUCKETS),
        **gauges,
    )


def test_merge_keeps_a_dead_workers_counters_but_not_its_gauges() -> None:
    merged = merge(
        [
            worker(
                1,
                10,
                config_version=7,
                rate_limit_clients=3,
                cdn_up={"a": True},
                probe_round_failures=3,
            ),
            worker(
                2,
                5,
                live=False,
                config_version=9,
                sequence_degraded=True,
                cdn_up={"a": False},
                probe_round_failures=2,  # it was the prober once
            ),
            worker(3, 1, config_version=6, rate_limit_clients=4, cdn_up={"a": True}),
        ]
    )

    assert merged.total == 16
    assert merged.servers == {"s1": 16}
    assert merged.rejected == {"rate-limited": 6}
    assert merged.buckets[0] == 16
    assert merged.config_version == 7
    assert merged.sequence_degraded is False
    assert merged.cdn_up == {"a": True}
    assert merged.rate_limit_clients == 7
    assert merged.probe_round_failures == 5
    assert merged.workers == 2
    assert merged.started == 101.0


def test_a_cdn_host_is_up_only_while_every_live_worker_routes_to_it() -> None:
    merged = merge(
        [worker(1, 0, cdn_up={"a": True, "b": True}), worker(2, 0, cdn_up={"a": False, "b": True})]
    )

    assert merged.cdn_up == {"a": False, "b": True}


def test_effective_weights_merge_to_the_lowest_and_utilizations_to_the_highest() -> None:
    merged = merge(
        [
            worker(1, 0, cdn_weight={"a": 2.0, "b": 1.0}, cdn_utilization={"a": 0.2}),
            worker(2, 0, cdn_weight={"a": 0.5, "b": 1.0}, cdn_utilization={"a": 0.6}),
        ]
    )
    assert merged.cdn_weight == {"a": 0.5, "b": 1.0}
    assert merged.cdn_utilization == {"a": 0.6}
    families = {family.name: family for family in figure_families(merged)}
    weights = {s.labels["host"]: s.value for s in families["balancer_cdn_effective_weight"].samples}
    assert weights == {"a": 0.5, "b": 1.0}
    (used,) = families["balancer_cdn_reported_utilization"].samples
    assert (used.labels, used.value) == ({"host": "a"}, 0.6)


def test_stats_fields_flatten_the_dimensions_of_the_stats_endpoint() -> None:
    tally = Tally()
    for redirect in (cdn(), cdn("s2", "eu"), origin()):
        tally.redirect(redirect)
    tally.reject("rate-limited")

    fields = stats_fields(Figures(redirects=tally.redirects, rejected=tally.rejected))

    assert fields == {
        "total": 3,
        "target:cdn": 2,
        "target:origin": 1,
        "region:default": 2,
        "region:eu": 1,
        "cdn_host:cdn.example.com": 2,
        "rejected:rate-limited": 1,
    }


def test_steering_reports_reach_the_stats_fields_and_back_per_pathway() -> None:
    tally = Tally()
    for throughput in (3_000_000.0, 5_000_400.0):
        tally.steered("cdn-a")
        tally.throughput("cdn-a", throughput)
    tally.steered("cdn-a")
    tally.steered("")  # a player that said no pathway of its pool
    figures = Figures(
        steering_requests=tally.steering_requests,
        steering_throughput=tally.steering_throughput,
        steering_throughput_sum=tally.steering_throughput_sum,
    )

    fields = stats_fields(figures)
    stats = report(
        scope="cluster",
        since=0.0,
        fields=fields,
        servers={},
        server_error=0,
        configured_share=None,
        requests_per_second=None,
    )

    assert fields == {
        "steering:cdn-a": 3,
        "steering:": 1,
        "steering_reports:cdn-a": 2,
        "steering_kbits:cdn-a": 8000,  # kbit/s, whole: the store's counters are integers
    }
    assert stats.steering == {
        "cdn-a": SteeringFigures(requests=3, throughput_reports=2, throughput_bps_mean=4e6),
        "": SteeringFigures(requests=1, throughput_reports=0, throughput_bps_mean=None),
    }
    assert stats.total == 0


def test_worker_figures_survive_the_file_round_trip(tmp_path: Path) -> None:
    files = FileFigures(tmp_path)
    figures = worker(
        2**22 + 7,  # no such process: read back as dead
        12,
        config_version=4,
        sequence_degraded=True,
        cdn_up={"cdn.example.com": False},
        cdn_weight={"cdn.example.com": 0.5},
        cdn_utilization={"cdn.example.com": 0.72},
        fallback={"eu": 2},
        region_fallback={"us": 5},
        backend_errors={("redis", "TimeoutError"): 3},
        origin_share=0.1,
        probe_round_failures=2,
        server_error=2,
    )
    files.write(figures)

    (read,) = files.read_all()

    figures.live = False
    assert read == figures


def test_a_previous_runs_worker_files_are_cleared_and_nothing_else(tmp_path: Path) -> None:
    FileFigures(tmp_path).write(worker(os.getpid(), 3))
    (tmp_path / "worker-1.tmp").write_text("")
    (tmp_path / "notes.txt").write_text("kept")

    clear_metrics_directory(tmp_path)

    assert FileFigures(tmp_path).read_all() == []
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_prometheus_families_have_no_server_label_and_merge_cdn_base_urls_by_host() -> None:
    figures = Figures(
        redirects={
            ("cdn", CDN, 301, "eu"): 2,
            ("cdn", "https://cdn.example.com", 301, "eu"): 3,
            ("origin", "", 301, "eu"): 1,
        },
        servers={"s1": 3, "s2": 3},
    )

    families = {family.name: family for family in figure_families(figures)}

    samples = {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in families["balancer_redirects"].samples
        if sample.name == "balancer_redirects_total"
    }
    assert samples == {
        (
            ("cdn_host", "cdn.example.com"),
            ("region", "eu"),
            ("status", "301"),
            ("target", "cdn"),
        ): 5,
        (("cdn_host", ""), ("region", "eu"), ("status", "301"), ("target", "origin")): 1,
    }


def test_failed_prober_rounds_are_a_counter_in_prometheus() -> None:
    families = {family.name: family for family in figure_families(Figures(probe_round_failures=4))}

    (sample,) = families["balancer_cdn_probe_round_failures"].samples
    assert (sample.name, sample.labels, sample.value) == (
        "balancer_cdn_probe_round_failures_total",
        {},
        4,
    )


class FakeStore:
    def __init__(
        self, fields: dict[str, int] | None = None, servers: dict[str, int] | None = None
    ) -> None:
        self.fields = fields
        self.servers = servers or {}

    async def read(self) -> StatsCounts:
        if self.fields is None:
            raise StatsUnavailable("Redis: ConnectionError")
        return StatsCounts(
            since=50.0,
            fields=self.fields,
            requests_per_second=12.5,
            servers=self.servers,
            server_error=2,
        )

    async def reset(self) -> None:
        self.fields = {}


class FakeWorkers:
    def __init__(self, *figures: Figures) -> None:
        self.figures = list(figures)

    def read_all(self) -> list[Figures]:
        return self.figures


def loaded_snapshot() -> ConfigSnapshot:
    snapshot = ConfigSnapshot()
    snapshot.offer(version(1))
    return snapshot


def test_stats_report_the_cluster_and_the_shares() -> None:
    store = FakeStore(
        # a field of an older version's per-server counting is not a server of today's
        {"total": 1000, "target:cdn": 900, "target:origin": 100, "server:s7": 5},
        {"s2": 10, "s1": 990},
    )
    get = GetStats(store, FakeWorkers(), loaded_snapshot(), enabled=True)

    report = asyncio.run(get())

    assert report.scope == "cluster"
    assert report.total == 1000
    assert report.by_target == {"cdn": 900, "origin": 100}
    assert list(report.by_server.items()) == [("s1", 990), ("s2", 10)]
    assert report.by_server_error == 2
    assert report.configured_origin_share == 0.1
    assert report.achieved_origin_share == 0.1
    assert report.requests_per_second == 12.5


def test_stats_fall_back_to_this_instance_when_the_store_is_down() -> None:
    get = GetStats(
        FakeStore(None), FakeWorkers(worker(1, 30), worker(2, 10)), loaded_snapshot(), enabled=True
    )
    get.clock = lambda: 121.0

    report = asyncio.run(get())

    assert report.scope == "instance"
    assert report.total == 40
    assert report.by_server == {"s1": 40}
    assert report.since == 101.0
    assert report.rate_limited == 3
    assert report.requests_per_second == 2.0
    assert report.note is not None
    assert "ConnectionError" in report.note


def test_stats_say_so_when_counting_is_off() -> None:
    get = GetStats(FakeStore({}), FakeWorkers(), loaded_snapshot(), enabled=False)

    with pytest.raises(MetricsDisabled):
        asyncio.run(get())


async def _nothing() -> dict[str, Any]:
    return {}


def front_with(tally: Tally | None, config: BalancerConfig | None = None) -> RedirectFront:
    front = RedirectFront(app=None)  # type: ignore[arg-type]
    redirect, _ = redirect_for(
        config or BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1))
    )
    front.bind(redirect, tally=tally)
    return front


def request(query: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "path": "/", "method": method, "query_string": query.encode()}


async def _drop(_: Any) -> None:
    return None


def test_the_front_counts_every_redirect_and_every_refusal_by_code() -> None:
    tally = Tally()
    front = front_with(tally)

    async def drive() -> None:
        for _ in range(160):
            await front(request(f"video={VIDEO}"), _nothing, _drop)
        await front(request("video=http://elsewhere.example/v.m3u8"), _nothing, _drop)
        await front(request(f"video={VIDEO}", "POST"), _nothing, _drop)

    asyncio.run(drive())

    assert len(tally.pending) == 160  # appended, not yet counted
    assert sum(tally.redirects.values()) == 160
    assert tally.pending == []
    assert tally.redirects[("cdn", CDN, 301, "default")] == 144
    assert tally.rejected == {"host-not-allowed": 1, "method-not-allowed": 1}
    assert tally.duration_count == 1  # the first redirect; the next only after a tick


def test_the_front_times_one_redirect_after_each_tick() -> None:
    tally = Tally()
    front = front_with(tally)

    async def drive() -> None:
        for _ in range(5):
            tally.tick()
            for _ in range(10):
                await front(request(f"video={VIDEO}"), _nothing, _drop)

    asyncio.run(drive())

    assert tally.duration_count == 5
    assert sum(tally.buckets) == 5


def test_the_front_counts_origin_fallbacks_by_region_when_no_cdn_host_is_up() -> None:
    config = BalancerConfig(
        cdn_host="cdn.example.com", split=Split(1, 0), cdn_health=HealthSettings(enabled=True)
    )
    snapshot = ConfigSnapshot()
    snapshot.offer(version(1, config))
    snapshot.mark_down(frozenset({CDN}))

    tally = Tally()
    front = RedirectFront(app=None)  # type: ignore[arg-type]
    front.bind(RedirectVideo(snapshot, CountingSequence()), tally=tally)

    async def drive() -> None:
        for _ in range(3):
            await front(request(f"video={VIDEO}"), _nothing, _drop)

    asyncio.run(drive())

    assert tally.redirects == {("origin", "", 301, "default"): 3}
    assert snapshot.fallbacks.origin_by_region == {"default": 3}


def test_the_front_counts_nothing_while_counting_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tally, so nothing is counted; and nothing is timed either (the clock is read only
    for a tally's sample). Redirects and refusals are answered as usual."""

    def no_clock() -> float:
        raise AssertionError("the front read the clock while counting is off")

    monkeypatch.setattr(redirect_module, "perf_counter", no_clock)
    front = front_with(None)
    sent: list[MutableMapping[str, Any]] = []

    async def keep(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def drive() -> None:
        for _ in range(10):
            await front(request(f"video={VIDEO}"), _nothing, keep)
        await front(request("video=http://elsewhere.example/v.m3u8"), _nothing, keep)
        await front(request(f"video={VIDEO}", "POST"), _nothing, keep)

    asyncio.run(drive())

    statuses = [message["status"] for message in sent if message["type"] == "http.response.start"]
    assert statuses == [301] * 10 + [400, 405]
    assert isinstance(front.answer("GET", f"video={VIDEO}".encode(), ""), Redirect)
