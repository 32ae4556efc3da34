from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache, reduce
from math import gcd
from operator import add
from typing import NamedTuple

from app.domain.errors import InvalidConfig
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

    Built for a (pool, down hosts) pair; `next()` is what a CDN-bound redirect pays: an index
    step through a precomputed schedule, or None when no member is healthy. `only` is the
    base URL when exactly one member is healthy, so a pool of one costs no call at all.
    """

    __slots__ = ("_length", "_position", "_schedule", "_scores", "_weights", "healthy", "only")

    def __init__(self, pool: CdnPool, down: frozenset[str] = frozenset()) -> None:
        members = [host for host in pool.hosts if host.base_url not in down]
        self.healthy: tuple[str, ...] = tuple(host.base_url for host in members)
        self.only = self.healthy[0] if len(members) == 1 else ""
        divisor = reduce(gcd, (host.weight for host in members), 0) or 1
        weights = [host.weight // divisor for host in members]
        self._weights = weights
        self._scores = [0] * len(weights)
        self._position = 0
        if sum(weights) <= _MAX_SCHEDULE:
            order = _period_order(tuple(weights))
            self._schedule: tuple[str, ...] = tuple(map(self.healthy.__getitem__, order))
        else:
            self._schedule = ()
        self._length = len(self._schedule)

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
        return self.healthy[best]

    def _step(self) -> str:
        weights, scores = self._weights, self._scores
        best = 0
        for index, weight in enumerate(weights):
            scores[index] += weight
            if scores[index] > scores[best]:
                best = index
        scores[best] -= sum(weights)
        return self.healthy[best]
