"""Per-client token buckets: the limits, which limit a client gets, and the local buckets.

A worker decides alone, from memory: `ClientLimiter.check` is a dict lookup and, for a
client below its limit, a decrement of the credit its bucket was granted. What it admitted
is counted per bucket and settled with a shared store in batches
(infrastructure/redis/ratelimit.py), whose answer clamps the local bucket to the client's
global balance, so a client spread over many workers is held to one limit.

A client is an identity, not an address string: an IPv4 address, or the IPv6 block of
`ipv6_prefix` bits (a /64 by default) holding the address, so a client rotating through the
addresses of its own /64, or spelling one address several ways, has one bucket. An override
more specific than that (an IPv6 /128 inside a /64) has a bucket of its own.
"""

import ipaddress
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from app.domain.access import Actor
from app.domain.errors import InvalidConfig

MAX_CAPACITY = 1_000_000
MAX_REFILL_PER_SECOND = 1_000_000.0
# A blocked client (capacity 0) never gets a token; this is what Retry-After tells it.
BLOCKED_RETRY_SECONDS = 3600.0
# A bucket asks for settlement early once it has admitted this share of (capacity + one
# second of refill) since it was last settled: the per-worker overshoot of the global limit.
SETTLE_SHARE = 0.05
MAX_SETTLE_THRESHOLD = 1000

IPv6_IDENTITY_PREFIX = 64
# Address spellings remembered per client (an IPv6 client rotating through its /64 would
# otherwise fill the memo); past it the oldest is forgotten.
MAX_ALIASES = 32
# Overrides compared, or buckets re-checked, between two yields of a long change: a few ms.
SLICE = 1000
# The credit of a client no limit applies to: never spent, so it never takes the slow path.
UNLIMITED = 1 << 62

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# An override's place in the table: (IP version, prefix length, network number >> host bits).
NetworkKey = tuple[int, int, int]


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
    if "%" in text:  # a zone names an interface of one host; stored, it would be dropped
        raise InvalidLimit("client_id", "must not carry a zone (`%eth0`): write the address alone")
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
    actor: Actor | None = None  # who created or last replaced it


def network_key(network: IPNetwork) -> NetworkKey:
    shift = network.max_prefixlen - network.prefixlen
    return network.version, network.prefixlen, int(network.network_address) >> shift


def _max_bits(version: int) -> int:
    return 32 if version == 4 else 128


class LimitTable:
    """Which limit an address gets: the most specific override containing it, else the
    default (None: not limited).

    Changed one override at a time. Overrides are kept by prefix length, so finding the one
    for an address costs a dict probe per prefix length in use, whatever their number.
    """

    __slots__ = ("_groups", "_limits", "_order", "default")

    def __init__(
        self, default: RateLimit | None = None, overrides: Iterable[ClientLimit] = ()
    ) -> None:
        self.default = default
        self._groups: dict[tuple[int, int], dict[int, RateLimit]] = {}
        self._limits: dict[RateLimit, RateLimit] = {}
        # (version, prefix length, host bits, group), most specific first
        self._order: tuple[tuple[int, int, int, dict[int, RateLimit]], ...] = ()
        for override in overrides:
            self.put(network_key(override.client_id), override.limit)

    @property
    def enabled(self) -> bool:
        return self.default is not None or bool(self._groups)

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def get(self, key: NetworkKey) -> RateLimit | None:
        group = self._groups.get(key[:2])
        return None if group is None else group.get(key[2])

    def put(self, key: NetworkKey, limit: RateLimit | None) -> RateLimit | None:
        """Store (or, with None, remove) the override at `key`; the one it replaced."""
        version, prefixlen, number = key
        group = self._groups.get((version, prefixlen))
        if limit is None:
            if group is None:
                return None
            previous = group.pop(number, None)
            if not group:
                del self._groups[version, prefixlen]
                self._reorder()
            return previous
        if group is None:
            group = self._groups[version, prefixlen] = {}
            self._reorder()
        previous = group.get(number)
        # Overrides mostly share a few limits: one object each keeps 100,000 overrides
        # from being 100,000 objects for the garbage collector to walk.
        if len(self._limits) >= 4096:  # a bound on the ones no longer used
            self._limits = {}
        group[number] = self._limits.setdefault(limit, limit)
        return previous

    def groups(self) -> list[tuple[int, int]]:
        """(version, prefix length) of the overrides stored."""
        return list(self._groups)

    def numbers(self, version: int, prefixlen: int) -> list[int]:
        """The network numbers of the overrides of one prefix length."""
        return list(self._groups.get((version, prefixlen), ()))

    def _reorder(self) -> None:
        self._order = tuple(
            (version, prefixlen, _max_bits(version) - prefixlen, group)
            for (version, prefixlen), group in sorted(
                self._groups.items(), key=lambda item: -item[0][1]
            )
        )

    def decide(self, version: int, number: int, longest: int = 128) -> tuple[int, RateLimit | None]:
        """The prefix length of the most specific override no longer than `longest` that
        holds the address `number`, and its limit; (-1, the default) when none does."""
        for group_version, prefixlen, shift, group in self._order:
            if group_version == version and prefixlen <= longest:
                found = group.get(number >> shift)
                if found is not None:
                    return prefixlen, found
        return -1, self.default

    def resolve(self, address: str) -> RateLimit | None:
        parsed = _address(address)
        return self.default if parsed is None else self.decide(*parsed)[1]


