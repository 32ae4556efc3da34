from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, reduce
from math import gcd
from operator import add
from typing import NamedTuple

from app.domain.errors import InvalidConfig
from app.domain.load import effective_weights
from app.domain.pacing import pace, paced
from app.domain.syntax import PATHWAY, cdn_base_url

MAX_POOL_HOSTS = 64
# Over all the pools of a configuration (global, regions, servers'): every entry is checked
# and compiled in each version a worker reads, and probed. 64 regions of 64 hosts fit.
MAX_HOSTS_IN_ALL = 8192
MAX_HOST_WEIGHT = 1000
# A rotation whose (gcd-reduced) weights sum to at most this is laid out once as a schedule
# and walked by index; larger ones run the smooth weighted round robin step by step.
_MAX_SCHEDULE = 4096
# A rotation whose weights load reports scale is laid out in at most this many slots: its
# schedule is made again whenever a report moves, in every worker, so it must be cheap
# (0.4 ms for 64 members), and a slot is 0.1% of the pool, finer than any report is read.
_MAX_SCALED_SCHEDULE = 1000


class CdnHost(NamedTuple):
    """One member of a CDN pool: `host` as configured, `base_url` as redirects use it,
    `pathway` its content steering pathway id ("": not steered)."""

    host: str
    weight: int
    base_url: str
    pathway: str = ""


def _base_url(host: object, field: str, index: int | None = None) -> str:
    """`cdn_base_url(host)`; an error names `field`, or its entry `index`'s host."""
    try:
        return cdn_base_url(host)  # type: ignore[arg-type]
    except InvalidConfig as error:
        named = field if index is None else f"{field}[{index}].host"
        raise InvalidConfig(named, error.detail.partition(": ")[2] or error.detail) from None


def _pathway(value: object, field: str, taken: set[str]) -> str:
    if not isinstance(value, str) or not PATHWAY.fullmatch(value):
        raise InvalidConfig(field, "must be 1 to 64 letters, digits, '.', '-' or '_'")
    if value in taken:
        raise InvalidConfig(field, f"{value!r} is already a pathway of the pool")
    taken.add(value)
    return value


@dataclass(frozen=True, slots=True)
class CdnPool:
    """The CDN hosts redirects are spread over, with their weights (1 to 64 distinct hosts)."""

    hosts: tuple[CdnHost, ...]

    @classmethod
    def of(cls, entries: Iterable[tuple[object, ...]], field: str = "cdn_hosts") -> "CdnPool":
        """Validate `(host, weight)` or `(host, weight, pathway)` entries (pathway None or
        absent: not steered); errors name the entry (`cdn_hosts[1].weight`)."""
        hosts: list[CdnHost] = []
        seen: set[str] = set()
        pathways: set[str] = set()
        for index, entry in enumerate(paced(entries)):
            host, weight = entry[0], entry[1]
            if index >= MAX_POOL_HOSTS:
                raise InvalidConfig(field, f"at most {MAX_POOL_HOSTS} hosts")
            base_url = _base_url(host, field, index)
            if type(weight) is not int or not 1 <= weight <= MAX_HOST_WEIGHT:
                raise InvalidConfig(
                    f"{field}[{index}].weight", f"must be an integer from 1 to {MAX_HOST_WEIGHT}"
                )
            if base_url in seen:
                raise InvalidConfig(f"{field}[{index}].host", f"{host!r} is already in the pool")
            seen.add(base_url)
            pathway = entry[2] if len(entry) > 2 else None
            if pathway is None:
                hosts.append(CdnHost(str(host), weight, base_url))
            else:
                pathway = _pathway(pathway, f"{field}[{index}].pathway", pathways)
                hosts.append(CdnHost(str(host), weight, base_url, pathway))
        if not hosts:
            raise InvalidConfig(field, f"must list from 1 to {MAX_POOL_HOSTS} hosts")
        return cls(tuple(hosts))

    @classmethod
    def single(cls, host: str, field: str = "cdn_host") -> "CdnPool":
        return cls((CdnHost(host, 1, _base_url(host, field)),))

    @property
    def first(self) -> CdnHost:
        return self.hosts[0]

    @property
    def base_urls(self) -> tuple[str, ...]:
        return tuple(host.base_url for host in self.hosts)


def smooth_weighted_order(weights: Sequence[int], count: int) -> list[int]:
    """The first `count` picks (indexes into `weights`) of nginx's smooth weighted round robin.

    Each pick adds every member's weight to its running score, takes the highest score and
    lowers it by the total: 5:1:1 gives a a b a c a a, never a burst of one member. Over any
    `sum(weights)` consecutive picks each member is picked exactly `weight` times.
    """
    total = sum(weights)
    scores = [0] * len(weights)
    order = []
    for _ in range(count):
        pace()
        # One pick in C calls (max() and index() take the first highest, as nginx does):
        # 64 members over a period of 4096 cost 15 ms instead of 25.
        scores = list(map(add, scores, weights))
        best = scores.index(max(scores))
        scores[best] -= total
        order.append(best)
    return order


@lru_cache(maxsize=256)
def _period_order(weights: tuple[int, ...]) -> tuple[int, ...]:
    """One period of the smooth order; pools with the same weights share it, and a health
    change that rebuilds every rotation finds most of them here."""
    return tuple(smooth_weighted_order(weights, sum(weights)))


