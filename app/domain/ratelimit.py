"""Per-client token buckets: the limits, which limit a client gets, and the local buckets.

A worker decides alone, from memory: `ClientLimiter.check` is a dict lookup and, for a
client below its limit, a decrement of the credit its bucket was granted. What it admitted
is counted per bucket and settled with a shared store in batches
(infrastructure/redis/ratelimit.py), whose answer clamps the local bucket to the client's
global balance, so a client spread over many workers is held to one limit.
"""

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from app.domain.errors import InvalidConfig

MAX_CAPACITY = 1_000_000
MAX_REFILL_PER_SECOND = 1_000_000.0
# A blocked client (capacity 0) never gets a token; this is what Retry-After tells it.
BLOCKED_RETRY_SECONDS = 3600.0
# A bucket asks for settlement early once it has admitted this share of (capacity + one
# second of refill) since it was last settled: the per-worker overshoot of the global limit.
SETTLE_SHARE = 0.05
MAX_SETTLE_THRESHOLD = 1000

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class InvalidLimit(InvalidConfig):
    """A rate limit or client id that cannot be enforced; `field` names the culprit."""

    code = "invalid-limit"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `capacity` tokens at most (the burst), `refill_per_second` added back.

    Capacity 0 blocks the client.
    """

    capacity: int
    refill_per_second: float

    def __post_init__(self) -> None:
        capacity = self.capacity
        if type(capacity) is not int or not 0 <= capacity <= MAX_CAPACITY:
            raise InvalidLimit("capacity", f"must be an integer from 0 to {MAX_CAPACITY:,}")
        refill = self.refill_per_second
        if (
            isinstance(refill, bool)
            or not isinstance(refill, int | float)
            or not 0 < refill <= MAX_REFILL_PER_SECOND
        ):
            raise InvalidLimit(
                "refill_per_second", f"must be a number above 0 and at most {MAX_CAPACITY:,}"
            )
        object.__setattr__(self, "refill_per_second", float(refill))

    @property
    def settle_threshold(self) -> int:
        share = int(SETTLE_SHARE * (self.capacity + self.refill_per_second))
        return max(1, min(MAX_SETTLE_THRESHOLD, share))


def parse_client_id(text: str) -> IPNetwork:
    """`203.0.113.7`, `2001:db8::1`, `10.0.0.0/8` or `2001:db8::/32`, as a network.

    A block with host bits set (`10.0.0.1/8`) is refused rather than guessed at.
    """
    if not isinstance(text, str) or not text or len(text) > 64:
        raise InvalidLimit("client_id", "must be an IPv4/IPv6 address or CIDR block")
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as error:
        raise InvalidLimit(
            "client_id", f"must be an IPv4/IPv6 address or CIDR block ({error})"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        raise InvalidLimit("client_id", "write IPv4-mapped addresses as IPv4")
    return network


def client_id_text(network: IPNetwork) -> str:
    """The canonical spelling: a bare address for a single host, else `address/prefix`."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@dataclass(frozen=True, slots=True)
class ClientLimit:
    """An admin's override for one address or block."""

    client_id: IPNetwork
    limit: RateLimit
    comment: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class LimitTable:
    """Which limit an address gets: the most specific override containing it, else the
    default (None: not limited)."""

    __slots__ = ("_blocks", "_exact", "default", "enabled")

    def __init__(self, default: RateLimit | None, overrides: Iterable[ClientLimit]) -> None:
        self.default = default
        self._exact: dict[str, RateLimit] = {}
        by_prefix: dict[tuple[int, int], dict[int, RateLimit]] = {}
        for override in overrides:
            network = override.client_id
            if network.prefixlen == network.max_prefixlen:
                self._exact[str(network.network_address)] = override.limit
            else:
                key = (network.version, network.prefixlen)
                shift = network.max_prefixlen - network.prefixlen
                by_prefix.setdefault(key, {})[int(network.network_address) >> shift] = (
                    override.limit
                )
        # Most specific first: the first block that holds the address wins.
        self._blocks = tuple(
            (version, max_bits - prefix, blocks)
            for (version, prefix), blocks in sorted(by_prefix.items(), key=lambda i: -i[0][1])
            for max_bits in ((32 if version == 4 else 128),)
        )
        self.enabled = default is not None or bool(self._exact) or bool(self._blocks)

    def resolve(self, address: str) -> RateLimit | None:
        found = self._exact.get(address)
        if found is not None:
            return found
        if not (self._blocks or self._exact):
            return self.default
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:  # not an address (a Unix socket peer): the default applies
            return self.default
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        found = self._exact.get(str(ip))
        if found is not None:
            return found
        number = int(ip)
        for version, shift, blocks in self._blocks:
            if version == ip.version:
                found = blocks.get(number >> shift)
                if found is not None:
                    return found
        return self.default


