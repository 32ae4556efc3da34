"""CDN host health: one elected prober per cluster, every worker reading what it publishes."""

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import structlog

from app.application.ports import CdnProbe, HealthBoard, ProbeAnswer
from app.application.snapshot import ConfigSnapshot
from app.domain.cdn_health import HealthSettings, HostState
from app.domain.config import BalancerConfig
from app.domain.errors import BalancerError

log = structlog.get_logger(__name__)

UNKNOWN = HostState()
# How long past its own timeout a probe may run (closing its connection, say) before the
# round stops waiting for it: one host never holds the others' verdicts back for longer.
PROBE_GRACE_SECONDS = 0.2


class HealthBoardUnavailable(BalancerError):
    """The shared health board (Redis) could not be read or written."""

    code = "health-board-unavailable"


class ProbeCdnHosts:
    """One round of the elected prober: probe every configured CDN host at once, apply
    `fall`/`rise`, log state changes, publish. Runs every `interval_seconds`.

    Each host's probe is on its own: whatever it raises, or however long it overruns its
    timeout, counts as that host's failed check, and the round still publishes every host.
    """

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        probe: CdnProbe,
        board: HealthBoard,
    ) -> None:
        self._snapshot = snapshot
        self._probe = probe
        self._board = board
        self.clock: Callable[[], float] = time.time

    @property
    def settings(self) -> HealthSettings:
        return self._snapshot.version.config.cdn_health

    async def __call__(self) -> dict[str, HostState]:
        config = self._snapshot.version.config
        settings = config.cdn_health
        if not settings.enabled:
            return {}
        previous = (await self._board.read()).hosts
        targets = config.probe_targets()
        answers = await asyncio.gather(
            *(self._check(url, settings, previous.get(url, UNKNOWN)) for url in targets)
        )
        now = self.clock()
        states = {}
        for url, (error, report) in zip(targets, answers, strict=True):
            before = previous.get(url, UNKNOWN)
            after = before.observe(error, now, settings, report)
            if after.healthy != before.healthy:
                if after.healthy:
                    log.info("cdn_up", host=url, reason=f"{settings.rise} checks passed")
                else:
                    log.warning("cdn_down", host=url, reason=after.last_error)
            if after.load_error != before.load_error and after.load_error is not None:
                log.warning("cdn_load_report_ignored", host=url, error=after.load_error)
            states[url] = after
        if not await self._board.publish(states):
            log.info("cdn_prober_lease_lost")
        return states

    async def _check(self, url: str, settings: HealthSettings, before: HostState) -> ProbeAnswer:
        timeout = settings.timeout_seconds
        try:
            async with asyncio.timeout(timeout + PROBE_GRACE_SECONDS):
                return await self._probe.answer(
                    f"{url}{settings.path}",
                    method=settings.method,
                    timeout=timeout,
                    load=settings.load,
                )
        except TimeoutError:
            return ProbeAnswer(f"no answer within {timeout:g} s")
        except Exception as error:
            problem = f"probe failed: {type(error).__name__} (a bug of the prober: see its log)"
            if before.last_error != problem:  # the traceback once, not every round
                log.exception("cdn_probe_failed", host=url)
            return ProbeAnswer(problem)


class CdnHealthView:
    """This worker's copy of the board, and whether it is current."""

    __slots__ = (
        "hosts",
        "last_change",
        "last_read",
        "prober",
        "read_error",
        "round",
        "round_failures",
    )

    def __init__(self) -> None:
        self.hosts: Mapping[str, HostState] = {}
        self.round: int | None = None
        # time.monotonic() of the last read that succeeded and of the last round change seen.
        self.last_read: float | None = None
        self.last_change: float | None = None
        self.read_error: str | None = None
        self.prober = False  # this worker holds the prober lease
        # Rounds this worker ran as the prober that failed for an unexpected reason.
        self.round_failures = 0