class Rotation:
    """The healthy members of one pool in smooth weighted round robin order, for one worker.

    Built for a (pool, down hosts, load percents) triple; `next()` is what a CDN-bound
    redirect pays: an index step through a precomputed schedule, or None when no member is
    healthy. `only` is the base URL when exactly one member takes viewers, so a pool of one
    costs no call at all. `percents` (base URL -> percent of the configured weight, 100
    when absent) scale the weights: a member at 0 (drained) takes viewers only when every
    healthy member is at 0.
    """

    __slots__ = (
        "_down",
        "_length",
        "_members",
        "_percent_key",
        "_pool",
        "_position",
        "_schedule",
        "_scores",
        "_weights",
        "healthy",
        "only",
        "weights",
    )

    def __init__(
        self,
        pool: CdnPool,
        down: frozenset[str] = frozenset(),
        percents: Mapping[str, int] | None = None,
    ) -> None:
        self._pool = pool
        self._down = down
        members = [host for host in pool.hosts if host.base_url not in down]
        self.healthy: tuple[str, ...] = tuple(host.base_url for host in members)
        self._percent_key = _percent_key(self.healthy, percents)
        configured = [host.weight for host in members]
        load = percents is not None and any(url in percents for url in self.healthy)
        if percents is not None and load:
            scaled = effective_weights(configured, [percents.get(url, 100) for url in self.healthy])
        else:
            scaled = configured
        # Base URL -> the weight this rotation gives it (0: drained).
        self.weights: dict[str, int] = dict(zip(self.healthy, scaled, strict=True))
        taking = [(url, weight) for url, weight in self.weights.items() if weight]
        self._members: tuple[str, ...] = tuple(url for url, _ in taking)
        self.only = self._members[0] if len(taking) == 1 else ""
        weights = _fitted([weight for _, weight in taking], scaled=load)
        self._weights = weights
        self._scores = [0] * len(weights)
        self._position = 0
        if sum(weights) <= _MAX_SCHEDULE:
            order = _spread_order(tuple(weights)) if load else _period_order(tuple(weights))
            self._schedule: tuple[str, ...] = tuple(map(self._members.__getitem__, order))
        else:
            self._schedule = ()
        self._length = len(self._schedule)

    def reweigh(self, percents: Mapping[str, int] | None) -> bool:
        """Take new percents in place (the schedule made again from its start) when they
        change any healthy member's; True if they did. Cheaper than a new router: only
        pools whose members' reports moved are laid out again."""
        if _percent_key(self.healthy, percents) == self._percent_key:
            return False
        Rotation.__init__(self, self._pool, self._down, percents)
        return True

    def next(self) -> str | None:
        """The base URL of the next healthy member, or None when none is healthy."""
        length = self._length
        if length:
            position = self._position
            self._position = position + 1 if position + 1 < length else 0
            return self._schedule[position]
        if not self.healthy:
            return None
        return self._step()

    def peek(self) -> str | None:
        """What `next()` would answer, without moving on."""
        if self._length:
            return self._schedule[self._position]
        if not self.healthy:
            return None
        weights, scores = self._weights, list(self._scores)
        best = 0
        for index, weight in enumerate(weights):
            scores[index] += weight
            if scores[index] > scores[best]:
                best = index
        return self._members[best]

    def _step(self) -> str:
        weights, scores = self._weights, self._scores
        best = 0
        for index, weight in enumerate(weights):
            scores[index] += weight
            if scores[index] > scores[best]:
                best = index
        scores[best] -= sum(weights)
        return self._members[best]


def _percent_key(
    healthy: tuple[str, ...], percents: Mapping[str, int] | None
) -> tuple[int, ...] | None:
    if not percents:
        return None
    key = tuple(percents.get(url, 100) for url in healthy)
    return None if all(percent == 100 for percent in key) else key


def _fitted(weights: list[int], *, scaled: bool) -> list[int]:
    """`weights` divided by their greatest common divisor. Weights scaled by load reports
    (configured weight times percent) are then rounded down to fit _MAX_SCALED_SCHEDULE
    slots, each member keeping at least 1: a share off by 0.1% of the pool at most, where
    a per-request step through every member would cost every redirect."""
    divisor = reduce(gcd, weights, 0) or 1
    weights = [weight // divisor for weight in weights]
    total = sum(weights)
    if not scaled or total <= _MAX_SCALED_SCHEDULE:
        return weights
    room = _MAX_SCALED_SCHEDULE - len(weights)
    fitted = [max(1, weight * room // total) for weight in weights]
    divisor = reduce(gcd, fitted, 0) or 1
    return [weight // divisor for weight in fitted]


@lru_cache(maxsize=256)
def _spread_order(weights: tuple[int, ...]) -> tuple[int, ...]:
    """One period in which member i is picked weights[i] times, its picks spread evenly
    over the period (the k-th at (k + 1/2) / weight of it): as smooth as nginx's order,
    from one sort instead of a pass over every member per pick (1 ms instead of 50 for
    64 members over 1,000 slots)."""
    picks = sorted(
        ((2 * k + 1) / (2 * weight), index)
        for index, weight in enumerate(weights)
        for k in range(weight)
    )
    return tuple(index for _, index in picks)
