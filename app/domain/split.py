from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from app.domain.errors import InvalidConfig

MAX_WEIGHT = 1_000_000


class Target(StrEnum):
    CDN = "cdn"
    ORIGIN = "origin"


# Members looked up once: `Target.CDN` is an enum attribute lookup each time, and the
# redirect path needs one or two per request.
CDN = Target.CDN
ORIGIN = Target.ORIGIN


@dataclass(frozen=True, slots=True)
class Split:
    """CDN:origin weights. Of every `cdn_weight + origin_weight` consecutive sequence numbers
    exactly `origin_weight` go to the origin, spread as evenly as integers allow."""

    cdn_weight: int
    origin_weight: int

    def __post_init__(self) -> None:
        for field, weight in (
            ("cdn_weight", self.cdn_weight),
            ("origin_weight", self.origin_weight),
        ):
            if type(weight) is not int or not 0 <= weight <= MAX_WEIGHT:
                raise InvalidConfig(field, f"must be an integer from 0 to {MAX_WEIGHT}")
        if self.cdn_weight + self.origin_weight == 0:
            raise InvalidConfig("origin_weight", "cdn_weight and origin_weight must not both be 0")

    @classmethod
    def origin_every(cls, n: int) -> "Split":
        """Every n-th request to the origin: `origin_every(10)` is 9:1."""
        if type(n) is not int or not 1 <= n <= MAX_WEIGHT + 1:
            raise InvalidConfig("origin_every", f"must be an integer from 1 to {MAX_WEIGHT + 1}")
        return cls(n - 1, 1)

    def schedule(self) -> tuple[Target, ...]:
        """`target(n)` for every `n` of one period, so that `schedule[n % len(schedule)]` is
        `target(n)`."""
        return _schedule(self.cdn_weight, self.origin_weight)

    def target(self, sequence: int) -> Target:
        total = self.cdn_weight + self.origin_weight
        position = sequence % total
        weight = self.origin_weight
        if (position + 1) * weight // total > position * weight // total:
            return ORIGIN
        return CDN


@lru_cache(maxsize=256)
def _schedule(cdn_weight: int, origin_weight: int) -> tuple[Target, ...]:
    # `target(n)` is the origin where floor(n * origin / total) steps up: at n = k * total /
    # origin rounded up, less one, for k = 1 .. origin. Placing those costs a quarter of
    # calling target() for each n; the cache spares regions with the same split all of it.
    total = cdn_weight + origin_weight
    targets = [CDN] * total
    for k in range(1, origin_weight + 1):
        targets[(k * total + origin_weight - 1) // origin_weight - 1] = ORIGIN
    return tuple(targets)
