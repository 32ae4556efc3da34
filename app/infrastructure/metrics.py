"""Each worker's figures: gathered from its in-memory counts once a second, written to a
file of its own in a directory the instance's workers share (read by `/metrics` in
whichever worker answers), and flushed as deltas to the cluster's stats store."""

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from app.application.cdn_health import CdnHealthView, host_loads
from app.application.metrics import (
    TICK_SECONDS,
    ServerCounts,
    StatsUnavailable,
    Tally,
    cdn_host,
    stats_fields,
)
from app.application.ports import Figures
from app.application.snapshot import ConfigSnapshot
from app.domain.ratelimit import ClientLimiter
from app.infrastructure.backend_errors import BackendErrors
from app.infrastructure.loop_watch import LoopWatch
from app.infrastructure.redis.sequence import RedisLeasedSequence
from app.infrastructure.redis.stats import RedisStats

log = structlog.get_logger(__name__)

METRICS_DIR_VARIABLE = "BALANCER_METRICS_DIR"
_PREFIX = "worker-"


@contextlib.contextmanager
def metrics_directory(configured: str) -> Iterator[Path]:
    """The directory this instance's workers share. The supervisor (`python -m app serve`)
    creates a fresh one and passes it on; a process started another way gets its own, removed
    when it stops."""
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="balancer-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def clear_metrics_directory(path: Path) -> None:
    """Forget a previous run's workers (whose pids the system may have handed out again)."""
    for stale in path.glob(f"{_PREFIX}*"):
        stale.unlink(missing_ok=True)


class FileFigures:
    """One JSON file per worker pid, replaced atomically; a dead worker's file stays, so
    its counters do not vanish (its gauges no longer count)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, figures: Figures) -> None:
        path = self.directory / f"{_PREFIX}{figures.pid}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(_encode(figures)))
        os.replace(temporary, path)

    def read_all(self) -> list[Figures]:
        everyone = []
        for path in sorted(self.directory.glob(f"{_PREFIX}*.json")):
            try:
                figures = _decode(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or not ours
            figures.live = _alive(figures.pid)
            everyone.append(figures)
        return everyone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


def _encode(figures: Figures) -> dict[str, Any]:
    return {
        "pid": figures.pid,
        "started": figures.started,
        "redirects": [[*key, count] for key, count in figures.redirects.items()],
        "servers": figures.servers,
        "server_error": figures.server_error,
        "rejected": figures.rejected,
        "fallback": figures.fallback,
        "region_fallback": figures.region_fallback,
        "buckets": figures.buckets,
        "duration_sum": figures.duration_sum,
        "backend_errors": [[*key, count] for key, count in figures.backend_errors.items()],
        "probe_round_failures": figures.probe_round_failures,
        "clients_gone": figures.clients_gone,
        "steering_requests": figures.steering_requests,
        "steering_throughput": figures.steering_throughput,
        "steering_throughput_sum": figures.steering_throughput_sum,
        "loop_lag": figures.loop_lag,
        "loop_lag_sum": figures.loop_lag_sum,
        "loop_busy": figures.loop_busy,
        "loop_busy_sum": figures.loop_busy_sum,
        "config_version": figures.config_version,
        "sequence_degraded": figures.sequence_degraded,
        "cdn_up": figures.cdn_up,
        "cdn_weight": figures.cdn_weight,
        "cdn_utilization": figures.cdn_utilization,
        "rate_limit_clients": figures.rate_limit_clients,
        "origin_share": figures.origin_share,
    }


def _decode(data: dict[str, Any]) -> Figures:
    return Figures(
        pid=int(data["pid"]),
        started=float(data["started"]),
        redirects={
            (target, cdn, int(status), region): int(count)
            for target, cdn, status, region, count in data["redirects"]
        },
        servers={str(server): int(count) for server, count in data["servers"].items()},
        server_error=int(data["server_error"]),
        rejected={str(code): int(count) for code, count in data["rejected"].items()},
        fallback={str(region): int(count) for region, count in data["fallback"].items()},
        region_fallback={
            str(region): int(count) for region, count in data["region_fallback"].items()
        },
        buckets=[int(count) for count in data["buckets"]],
        duration_sum=float(data["duration_sum"]),
        backend_errors={
            (backend, kind): int(count) for backend, kind, count in data["backend_errors"]
        },
        probe_round_failures=int(data["probe_round_failures"]),
        clients_gone=int(data.get("clients_gone", 0)),
        steering_requests={
            str(pathway): int(count) for pathway, count in data.get("steering_requests", {}).items()
        },
        steering_throughput={
            str(pathway): [int(count) for count in counts]
            for pathway, counts in data.get("steering_throughput", {}).items()
        },
        steering_throughput_sum={
            str(pathway): float(total)
            for pathway, total in data.get("steering_throughput_sum", {}).items()
        },
        **_loop_figures(data),
        config_version=int(data["config_version"]),
        sequence_degraded=bool(data["sequence_degraded"]),
        cdn_up={str(host): bool(up) for host, up in data["cdn_up"].items()},
        cdn_weight={str(host): float(w) for host, w in data.get("cdn_weight", {}).items()},
        cdn_utilization={
            str(host): float(used) for host, used in data.get("cdn_utilization", {}).items()
        },
        rate_limit_clients=int(data["rate_limit_clients"]),
        origin_share=data["origin_share"],
    )


def _loop_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The event loop's histograms of a file (none in a file of an older worker)."""
    if "loop_lag" not in data:
        return {}
    return {
        "loop_lag": [int(count) for count in data["loop_lag"]],
        "loop_lag_sum": float(data["loop_lag_sum"]),
        "loop_busy": [int(count) for count in data["loop_busy"]],
        "loop_busy_sum": float(data["loop_busy_sum"]),
    }


