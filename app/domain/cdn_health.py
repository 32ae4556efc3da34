import math
import re
from dataclasses import dataclass, replace

from app.domain.errors import InvalidConfig

PROBE_METHODS = ("HEAD", "GET")
MAX_INTERVAL_SECONDS = 3600
MAX_THRESHOLD = 100
_PROBE_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]{0,1023}")


def _seconds(field: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidConfig(field, "must be a number of seconds")
    if not 0 < value <= MAX_INTERVAL_SECONDS:
        raise InvalidConfig(field, f"must be above 0 and at most {MAX_INTERVAL_SECONDS} seconds")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSettings:
    """How CDN hosts are probed: HAProxy's `fall`/`rise` on a fixed interval."""

    enabled: bool = True
    path: str = "/"
    method: str = "HEAD"
    interval_seconds: float = 2.0
    timeout_seconds: float = 1.0
    fall: int = 3
    rise: int = 2

    def __post_init__(self) -> None:
        if type(self.enabled) is not bool:
            raise InvalidConfig("cdn_health.enabled", "must be true or false")
        if not isinstance(self.path, str) or not _PROBE_PATH.fullmatch(self.path):
            raise InvalidConfig(
                "cdn_health.path", "must start with / and hold only URL characters (at most 1024)"
            )
        if self.method not in PROBE_METHODS:
            raise InvalidConfig("cdn_health.method", "must be HEAD or GET")
        interval = _seconds("cdn_health.interval_seconds", self.interval_seconds)
        timeout = _seconds("cdn_health.timeout_seconds", self.timeout_seconds)
        if timeout >= interval:
            raise InvalidConfig("cdn_health.timeout_seconds", "must be less than interval_seconds")
        for field in ("fall", "rise"):
            value = getattr(self, field)
            if type(value) is not int or not 1 <= value <= MAX_THRESHOLD:
                raise InvalidConfig(
                    f"cdn_health.{field}", f"must be an integer from 1 to {MAX_THRESHOLD}"
                )
        object.__setattr__(self, "interval_seconds", interval)
        object.__setattr__(self, "timeout_seconds", timeout)

    @property
    def retry_after(self) -> int:
        """Seconds before a host that answers again can be back: `rise` probes away."""
        return max(1, math.ceil(self.rise * self.interval_seconds))


@dataclass(frozen=True, slots=True)
class HostState:
    """What the probes have shown of one CDN host (times are Unix seconds)."""

    healthy: bool = True
    since: float | None = None
    last_check: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0

    def observe(self, error: str | None, now: float, settings: HealthSettings) -> "HostState":
        """The state after one probe (`error` None: it answered 2xx/3xx in time). A healthy
        host goes down after `fall` failures in a row, a down one up after `rise` successes."""
        if error is None:
            successes = self.consecutive_successes + 1
            healthy = self.healthy or successes >= settings.rise
            return replace(
                self,
                healthy=healthy,
                since=self.since if healthy == self.healthy and self.since is not None else now,
                last_check=now,
                last_error=None,
                consecutive_failures=0,
                consecutive_successes=successes,
            )
        failures = self.consecutive_failures + 1
        healthy = self.healthy and failures < settings.fall
        return replace(
            self,
            healthy=healthy,
            since=self.since if healthy == self.healthy and self.since is not None else now,
            last_check=now,
            last_error=error,
            consecutive_failures=failures,
            consecutive_successes=0,
        )