def _address(text: str) -> tuple[int, int] | None:
    """(version, number) of an address, IPv4-mapped ones as IPv4; None if not an address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:  # a Unix socket peer has none
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version, int(ip)


def _text(key: NetworkKey) -> str:
    """client_id_text() of the network at `key`: a client's key in the buckets and in the
    shared store."""
    version, prefixlen, number = key
    bits = _max_bits(version)
    number <<= bits - prefixlen
    if version == 4:  # what str(IPv4Address) spells, at a fraction of its cost
        address = f"{number >> 24}.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
    else:
        address = str(ipaddress.IPv6Address(number))
    return address if prefixlen == bits else f"{address}/{prefixlen}"


class Bucket:
    """One client's tokens in this worker, plus what it admitted since the last settlement.

    `credit` is admissions handed out in advance: tokens already taken from `tokens` that
    requests spend without reading the clock (tokens only grow with time, so spending them
    later is never more than the bucket allows). It never reaches past the settle threshold,
    so the admission that reaches it still goes through `ClientLimiter.check`'s slow path.
    `fold()` turns the spent part into `unsettled` and gives the rest back.

    A client no limit applies to has a bucket too (`limit` None), whose credit never runs
    out: the request path does not tell the two apart, and a change that limits the client
    finds its bucket. `version`, `number` and `prefixlen` are the client's network,
    `decided_by` the prefix length of the override that chose `limit` (-1: the default),
    `aliases` the other spellings that lead to this bucket.
    """

    __slots__ = (
        "aliases",
        "capacity",
        "credit",
        "decided_by",
        "dirty",
        "granted",
        "key",
        "limit",
        "next_alias",
        "number",
        "prefixlen",
        "rate",
        "stamp",
        "threshold",
        "tokens",
        "unsettled",
        "urgent",
        "version",
    )

    def __init__(self, key: str, limit: RateLimit | None, now: float) -> None:
        self.key = key
        self.limit = limit
        if limit is None:
            self.capacity, self.rate, self.threshold = 0.0, 1.0, 1
        else:
            self.capacity = float(limit.capacity)
            self.rate = limit.refill_per_second
            self.threshold = limit.settle_threshold
        self.tokens = self.capacity
        self.stamp = now
        self.unsettled = 0
        self.credit = 0 if limit is not None else UNLIMITED  # admissions left of the last grant
        self.granted = 0  # the size of that grant
        self.dirty = False
        self.urgent = False
        self.version = self.number = self.prefixlen = 0
        self.decided_by = -1
        self.aliases: list[str] | None = None
        self.next_alias = 0

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

    Buckets live in two generations of a dict from address spelling (and from identity key)
    to bucket: a lookup that finds a bucket in the older one moves it to the newer; when the
    newer holds half of `max_clients` entries, or `idle_seconds` have passed, the older
    generation is dropped whole. So at most `max_clients` entries are held, and one
    untouched for two periods is gone, at O(1) per request and no per-request ordering.
    A dropped bucket keeps nothing the store does not know once it is settled.

    A change of one override touches the buckets it decides only: the client's own bucket
    at once, those inside a block (or under a changed default) by `sweep()`, a slice at a
    time. A bucket a change touches starts afresh under its new limit; every other keeps
    its tokens.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_clients: int = 100_000,
        idle_seconds: float = 60.0,
        ipv6_prefix: int = IPv6_IDENTITY_PREFIX,
    ) -> None:
        self._clock = clock
        self._max_generation = max(1, max_clients // 2)
        self._idle_seconds = idle_seconds
        self._ipv6_prefix = ipv6_prefix
        self.table = LimitTable()
        self._current: dict[str, Bucket] = {}
        self._previous: dict[str, Bucket] = {}
        self._rotated_at = clock()
        # Blocks changed since the last sweep, by (version, prefix length); or all of them.
        self._changed: dict[tuple[int, int], set[int]] = {}
        self._changed_all = False
        # Buckets with unsettled admissions: all of them are settled every period, the
        # urgent ones (past their threshold) as soon as the settler gets to them.
        self.dirty: list[Bucket] = []
        self.urgent: list[Bucket] = []
        self._on_urgent: Callable[[], None] = _nothing
        self._watchers: list[Callable[[bool], None]] = []

    # --- limits ---------------------------------------------------------------------

    def set_default(self, default: RateLimit | None) -> None:
        if default == self.table.default:
            return
        enabled = self.table.enabled
        self.table.default = default
        self._changed_all = True
        self._switched(enabled)

    def change(self, key: NetworkKey, limit: RateLimit | None) -> bool:
        """Store the override at `key` (None removes it); False when it was so already.

        The bucket of a client the override is (or is inside of) starts afresh now; those
        inside a block wait for `sweep()`.
        """
        enabled = self.table.enabled
        previous = self.table.put(key, limit)
        if previous is limit or (previous is not None and previous == limit):
            return False
        version, prefixlen, number = key
        identity = 32 if version == 4 else self._ipv6_prefix
        if prefixlen < identity:
            self._changed.setdefault((version, prefixlen), set()).add(number)
        else:
            self._forget(self._entry(_text(key)))  # its own, not one it is a spelling of
            if prefixlen > identity:  # its addresses were, or now are, spellings of their /64
                self._forget_aliases_within(key, identity)
        self._switched(enabled)
        return True

    def resync(self) -> "Resync":
        """A full reload of the overrides that changes only those that differ."""
        return Resync(self)

    def sweep(self) -> Iterator[None]:
        """Give the buckets inside changed blocks (every bucket, after a change of the
        default) the limit the table now decides, a fresh bucket where it differs; yields
        every SLICE buckets. Buckets made meanwhile are decided by the new table."""
        while self._changed or self._changed_all:
            changed = [
                (version, prefixlen, _max_bits(version) - prefixlen, numbers)
                for (version, prefixlen), numbers in self._changed.items()
            ]
            everything = self._changed_all
            self._changed, self._changed_all = {}, False
            buckets = [*self._current.values(), *self._previous.values()]
            for start in range(0, len(buckets), SLICE):
                for bucket in buckets[start : start + SLICE]:
                    if (everything or _inside(bucket, changed)) and self._stale(bucket):
                        self._forget(bucket)
                yield

    def _stale(self, bucket: Bucket) -> bool:
        decided_by, limit = self.table.decide(bucket.version, bucket.number, bucket.prefixlen)
        return decided_by != bucket.decided_by or limit != bucket.limit

    def _switched(self, enabled: bool) -> None:
        if self.table.enabled != enabled:
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

        A client below its limit and its settle threshold (or not limited at all) spends
        credit: a lookup and a decrement, no clock. The rest (a grant, a refusal, the
        threshold) is `_admit`.
        """
        bucket = self._current.get(client)
        if bucket is None:
            bucket = self._find(client)
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

    def _find(self, client: str) -> Bucket:
        """The bucket of `client`, not in the newer generation: moved there from the older
        one, or found by the client's identity, or made."""
        if len(self._current) >= self._max_generation:
            self.rotate()
        current = self._current
        bucket = self._previous.pop(client, None)
        if bucket is None:
            bucket = self._identify(client)
            if bucket.key != client:
                self._remember(bucket, client)
        elif bucket.key != client and current.get(bucket.key) is not bucket:
            self._previous.pop(bucket.key, None)  # a spelling moves with its identity
            current[bucket.key] = bucket
        current[client] = bucket
        return bucket

    def _identify(self, client: str) -> Bucket:
        """The bucket of the client `client` is a spelling of, in the newer generation."""
        key = ""  # not an address (a Unix socket peer): one client for all of them
        version = number = prefixlen = 0
        decided_by, limit = -1, self.table.default
        parsed = _address(client)
        if parsed is not None:
            version, number = parsed
            identity = 32 if version == 4 else self._ipv6_prefix
            decided_by, limit = self.table.decide(version, number)
            prefixlen = max(decided_by, identity)
            shift = _max_bits(version) - prefixlen
            key = _text((version, prefixlen, number >> shift))
            number = number >> shift << shift
        bucket = self._entry(key)
        if bucket is None:
            bucket = Bucket(key, limit, self._clock())
            bucket.version, bucket.number, bucket.prefixlen = version, number, prefixlen
            bucket.decided_by = decided_by
        self._previous.pop(key, None)
        self._current[key] = bucket
        return bucket

    def _remember(self, bucket: Bucket, alias: str) -> None:
        aliases = bucket.aliases
        if aliases is None:
            bucket.aliases = [alias]
        elif len(aliases) < MAX_ALIASES:
            aliases.append(alias)
        else:
            slot = bucket.next_alias
            bucket.next_alias = (slot + 1) % MAX_ALIASES
            self._drop(aliases[slot], bucket)
            aliases[slot] = alias

    def _entry(self, key: str) -> Bucket | None:
        """The bucket whose identity is `key`."""
        bucket = self._current.get(key) or self._previous.get(key)
        return bucket if bucket is not None and bucket.key == key else None

    def _forget(self, bucket: Bucket | None) -> None:
        """Drop `bucket` and its spellings; the client's next request makes a fresh one.
        Its unsettled admissions stay referenced from the dirty lists until settled."""
        if bucket is not None:
            self._drop(bucket.key, bucket)
            for alias in bucket.aliases or ():
                self._drop(alias, bucket)

    def _drop(self, name: str, bucket: Bucket) -> None:
        for entries in (self._current, self._previous):
            if entries.get(name) is bucket:
                del entries[name]

    def _forget_aliases_within(self, key: NetworkKey, identity: int) -> None:
        version, prefixlen, number = key
        bucket = self._entry(_text((version, identity, number >> (prefixlen - identity))))
        if bucket is None:
            return
        shift = _max_bits(version) - prefixlen
        for alias in list(bucket.aliases or ()):
            parsed = _address(alias)
            if parsed is not None and parsed[1] >> shift == number:
                self._drop(alias, bucket)

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
        """Entries held: a client's identity, and each other spelling seen of it."""
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