class RefreshCdnHealth:
    """Every worker, several times a second: read the board, route around the hosts it
    shows down. When the board cannot be read, the last known state stays in force."""

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        board: HealthBoard,
        view: CdnHealthView,
    ) -> None:
        self._snapshot = snapshot
        self._board = board
        self._view = view
        self.clock: Callable[[], float] = time.monotonic

    async def __call__(self) -> None:
        view = self._view
        try:
            board = await self._board.read()
        except HealthBoardUnavailable as error:
            if view.read_error is None:
                log.warning("cdn_health_stale", error=error.detail)
            view.read_error = error.detail
            return
        now = self.clock()
        if view.read_error is not None:
            log.info("cdn_health_current")
        view.read_error = None
        view.last_read = now
        if board.round != view.round:
            view.round = board.round
            view.last_change = now
        view.hosts = board.hosts
        if self._snapshot.loaded:
            down, percents = set(), {}
            for url in self._snapshot.probe_targets:
                state = board.hosts.get(url, UNKNOWN)
                if not state.healthy:
                    down.add(url)
                elif state.weight_percent != 100:
                    percents[url] = state.weight_percent
            self._snapshot.mark_down(frozenset(down), percents)


def stale_after(settings: HealthSettings) -> float:
    """How long a view may go without a new prober round before it is called stale."""
    return 2 * settings.interval_seconds + settings.timeout_seconds + 1.0


class HostLoad(NamedTuple):
    """One host's weight as the routers apply it: `effective` is `configured` times the
    host's share from load reports and slow start, 0 while it is down or drained."""

    configured: int
    effective: float


def host_loads(
    config: BalancerConfig, hosts: Mapping[str, HostState], targets: Iterable[str]
) -> dict[str, HostLoad]:
    """The weights of `targets` (base URLs) from the health states in `hosts`. A host that
    is in several pools counts with its weight in the first (see `host_weights`)."""
    weights = config.host_weights()
    enabled = config.cdn_health.enabled
    loads = {}
    for url in targets:
        configured = weights.get(url, 1)
        state = hosts.get(url, UNKNOWN)
        if not enabled:
            effective = float(configured)
        elif not state.healthy:
            effective = 0.0
        else:
            effective = configured * state.weight_percent / 100
        loads[url] = HostLoad(configured, effective)
    return loads


@dataclass(frozen=True, slots=True)
class CdnHealthReport:
    hosts: list[tuple[str, HostState]]
    enabled: bool
    stale: str | None
    prober: bool
    fallbacks_to_origin: int
    refused: int
    # Requests by region sent to the default pool because the region's had no healthy host.
    regions_to_default: Mapping[str, int] = field(default_factory=dict)
    loads: Mapping[str, HostLoad] = field(default_factory=dict)  # by base URL


class GetCdnHealth:
    """The health of every configured CDN host as this worker knows it."""

    def __init__(
        self,
        snapshot: ConfigSnapshot,
        view: CdnHealthView,
    ) -> None:
        self._snapshot = snapshot
        self._view = view
        self.clock: Callable[[], float] = time.monotonic

    async def __call__(self) -> CdnHealthReport:
        config = self._snapshot.version.config
        settings = config.cdn_health
        targets = self._snapshot.probe_targets
        hosts = [(url, self._view.hosts.get(url, UNKNOWN)) for url in targets]
        return CdnHealthReport(
            loads=host_loads(config, self._view.hosts, targets),
            hosts=hosts,
            enabled=settings.enabled,
            stale=self.staleness(settings) if settings.enabled else None,
            prober=self._view.prober,
            fallbacks_to_origin=self._snapshot.fallbacks.origin,
            refused=self._snapshot.fallbacks.refused,
            regions_to_default=dict(self._snapshot.fallbacks.regions),
        )

    def staleness(self, settings: HealthSettings) -> str | None:
        """None while the view is current, else why it is not."""
        view = self._view
        if view.read_error is not None:
            return f"health board unreadable ({view.read_error}); keeping the last known state"
        limit = stale_after(settings)
        if view.last_change is None or self.clock() - view.last_change > limit:
            return f"no prober round for over {limit:g} s; keeping the last known state"
        return None


class CdnHealthCheck:
    """Readiness: `stale` when this worker's view of CDN health is not current."""

    name = "cdn_health"

    def __init__(self, get: GetCdnHealth, snapshot: ConfigSnapshot) -> None:
        self._get = get
        self._snapshot = snapshot

    async def __call__(self) -> str | None:
        if not self._snapshot.loaded:
            return None
        settings = self._snapshot.version.config.cdn_health
        # Not the whole report: /ready is asked every second or so, and the report lists
        # every host (8,192 at most).
        stale = self._get.staleness(settings) if settings.enabled else None
        return None if stale is None else f"stale: {stale}"
