"""The application's ports: what the use cases need from outside, as Protocols that the
infrastructure implements, with the records they carry."""

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from app.domain.access import Actor, Identity
from app.domain.cdn_health import HostState
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.load import LoadReport
from app.domain.ratelimit import ClientLimit, IPNetwork, NetworkKey, RateLimit


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version as it was stored, for the history: checked when it was written and not
    again (the served one, `get_active`, is). `fields` holds each field of the
    configuration (`cdn_host`, `server_rules`, ... as the API names them) as JSON text, in
    the shape the API gives it."""

    version: int
    created_at: datetime
    comment: str | None
    fields: Mapping[str, str]
    actor: Actor | None = None  # None: written before the history recorded actors


class TokenVerifier(Protocol):
    """Judges a bearer JWT from an identity provider."""

    async def __call__(self, token: str) -> Identity:
        """The identity the token names (its role None when it carries none of ours);
        InvalidToken when it is not valid, whatever the reason."""
        ...


class ConfigRepository(Protocol):
    """Versioned configuration storage; every append is announced to every worker."""

    async def get_active(self) -> ConfigVersion:
        """The newest version. Raises StorageUnavailable."""
        ...

    async def append(
        self,
        config: BalancerConfig,
        *,
        after: int,
        comment: str | None,
        actor: Actor | None = None,
    ) -> ConfigVersion:
        """Store `config` as version `after + 1`, made by `actor`. Raises VersionConflict
        if that exists."""
        ...

    async def get(self, version: int) -> ConfigVersion | None: ...

    def history(self, *, limit: int, before: int | None) -> AsyncIterator[StoredVersion]:
        """Versions newest first, only those below `before` when it is given."""
        ...


class SequenceSource(Protocol):
    """Globally shared sequence numbers, handed out without I/O (the redirect path calls it)."""

    def next(self, key: str) -> int:
        """The next number of the sequence named `key` ("" is the global one)."""
        ...

    def peek(self, key: str) -> int:
        """The number `next(key)` would give in this worker, without taking it."""
        ...


class CountryLookup(Protocol):
    """The country of an IP address from a country database; the region matcher calls it on
    a cache miss, so it must not do I/O."""

    source: str  # where the data comes from, for /config/route and the logs

    def __call__(self, address: str) -> str | None:
        """An ISO 3166-1 alpha-2 code, or None when the address is unknown."""
        ...


class HealthCheck(Protocol):
    """A dependency's health as this worker sees it."""

    name: str

    async def __call__(self) -> str | None:
        """None when healthy, otherwise a short description of what is wrong."""
        ...


@dataclass(frozen=True, slots=True)
class LimitsRevision:
    """Where the stored overrides are: `revision` moves with every change, and the changes
    up to `pruned` are no longer kept (a worker behind it reads every override)."""

    revision: int
    pruned: int


@dataclass(frozen=True, slots=True)
class EnforcedPage:
    """Overrides as the limiter holds them (read without a network object each: a worker
    reads 100,000 of them), and the client id of the last one."""

    overrides: list[tuple[NetworkKey, RateLimit]]
    last: str | None


@dataclass(frozen=True, slots=True)
class LimitChange:
    """An override that `revision` created, replaced or removed (`limit` None), as it is now."""

    revision: int
    client_id: IPNetwork
    limit: RateLimit | None


@dataclass(frozen=True, slots=True)
class LimitEvent:
    """One change of an override in the history: `limit` and `comment` as it left it
    (None for a deletion), and who made it."""

    id: int
    changed_at: datetime
    action: str  # created, replaced or deleted
    client_id: IPNetwork
    limit: RateLimit | None
    comment: str | None
    actor: Actor | None


class LimitRepository(Protocol):
    """Stored overrides; every change is announced to every worker."""

    async def create(self, limit: ClientLimit) -> ClientLimit:
        """Raises LimitExists when the client id is taken, TooManyLimits past MAX_LIMITS."""
        ...

    async def get(self, client_id: IPNetwork) -> ClientLimit | None: ...

    async def page(self, *, limit: int, after: IPNetwork | None) -> list[ClientLimit]:
        """Overrides in client id order, only those after `after` when it is given."""
        ...

    async def replace(self, limit: ClientLimit) -> ClientLimit | None:
        """None when there is no such client id."""
        ...

    async def delete(self, client_id: IPNetwork, actor: Actor | None = None) -> bool: ...

    async def history(self, *, limit: int, before: int | None) -> list[LimitEvent]:
        """Changes of the overrides, newest first, those before the id `before` if given."""
        ...

    async def revision(self) -> LimitsRevision: ...

    async def changes(self, *, since: int, limit: int) -> tuple[LimitsRevision, list[LimitChange]]:
        """Where the overrides are, and those changed after revision `since` (at most
        `limit`, in revision order), read at once."""
        ...

    async def enforced(self, *, after: str | None, limit: int) -> EnforcedPage:
        """Overrides in client id order as a worker holds them, only those after the client
        id `after` when it is given."""
        ...

    async def count(self) -> int:
        """How many overrides are stored."""
        ...