# An idle worker's tally ticks this many times less often (the first tick of a burst folds
# at most IDLE_TICKS ticks' worth of redirects).
IDLE_TICKS = 10


class MetricsFlusher:
    """Every `interval` seconds: this worker's figures to its file, and the counts since the
    last successful flush to the stats store (one pipeline). Nothing on the redirect path
    waits for it; a failed store flush keeps its delta for the next one. Every `tick`
    seconds (None: counting is off) the tally folds what the redirect path appended.

    Server labels come from the tally each flush and go into two bounded summaries: since
    this worker started (its file) and not yet in the store (cleared once stored)."""

    def __init__(  # noqa: PLR0917 - every source of a figure, once
        self,
        tally: Tally,
        snapshot: ConfigSnapshot,
        sequence: RedisLeasedSequence,
        limiter: ClientLimiter,
        errors: BackendErrors,
        cdn_health: CdnHealthView,
        files: FileFigures,
        store: RedisStats,
        watch: LoopWatch,
        interval: float = 1.0,
        tick: float | None = TICK_SECONDS,
    ) -> None:
        self._tally = tally
        self._tick = tick
        self._ticker: asyncio.TimerHandle | None = None
        self._snapshot = snapshot
        self._sequence = sequence
        self._limiter = limiter
        self._errors = errors
        self._cdn_health = cdn_health
        self._files = files
        self._store = store
        self._watch = watch
        self._interval = interval
        self._started = time.time()
        self._flushed: dict[str, int] = {}  # stats fields as of the last store flush
        self._servers = ServerCounts()  # since this worker started
        self._unsent = ServerCounts()  # since the last store flush
        self._store_down = False
        self._file_failed = False
        self._task: asyncio.Task[None] | None = None
        # cdn_up of the router it was made for: it changes only with the router.
        self._cdn_up: tuple[object, dict[str, bool]] = (None, {})
        # Effective weights and utilizations of the router and board round they were made for.
        self._cdn_load: tuple[object, int | None, dict[str, float], dict[str, float]] = (
            None,
            None,
            {},
            {},
        )

    def gather(self) -> Figures:
        tally = self._tally
        snapshot = self._snapshot
        fallbacks = snapshot.fallbacks
        servers = tally.take_servers()
        self._servers.merge(servers)
        self._unsent.merge(servers)
        figures = Figures(
            pid=os.getpid(),
            started=self._started,
            redirects=dict(tally.redirects),
            servers=dict(self._servers.counts),
            server_error=self._servers.error,
            rejected=dict(tally.rejected),
            fallback=dict(fallbacks.origin_by_region),
            region_fallback=dict(fallbacks.regions),
            buckets=list(tally.buckets),
            duration_sum=tally.duration_sum,
            backend_errors=dict(self._errors.counts),
            probe_round_failures=self._cdn_health.round_failures,
            clients_gone=tally.clients_gone,
            steering_requests=dict(tally.steering_requests),
            steering_throughput={
                pathway: list(counts) for pathway, counts in tally.steering_throughput.items()
            },
            steering_throughput_sum=dict(tally.steering_throughput_sum),
            loop_lag=list(self._watch.lag),
            loop_lag_sum=self._watch.lag_sum,
            loop_busy=list(self._watch.busy),
            loop_busy_sum=self._watch.busy_sum,
            sequence_degraded=self._sequence.degraded,
            rate_limit_clients=self._limiter.tracked,
        )
        if snapshot.loaded:
            version = snapshot.version
            config = version.config
            figures.config_version = version.version
            router, cdn_up = self._cdn_up
            if router is not snapshot.current:
                # Routed around: what the router does, so nothing while health checks are off.
                down = snapshot.down_hosts if config.cdn_health.enabled else frozenset()
                cdn_up = {cdn_host(url): url not in down for url in snapshot.probe_targets}
                self._cdn_up = (snapshot.current, cdn_up)
            figures.cdn_up = cdn_up
            figures.cdn_weight, figures.cdn_utilization = self._load_gauges(snapshot)
            split = config.split
            figures.origin_share = split.origin_weight / (split.cdn_weight + split.origin_weight)
        return figures

    def _load_gauges(self, snapshot: ConfigSnapshot) -> tuple[dict[str, float], dict[str, float]]:
        """Per host: the weight its rotations give it, and its reported utilization; made
        again only when the router or the board's round changes."""
        view = self._cdn_health
        router, round_, weights, used = self._cdn_load
        if router is snapshot.current and round_ == view.round:
            return weights, used
        config = snapshot.version.config
        loads = host_loads(config, view.hosts, snapshot.probe_targets)
        weights = {cdn_host(url): load.effective for url, load in loads.items()}
        used = {}
        if config.cdn_health.enabled and config.cdn_health.load == "utilization":
            for url in snapshot.probe_targets:
                report = view.hosts.get(url)
                if report is not None and report.reported is not None:
                    utilization = report.reported.utilization
                    if utilization is not None:
                        used[cdn_host(url)] = utilization
        self._cdn_load = (snapshot.current, view.round, weights, used)
        return weights, used

    async def flush(self) -> None:
        figures = self.gather()
        try:
            # In a thread: a write can wait on a busy disk (30 to 110 ms seen on a loaded
            # host), and the file of the largest configuration is 350 KB (a gauge per host).
            await asyncio.to_thread(self._files.write, figures)
        except OSError as error:  # /metrics misses this worker until it works again
            if not self._file_failed:
                log.warning("metrics_write_failed", error=str(error))
            self._file_failed = True
        else:
            self._file_failed = False
        fields = stats_fields(figures)
        delta = {
            name: count - self._flushed.get(name, 0)
            for name, count in fields.items()
            if count != self._flushed.get(name, 0)
        }
        unsent = self._unsent
        if not delta and not unsent.counts:
            return
        try:
            await self._store.add(delta, unsent)
        except StatsUnavailable as error:
            if not self._store_down:
                log.warning("stats_flush_failed", error=error.detail)
            self._store_down = True
            return
        if self._store_down:
            log.info("stats_flush_resumed")
        self._store_down = False
        self._flushed = fields
        self._unsent = ServerCounts()  # what the tally counted meanwhile is in a later take

    async def start(self) -> None:
        await self.flush()
        self._task = asyncio.create_task(self._run(), name="metrics-flusher")
        if self._tick is not None:
            self._ticking()

    def _ticking(self) -> None:
        assert self._tick is not None
        busy = bool(self._tally.pending)
        try:
            self._tally.tick()
        finally:  # re-armed whatever happens: the pending list must not grow unfolded
            # An idle worker ticks ten times slower: it wakes 10 times a second, not 100.
            delay = self._tick if busy else self._tick * IDLE_TICKS
            self._ticker = asyncio.get_running_loop().call_later(delay, self._ticking)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self.flush()  # the last counts of a worker that stops cleanly are not lost

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # the flusher must outlive any surprise; counts stay in memory
                log.exception("metrics_flush_failed")
