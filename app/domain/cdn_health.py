import math
import re
from dataclasses import dataclass, replace

from app.domain.errors import InvalidConfig
from app.domain.load import LOAD_MODES, MAX_SLOW_START_SECONDS, LoadReport, slow_start_percent

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
    # Load reports read from the probe's answer: "off", "agent" or "utilization".
    load: str = "off"
    slow_start_seconds: float = 0.0

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
        if self.load not in LOAD_MODES:
            raise InvalidConfig("cdn_health.load", "must be off, agent or utilization")
        if self.load == "agent" and self.method != "GET":
            raise InvalidConfig(
                "cdn_health.method", "must be GET when load is agent (the report is the body)"
            )
        slow = self.slow_start_seconds
        if not isinstance(slow, int | float) or isinstance(slow, bool):
            raise InvalidConfig("cdn_health.slow_start_seconds", "must be a number of seconds")
        if not 0 <= slow <= MAX_SLOW_START_SECONDS:
            raise InvalidConfig(
                "cdn_health.slow_start_seconds",
                f"must be from 0 (off) to {MAX_SLOW_START_SECONDS} seconds",
            )
        object.__setattr__(self, "interval_seconds", interval)
        object.__setattr__(self, "timeout_seconds", timeout)
        object.__setattr__(self, "slow_start_seconds", float(slow))

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
    # The last load report that could be read (None: none, or load reports are off), why
    # the last one could not, and the share of its configured weight the host gets now.
    reported: LoadReport | None = None
    load_error: str | None = None
    weight_percent: int = 100
    # When it last came back up (for slow start); None: never down since probes began.
    back_since: float | None = None

    def observe(
        self,
        error: str | None,
        now: float,
        settings: HealthSettings,
        report: LoadReport | None = None,
    ) -> "HostState":
        """The state after one probe (`error` None: it answered 2xx/3xx in time). A healthy
        host goes down after `fall` failures in a row, a down one up after `rise` successes.

        `report`: the answer's load report (None: it sent none). An agent's `maint` or
        `down` takes the host out at once; a report that cannot be read changes nothing
        but `load_error`."""
        if settings.load == "off":
            report = None
        state = self._observe_probe(error, now, settings, report)
        reported, load_error = state.reported, state.load_error
        if settings.load == "off":
            reported, load_error = None, None
        elif error is None:  # a failed probe read no report: the last one stands
            if report is None or report.error is None:
                reported, load_error = report, None
            else:
                load_error = report.error
        back = state.back_since
        if state.healthy and not self.healthy:
            back = now
        base = 100 if reported is None else reported.percent()
        return replace(
            state,
            reported=reported,
            load_error=load_error,
            back_since=back,
            weight_percent=slow_start_percent(base, back, now, settings.slow_start_seconds),
        )

    def _observe_probe(
        self, error: str | None, now: float, settings: HealthSettings, report: LoadReport | None
    ) -> "HostState":
        if error is None and report is not None and report.takes_out:
            failures = self.consecutive_failures + 1
            return replace(
                self,
                healthy=False,
                since=self.since if not self.healthy and self.since is not None else now,
                last_check=now,
                last_error=f"reported {report.state}",
                consecutive_failures=failures,
                consecutive_successes=0,
            )
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
