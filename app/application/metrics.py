"""What the redirect path did: counted per worker in plain structures, merged per instance
(every worker's snapshot) and per cluster (the stats store every worker flushes to)."""

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TypeVar

from app.application.ports import (
    DURATION_BUCKETS,
    THROUGHPUT_BUCKETS,
    Figures,
    RedirectKey,
    StatsStore,
    WorkerFigures,
)
from app.application.snapshot import ConfigSnapshot
from app.domain.errors import BalancerError
from app.domain.router import Redirect

# A redirect's counter key: (target, cdn, status, region); its server is counted apart.
redirect_key = itemgetter(0, 6, 2, 5)
server_of = itemgetter(3)

# How often a worker folds the redirects it appended into its counts and asks for the next
# one to be timed: at most 100 timed redirects a second, and a fold of at most 10 ms of
# traffic, so the pending list stays small.
TICK_SECONDS = 0.01
# Server labels counted, by each worker and in the cluster's stats store: the heaviest (a
# viewer can name any server label, so they cannot all be kept).
MAX_SERVERS = 2000


class StatsUnavailable(BalancerError):
    """The cluster's stats store (Redis) could not be read or written."""

    code = "stats-unavailable"


class MetricsDisabled(BalancerError):
    """Counting is off in this instance (BALANCER_METRICS=false)."""

    code = "metrics-disabled"


class ServerCounts:
    """Redirects by origin server label, kept for the heaviest `capacity` labels whatever is
    sent: space-saving (Metwally, Agrawal, El Abbadi), added in batches.

    Past `2 * capacity` labels the lightest are dropped down to `capacity`; `floor` is the
    largest count ever dropped, and a label counted again after it was dropped starts from
    it. So a listed count is at least the label's true count and at most `floor` above it,
    and a label not listed was seen at most `floor` times. `error` also carries the bounds
    of the summaries merged in: every count is within `error` of the true one, and every
    label seen more than `error` times is listed. While no more than `2 * capacity` labels
    were ever seen, counts are exact and `error` is 0.
    """

    __slots__ = ("capacity", "counts", "floor", "inherited")

    def __init__(self, capacity: int = MAX_SERVERS) -> None:
        self.capacity = capacity
        self.counts: Counter[str] = Counter()
        self.floor = 0
        self.inherited = 0

    @property
    def error(self) -> int:
        return self.floor + self.inherited

    def add(self, servers: Iterable[str]) -> None:
        """Count one redirect for each label in `servers` (in C while nothing was dropped)."""
        if self.floor:
            self._add_counts(Counter(servers))
            return
        self.counts.update(servers)
        if len(self.counts) > 2 * self.capacity:
            self._drop_lightest()

    def merge(self, other: "ServerCounts") -> None:
        """Add the counts of `other` (and its error bound)."""
        self.inherited += other.error
        self._add_counts(other.counts)

    def _add_counts(self, batch: Mapping[str, int]) -> None:
        counts = self.counts
        if self.floor:
            for label in batch.keys() - counts.keys():
                counts[label] = self.floor
        counts.update(batch)
        if len(counts) > 2 * self.capacity:
            self._drop_lightest()

    def _drop_lightest(self) -> None:
        ordered = sorted(self.counts.items(), key=itemgetter(1), reverse=True)
        self.floor = max(self.floor, ordered[self.capacity][1])
        self.counts = Counter(dict(ordered[: self.capacity]))