class Bucket:
    """One client's tokens in this worker, plus what it admitted since the last settlement.

    `credit` is admissions handed out in advance: tokens already taken from `tokens` that
    requests spend without reading the clock (tokens only grow with time, so spending them
    later is never more than the bucket allows). It never reaches past the settle threshold,
    so the admission that reaches it still goes through `ClientLimiter.check`'s slow path.
    `fold()` turns the spent part into `unsettled` and gives the rest back.
    """

    __slots__ = (
        "capacity",
        "credit",
        "dirty",
        "granted",
        "key",
        "rate",
        "stamp",
        "threshold",
        "tokens",
        "unsettled",
        "urgent",
    )

    def __init__(self, key: str, limit: RateLimit, now: float) -> None:
        self.key = key
        self.capacity = float(limit.capacity)
        self.rate = limit.refill_per_second
        self.threshold = limit.settle_threshold
        self.tokens = self.capacity
        self.stamp = now
        self.unsettled = 0
        self.credit = 0  # admissions left of the last grant
        self.granted = 0  # the size of that grant
        self.dirty = False
        self.urgent = False

    def fold(self) -> int:
        """Count the spent credit as admitted and return the rest to `tokens`; the
        admissions not yet settled."""
        credit = self.credit
        if self.granted:
            self.unsettled += self.granted - credit
            self.tokens += credit
            self.credit = self.granted = 0
        return self.unsettled

    def refill(self, now: float) -> float:
        """Tokens at `now`. A clock that went back refills nothing and loses nothing."""
        elapsed = now - self.stamp
        if elapsed > 0:
            tokens = self.tokens + elapsed * self.rate
            self.tokens = tokens if tokens < self.capacity else self.capacity
        self.stamp = now
        return self.tokens

    def take(self, now: float) -> float:
        """Take a token: 0.0 when admitted, else the seconds until one is available."""
        tokens = self.refill(now)
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        return self.wait(tokens)

    def wait(self, tokens: float) -> float:
        if self.capacity < 1.0:
            return BLOCKED_RETRY_SECONDS
        return (1.0 - tokens) / self.rate

    def settled(self, available: float, now: float) -> None:
        """The store's answer: the client's global balance after our last report. What this
        worker admitted since then comes off it; the bucket never gains from it."""
        global_now = available - self.fold()
        if self.refill(now) > global_now:
            self.tokens = global_now

    def idle(self, now: float) -> bool:
        """Full and settled: forgetting it loses nothing."""
        return self.fold() == 0 and self.refill(now) >= self.capacity


def retry_after_seconds(wait: float) -> int:
    """Retry-After: whole seconds until a token is available, at least 1."""
    return max(1, math.ceil(wait))