# The upper bounds of Figures.steering_throughput, the throughput (bits per second) players
# report on a steering manifest reload (`_HLS_throughput`, `_DASH_throughput`).
THROUGHPUT_BUCKETS = (
    250e3,
    500e3,
    1e6,
    2e6,
    4e6,
    8e6,
    16e6,
    32e6,
    64e6,
    128e6,
    256e6,
    1e9,
)
# The upper bounds of Figures.buckets, the redirect's time inside the service: tens of
# microseconds; the buckets reach a slow event loop.
DURATION_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
)
# The upper bounds of the event loop's lag and busy histograms (app.infrastructure.loop_watch):
# a turn every 25 ms; 50 ms is what no admin action may make a redirect wait.
LOOP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


RedirectKey = tuple[str, str, int, str]  # target, CDN base URL, status, region


@dataclass(slots=True)
class Figures:
    """Counts and gauges of one worker (or, merged, of several) at one moment."""

    pid: int = 0
    started: float = 0.0  # wall clock
    live: bool = True
    redirects: dict[RedirectKey, int] = field(default_factory=dict)
    # by server label: the heaviest (ServerCounts), each within `server_error` of the truth
    servers: dict[str, int] = field(default_factory=dict)
    server_error: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    fallback: dict[str, int] = field(default_factory=dict)  # region -> origin fallbacks
    # region -> requests sent to the default pool because the region's had no healthy host
    region_fallback: dict[str, int] = field(default_factory=dict)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    backend_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    probe_round_failures: int = 0  # CDN prober rounds that failed unexpectedly
    clients_gone: int = 0  # connections their client closed with requests unanswered
    # Steering manifests by the pathway the player said it was on ("": none or unknown).
    steering_requests: dict[str, int] = field(default_factory=dict)
    # pathway -> reported throughput counts by THROUGHPUT_BUCKETS (+Inf last), and their sum
    steering_throughput: dict[str, list[int]] = field(default_factory=dict)
    steering_throughput_sum: dict[str, float] = field(default_factory=dict)
    # The event loop's lag and busy time per watch interval, by LOOP_BUCKETS (+Inf last).
    loop_lag: list[int] = field(default_factory=lambda: [0] * (len(LOOP_BUCKETS) + 1))
    loop_lag_sum: float = 0.0
    loop_busy: list[int] = field(default_factory=lambda: [0] * (len(LOOP_BUCKETS) + 1))
    loop_busy_sum: float = 0.0
    # Gauges: only live workers count.
    config_version: int = 0
    sequence_degraded: bool = False
    cdn_up: dict[str, bool] = field(default_factory=dict)  # CDN host -> up
    # CDN host -> the weight its rotations give it now, and its last reported utilization.
    cdn_weight: dict[str, float] = field(default_factory=dict)
    cdn_utilization: dict[str, float] = field(default_factory=dict)
    rate_limit_clients: int = 0
    origin_share: float | None = None  # the configured global split's origin share
    workers: int = 0  # merged: how many of the merged workers are live

    @property
    def total(self) -> int:
        return sum(self.redirects.values())


@dataclass(frozen=True, slots=True)
class StatsCounts:
    """The stats store's content: counters since `since` (wall clock), the heaviest servers
    (each within `server_error` of the truth), and the recent rate."""

    since: float
    fields: Mapping[str, int]
    requests_per_second: float | None
    servers: Mapping[str, int] = field(default_factory=dict)
    server_error: int = 0


class StatsStore(Protocol):
    """Counts of every worker of every instance since the last reset, per server label the
    heaviest MAX_SERVERS (a space-saving summary of the workers' summaries). Raises
    StatsUnavailable."""

    async def read(self) -> StatsCounts: ...

    async def reset(self) -> None: ...


class WorkerFigures(Protocol):
    """The figures each worker of this instance last published, dead workers included."""

    def read_all(self) -> list[Figures]: ...


class ProbeAnswer(NamedTuple):
    """What one probe found: `error` None when the host answered 2xx or 3xx in time, else
    what went wrong; `report` the load report of the answer (None: none, or not asked)."""

    error: str | None
    report: LoadReport | None = None


class CdnProbe(Protocol):
    """One health check request to a CDN host."""

    async def answer(self, url: str, *, method: str, timeout: float, load: str) -> ProbeAnswer:
        """Probe `url` within `timeout`; with `load` "agent" or "utilization" also read the
        load report the answer carries. Never raises for anything the host does."""
        ...


@dataclass(frozen=True, slots=True)
class BoardView:
    """The board's content: host states by base URL, and the prober's round counter (it
    moves on every publication, so a reader can tell a live prober from a dead one)."""

    hosts: Mapping[str, HostState]
    round: int


class HealthBoard(Protocol):
    """The cluster's shared view of CDN host health. Raises HealthBoardUnavailable."""

    async def read(self) -> BoardView: ...

    async def publish(self, hosts: Mapping[str, HostState]) -> bool:
        """Replace the states, if this process still holds the prober lease (True then)."""
        ...