class Tally:
    """One worker's counts since it started. The redirect front writes them, background
    tasks read them: no lock, one thread.

    A redirect costs the front a list append: `fold()`, every TICK_SECONDS and before any
    read of `redirects`, counts the appended ones in C (counting in Python on the redirect
    path cost 3.9k instructions a request, this way 2.6k), by key and, since the last
    `take_servers()`, by server label (bounded there). `sample` asks the front to time its
    next redirect; `tick()` sets it.
    """

    __slots__ = (
        "_redirects",
        "_servers",
        "buckets",
        "clients_gone",
        "duration_count",
        "duration_sum",
        "pending",
        "rejected",
        "sample",
        "steering_requests",
        "steering_throughput",
        "steering_throughput_sum",
    )

    def __init__(self) -> None:
        self._redirects: Counter[RedirectKey] = Counter()
        self._servers = ServerCounts()
        self.pending: list[Redirect] = []
        self.rejected: dict[str, int] = {}
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.duration_sum = 0.0
        self.duration_count = 0
        self.sample = True
        self.clients_gone = 0  # connections closed by their client with requests unanswered
        self.steering_requests: dict[str, int] = {}
        self.steering_throughput: dict[str, list[int]] = {}
        self.steering_throughput_sum: dict[str, float] = {}

    @property
    def redirects(self) -> dict[RedirectKey, int]:
        """Redirects by key, every one appended so far counted."""
        self.fold()
        return self._redirects

    def take_servers(self) -> ServerCounts:
        """Redirects by server label since the last call, every one appended counted."""
        self.fold()
        taken, self._servers = self._servers, ServerCounts()
        return taken

    def redirect(self, redirect: Redirect) -> None:
        self.pending.append(redirect)

    def fold(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = []
        self._redirects.update(map(redirect_key, pending))  # counted in C
        self._servers.add(map(server_of, pending))

    def tick(self) -> None:
        self.fold()
        self.sample = True

    def reject(self, code: str) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1

    def steered(self, pathway: str) -> None:
        """One steering manifest for a player on `pathway` ("": unknown)."""
        self.steering_requests[pathway] = self.steering_requests.get(pathway, 0) + 1

    def throughput(self, pathway: str, throughput: float) -> None:
        """A player measured `throughput` bits per second on `pathway`."""
        buckets = self.steering_throughput.get(pathway)
        if buckets is None:
            buckets = self.steering_throughput[pathway] = [0] * (len(THROUGHPUT_BUCKETS) + 1)
        buckets[bisect_left(THROUGHPUT_BUCKETS, throughput)] += 1
        sums = self.steering_throughput_sum
        sums[pathway] = sums.get(pathway, 0.0) + throughput

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        self.duration_count += 1


def merge(figures: Iterable[Figures]) -> Figures:
    """Counters of every worker, dead or alive, summed (a dead worker's counts do not vanish);
    gauges of the live ones: the newest config version, degraded if any worker is, a CDN
    host up only if every worker sees it up, rate-limit buckets summed."""
    merged = Figures(started=0.0)
    live_seen = False
    for one in figures:
        if one.started and (not merged.started or one.started < merged.started):
            merged.started = one.started
        _add(merged.redirects, one.redirects)
        _add(merged.servers, one.servers)
        merged.server_error += one.server_error
        _add(merged.rejected, one.rejected)
        _add(merged.fallback, one.fallback)
        _add(merged.region_fallback, one.region_fallback)
        _add(merged.backend_errors, one.backend_errors)
        merged.buckets = [a + b for a, b in zip(merged.buckets, one.buckets, strict=True)]
        merged.duration_sum += one.duration_sum
        merged.loop_lag = [a + b for a, b in zip(merged.loop_lag, one.loop_lag, strict=True)]
        merged.loop_lag_sum += one.loop_lag_sum
        merged.loop_busy = [a + b for a, b in zip(merged.loop_busy, one.loop_busy, strict=True)]
        merged.loop_busy_sum += one.loop_busy_sum
        merged.probe_round_failures += one.probe_round_failures
        merged.clients_gone += one.clients_gone
        _add(merged.steering_requests, one.steering_requests)
        for pathway, counts in one.steering_throughput.items():
            into = merged.steering_throughput.setdefault(pathway, [0] * len(counts))
            merged.steering_throughput[pathway] = [a + b for a, b in zip(into, counts, strict=True)]
        for pathway, total in one.steering_throughput_sum.items():
            sums = merged.steering_throughput_sum
            sums[pathway] = sums.get(pathway, 0.0) + total
        if not one.live:
            continue
        live_seen = True
        merged.workers += 1
        merged.config_version = max(merged.config_version, one.config_version)
        merged.sequence_degraded |= one.sequence_degraded
        for host, up in one.cdn_up.items():
            merged.cdn_up[host] = merged.cdn_up.get(host, True) and up
        # Workers agree within a board read; while they do not, the lowest figure stands.
        for host, weight in one.cdn_weight.items():
            merged.cdn_weight[host] = min(merged.cdn_weight.get(host, weight), weight)
        for host, used in one.cdn_utilization.items():
            merged.cdn_utilization[host] = max(merged.cdn_utilization.get(host, used), used)
        merged.rate_limit_clients += one.rate_limit_clients
        if one.origin_share is not None:
            merged.origin_share = one.origin_share
    merged.live = live_seen
    return merged


_K = TypeVar("_K")


def _add(into: dict[_K, int], counts: Mapping[_K, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


def stats_fields(figures: Figures) -> dict[str, int]:
    """The counters `/stats` reports, flat (`target:cdn`, `region:eu`, ...), as the stats
    store keeps them (server labels are kept apart, bounded)."""
    fields: dict[str, int] = {}
    for (target, cdn, _status, region), count in figures.redirects.items():
        for name in (
            "total",
            f"target:{target}",
            f"region:{region}",
            *((f"cdn_host:{cdn_host(cdn)}",) if cdn else ()),
        ):
            fields[name] = fields.get(name, 0) + count
    for code, count in figures.rejected.items():
        fields[f"rejected:{code}"] = count
    # Steering, by the pathway players said they were on ("" unknown; only pathways of the
    # configuration, so few): manifests, throughput reports and their sum in kbit/s (an
    # integer for the store's counters; in kbit/s a 64-bit counter holds 9 billion reports
    # of the largest throughput believed).
    for pathway, count in figures.steering_requests.items():
        fields[f"steering:{pathway}"] = count
    for pathway, buckets in figures.steering_throughput.items():
        fields[f"steering_reports:{pathway}"] = sum(buckets)
        kbits = figures.steering_throughput_sum.get(pathway, 0.0) / 1000
        fields[f"steering_kbits:{pathway}"] = round(kbits)
    return fields


def cdn_host(base_url: str) -> str:
    """`http://cdn1.example.com:8080` -> `cdn1.example.com:8080`: the label for a CDN host."""
    return base_url.partition("://")[2] or base_url


@dataclass(frozen=True, slots=True)
class SteeringFigures:
    """What players on one pathway reported on steering reloads."""

    requests: int  # steering manifests answered
    throughput_reports: int  # of them with a throughput
    throughput_bps_mean: float | None  # the mean of those throughputs, bits per second


@dataclass(frozen=True, slots=True)
class StatsReport:
    scope: str  # "cluster" (every instance, from the stats store) or "instance"
    since: float
    total: int
    by_target: dict[str, int]
    by_server: dict[str, int]
    by_cdn_host: dict[str, int]
    by_region: dict[str, int]
    by_server_error: int
    rejected: dict[str, int]
    rate_limited: int
    configured_origin_share: float | None
    achieved_origin_share: float | None
    requests_per_second: float | None
    note: str | None = None
    steering: dict[str, SteeringFigures] = field(default_factory=dict)


class ReadInstanceFigures:
    """Every worker of this instance merged: what `/metrics` exposes."""

    def __init__(self, workers: WorkerFigures) -> None:
        self._workers = workers

    def __call__(self) -> tuple[Figures, list[Figures]]:
        """The merged figures, and each worker's own."""
        each = self._workers.read_all()
        return merge(each), each


class GetStats:
    """Counts since the last reset across all workers and instances; this instance's own
    counts (since it started) while the stats store cannot be read."""

    def __init__(
        self,
        store: StatsStore,
        workers: WorkerFigures,
        snapshot: ConfigSnapshot,
        enabled: bool,
    ) -> None:
        self._store = store
        self._workers = workers
        self._snapshot = snapshot
        self._enabled = enabled
        self.clock: Callable[[], float] = time.time

    async def __call__(self) -> StatsReport:
        if not self._enabled:
            raise MetricsDisabled("Counting is off in this instance (BALANCER_METRICS=false).")
        share = self._configured_share()
        try:
            counts = await self._store.read()
        except StatsUnavailable as error:
            merged = merge(self._workers.read_all())
            elapsed = max(self.clock() - merged.started, 1e-9)
            fields = stats_fields(merged)
            return report(
                scope="instance",
                since=merged.started,
                fields=fields,
                servers=merged.servers,
                server_error=merged.server_error,
                configured_share=share,
                requests_per_second=fields.get("total", 0) / elapsed,
                note=f"this instance only, since it started ({error.detail})",
            )
        return report(
            scope="cluster",
            since=counts.since,
            fields=counts.fields,
            servers=counts.servers,
            server_error=counts.server_error,
            configured_share=share,
            requests_per_second=counts.requests_per_second,
        )

    def _configured_share(self) -> float | None:
        if not self._snapshot.loaded:
            return None
        split = self._snapshot.version.config.split
        return split.origin_weight / (split.cdn_weight + split.origin_weight)


class ResetStats:
    """Start the cluster's counts again from zero, now."""

    def __init__(self, store: StatsStore, enabled: bool) -> None:
        self._store = store
        self._enabled = enabled

    async def __call__(self) -> None:
        if not self._enabled:
            raise MetricsDisabled("Counting is off in this instance (BALANCER_METRICS=false).")
        await self._store.reset()


def report(
    *,
    scope: str,
    since: float,
    fields: Mapping[str, int],
    servers: Mapping[str, int],
    server_error: int,
    configured_share: float | None,
    requests_per_second: float | None,
    note: str | None = None,
) -> StatsReport:
    groups: dict[str, dict[str, int]] = {
        "target": {"cdn": 0, "origin": 0},
        "cdn_host": {},
        "region": {},
        "rejected": {},
    }
    steering: dict[str, dict[str, int]] = {
        "steering": {},
        "steering_reports": {},
        "steering_kbits": {},
    }
    for name, count in fields.items():
        group, _, key = name.partition(":")
        if key and group in groups and count:
            groups[group][key] = count
        elif group in steering and count:  # "" is a pathway: the unknown one
            steering[group][key] = count
    total = fields.get("total", 0)
    return StatsReport(
        scope=scope,
        since=since,
        total=total,
        by_target=groups["target"],
        by_server=dict(sorted(servers.items(), key=itemgetter(1), reverse=True)),
        by_cdn_host=groups["cdn_host"],
        by_region=groups["region"],
        by_server_error=server_error,
        rejected=groups["rejected"],
        rate_limited=groups["rejected"].get("rate-limited", 0),
        configured_origin_share=configured_share,
        achieved_origin_share=groups["target"]["origin"] / total if total else None,
        requests_per_second=requests_per_second,
        note=note,
        steering=steering_figures(**steering),
    )


def steering_figures(
    steering: Mapping[str, int],
    steering_reports: Mapping[str, int],
    steering_kbits: Mapping[str, int],
) -> dict[str, SteeringFigures]:
    """Per pathway, busiest first."""
    figures = {}
    for pathway in sorted(
        steering.keys() | steering_reports.keys(), key=lambda name: (-steering.get(name, 0), name)
    ):
        reports = steering_reports.get(pathway, 0)
        figures[pathway] = SteeringFigures(
            requests=steering.get(pathway, 0),
            throughput_reports=reports,
            throughput_bps_mean=steering_kbits.get(pathway, 0) * 1000 / reports
            if reports
            else None,
        )
    return figures