class ClientLimiter:
    """The buckets of the clients this worker sees, bounded in number and in idle time.

    Buckets live in two generations: a lookup that finds a bucket in the older one moves it
    to the newer; when the newer holds half of `max_clients`, or `idle_seconds` have passed,
    the older generation is dropped whole. So at most `max_clients` buckets are held, and
    one untouched for two periods is gone, at O(1) per request and no per-request ordering.
    A dropped bucket keeps nothing the store does not know once it is settled.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_clients: int = 100_000,
        idle_seconds: float = 60.0,
    ) -> None:
        self._clock = clock
        self._max_generation = max(1, max_clients // 2)
        self._idle_seconds = idle_seconds
        self._default: RateLimit | None = None
        self._overrides: tuple[ClientLimit, ...] = ()
        self.table = LimitTable(None, ())
        self._current: dict[str, Bucket | None] = {}
        self._previous: dict[str, Bucket | None] = {}
        self._rotated_at = clock()
        # Buckets with unsettled admissions: all of them are settled every period, the
        # urgent ones (past their threshold) as soon as the settler gets to them.
        self.dirty: list[Bucket] = []
        self.urgent: list[Bucket] = []
        self._on_urgent: Callable[[], None] = _nothing
        self._watchers: list[Callable[[bool], None]] = []

    # --- limits ---------------------------------------------------------------------

    def set_default(self, default: RateLimit | None) -> None:
        if default != self._default:
            self._default = default
            self._rebuild()

    def set_overrides(self, overrides: Iterable[ClientLimit]) -> None:
        overrides = tuple(overrides)
        if overrides != self._overrides:
            self._overrides = overrides
            self._rebuild()

    def _rebuild(self) -> None:
        # Cached resolutions (and buckets) belong to the old table. Unsettled admissions
        # stay referenced from the dirty lists until they are settled.
        self.table = LimitTable(self._default, self._overrides)
        self._current, self._previous = {}, {}
        for watcher in self._watchers:
            watcher(self.table.enabled)

    def watch(self, watcher: Callable[[bool], None]) -> None:
        """Call `watcher(enabled)` now and whenever limits are switched on or off."""
        self._watchers.append(watcher)
        watcher(self.table.enabled)

    def on_urgent(self, callback: Callable[[], None]) -> None:
        self._on_urgent = callback

    # --- the request path ---------------------------------------------------------------

    def check(self, client: str) -> float:
        """0.0 when `client` may have a request now, else the seconds until it may.

        A client below its limit and its settle threshold spends credit: a lookup and a
        decrement, no clock. The rest (a grant, a refusal, the threshold) is `_admit`.
        """
        bucket = self._current.get(client, _MISSING)
        if bucket is _MISSING:
            bucket = self._find(client)
        if bucket is None:
            return 0.0
        credit = bucket.credit
        if credit:
            bucket.credit = credit - 1
            return 0.0
        return self._admit(bucket)

    def _admit(self, bucket: Bucket) -> float:
        """The slow path of `check`: take a token, and grant credit for the requests that
        may follow before the threshold or the tokens run out."""
        unsettled = bucket.fold()
        tokens = bucket.refill(self._clock())
        if tokens < 1.0:
            return bucket.wait(tokens)
        tokens -= 1.0
        unsettled = bucket.unsettled = unsettled + 1
        if not bucket.dirty:
            bucket.dirty = True
            self.dirty.append(bucket)
        if unsettled >= bucket.threshold:
            credit = 0
            if not bucket.urgent:
                bucket.urgent = True
                self.urgent.append(bucket)
                self._on_urgent()
        else:
            # up to the admission before the threshold: that one comes back here
            credit = min(int(tokens), bucket.threshold - unsettled - 1)
        bucket.tokens = tokens - credit
        bucket.credit = bucket.granted = credit
        return 0.0

    def _find(self, client: str) -> Bucket | None:
        bucket = self._previous.pop(client, _MISSING)
        if bucket is _MISSING:
            limit = self.table.resolve(client)
            bucket = None if limit is None else Bucket(client, limit, self._clock())
        if len(self._current) >= self._max_generation:
            self.rotate()
        self._current[client] = bucket
        return bucket

    def now(self) -> float:
        return self._clock()

    # --- housekeeping -------------------------------------------------------------------

    def rotate(self) -> None:
        self._previous = self._current
        self._current = {}
        self._rotated_at = self._clock()

    def expire(self) -> None:
        """Drop buckets idle for a period or two; call it now and then (the settler does)."""
        if self._clock() - self._rotated_at >= self._idle_seconds:
            self.rotate()

    @property
    def tracked(self) -> int:
        return len(self._current) + len(self._previous)

    def take_dirty(self) -> list[Bucket]:
        """Every bucket with unsettled admissions, for a periodic settlement, folded (so
        `unsettled` is what to report)."""
        batch, self.dirty = self.dirty, []
        for bucket in batch:
            bucket.dirty = False
            bucket.fold()
        return batch

    def take_urgent(self) -> list[Bucket]:
        batch, self.urgent = self.urgent, []
        for bucket in batch:
            bucket.urgent = False
            bucket.fold()
        return batch


_MISSING: Bucket | None = Bucket("", RateLimit(0, 1.0), 0.0)


def _nothing() -> None:
    return None