class Resync:
    """Makes the stored overrides exactly those it is fed, a page at a time, then `finish()`
    removes the ones it was not fed. Overrides that did not change keep their buckets."""

    def __init__(self, limiter: ClientLimiter) -> None:
        self._limiter = limiter
        self._seen: set[int] = set()  # packed keys: ints, which the collector never walks
        self.count = 0

    def page(self, overrides: Iterable[tuple[NetworkKey, RateLimit]]) -> None:
        limiter, table, seen = self._limiter, self._limiter.table, self._seen
        for key, limit in overrides:
            seen.add(_packed(key))
            stored = table.get(key)
            if stored is not limit and stored != limit:
                limiter.change(key, limit)
            self.count += 1

    def finish(self) -> Iterator[None]:
        """Remove the overrides not fed; yields every SLICE of them looked at."""
        seen, limiter = self._seen, self._limiter
        for version, prefixlen in limiter.table.groups():
            numbers = limiter.table.numbers(version, prefixlen)
            for start in range(0, len(numbers), SLICE):
                for number in numbers[start : start + SLICE]:
                    key = (version, prefixlen, number)
                    if _packed(key) not in seen:
                        limiter.change(key, None)
                yield


def _packed(key: NetworkKey) -> int:
    version, prefixlen, number = key
    return (number << 8 | prefixlen) << 1 | (version == 6)


def _inside(bucket: Bucket, changed: list[tuple[int, int, int, set[int]]]) -> bool:
    for version, prefixlen, shift, numbers in changed:
        if (
            version == bucket.version
            and prefixlen <= bucket.prefixlen
            and bucket.number >> shift in numbers
        ):
            return True
    return False


def _nothing() -> None:
    return None
