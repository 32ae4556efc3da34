"""Load reports CDN hosts send with their health check answer, and the weights they give.

Two kinds, as the `load` setting of `cdn_health` chooses: HAProxy's agent words in the
answer's first body line (`up 75%`, `drain`, `maint`, or `{"state": ..., "weight_percent":
...}`), or a utilization as Envoy's ORCA header `endpoint-load-metrics` carries it (or a
JSON body `{"utilization": 0.72}`). Whatever a host sends, the parsers answer a report:
one whose `error` says why it is ignored when the text is not one.
"""

import json
import math
import re
from dataclasses import dataclass

LOAD_MODES = ("off", "agent", "utilization")
MAX_REPORT_BYTES = 1024  # of the body line or the header value, as the probe reads it
MAX_WEIGHT_PERCENT = 256  # HAProxy's bound for an agent's percentage
FULL = 100  # percent: the configured weight
MIN_UTILIZATION_SHARE = 0.05  # what a host at (or over) full utilization still gets
UTILIZATION_CAP = 0.95
SLOW_START_FROM = 10  # percent of its weight a recovered host starts at
MAX_SLOW_START_SECONDS = 3600
ORCA_HEADER = "endpoint-load-metrics"

# Agent states by what they do: out at once, weight 0 while up, back under `rise`.
OUT = frozenset({"maint", "down", "fail", "stopped"})
DRAIN = "drain"
BACK = frozenset({"up", "ready"})
_STATES = (*sorted(OUT), DRAIN, *sorted(BACK))
# The words of an agent's line are separated by spaces, tabs or commas (HAProxy's rule).
_SEPARATORS = re.compile(r"[ \t,]+")
_PERCENT = re.compile(r"([0-9]{1,3})%")
_EXCERPT = 40


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What one answer reported: an agent state and/or percentage, or a utilization; or,
    when `error` is set, why the answer's report is ignored (nothing else is set then)."""

    state: str | None = None
    weight_percent: int | None = None
    utilization: float | None = None
    error: str | None = None

    @property
    def takes_out(self) -> bool:
        """`maint`/`down`: the host leaves its pools now, without waiting for `fall`."""
        return self.state in OUT

    def percent(self) -> int:
        """The share of the configured weight this report asks for, in percent (0 to 256)."""
        if self.state == DRAIN:
            return 0
        if self.utilization is not None:
            used = min(self.utilization, UTILIZATION_CAP)
            return round(100 * max(MIN_UTILIZATION_SHARE, 1 - used))
        if self.weight_percent is not None:
            return self.weight_percent
        return FULL

    def shown(self) -> dict[str, str | int | float]:
        """The raw report, as `GET /cdn/health` shows it (fields not reported left out)."""
        fields: dict[str, str | int | float | None] = {
            "state": self.state,
            "weight_percent": self.weight_percent,
            "utilization": self.utilization,
        }
        return {name: value for name, value in fields.items() if value is not None}


def _garbage(why: str, text: str | bytes) -> LoadReport:
    shown = text[:_EXCERPT]
    cut = "..." if len(text) > _EXCERPT else ""
    return LoadReport(error=f"{why}: {shown!r}{cut}")


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


def parse_agent(line: bytes) -> LoadReport | None:  # noqa: PLR0911
    """HAProxy agent words from the first line of an answer's body (no line end), or the
    JSON form `{"state": "drain", "weight_percent": 75}`; None when the line is empty."""
    if len(line) > MAX_REPORT_BYTES:
        return _garbage(f"longer than {MAX_REPORT_BYTES} bytes", line)
    text = _text(line)
    if text is None:
        return _garbage("not ASCII", line)
    text = text.strip(" \t\r")
    if not text:
        return None
    if text.startswith("{"):
        return _agent_json(text)
    state: str | None = None
    percent: int | None = None
    words = _SEPARATORS.split(text.partition("#")[0].strip(" \t,"))  # `#` starts a comment
    for word in filter(None, words):
        lowered = word.lower()
        match = _PERCENT.fullmatch(word)
        if match is not None:
            if percent is not None:
                return _garbage("two percentages", text)
            percent = int(match[1])
            if percent > MAX_WEIGHT_PERCENT:
                return _garbage(f"a percentage above {MAX_WEIGHT_PERCENT}", text)
        elif lowered in _STATES:
            state = _stronger(state, lowered)
        elif lowered.startswith("maxconn:"):  # HAProxy's, meaningless for redirects
            continue
        else:
            return _garbage(f"unknown agent word {word[:_EXCERPT]!r}", text)
    if state is None and percent is None:
        return None
    return LoadReport(state=state, weight_percent=percent)


def _stronger(state: str | None, word: str) -> str:
    """Of two states in one line, the one that does most: out, then drain, then up."""
    rank = {**dict.fromkeys(OUT, 0), DRAIN: 1, **dict.fromkeys(BACK, 2)}
    if state is None or rank[word] < rank[state]:
        return "down" if word in ("fail", "stopped") else word
    return state


def _agent_json(text: str) -> LoadReport:
    fields = _object(text)
    if not isinstance(fields, dict):
        return _garbage("not a JSON object", text)
    state, percent = fields.get("state"), fields.get("weight_percent")
    if state is not None:
        if not isinstance(state, str) or state.lower() not in _STATES:
            return _garbage(f"state is not one of {', '.join(_STATES)}", text)
        state = _stronger(None, state.lower())
    if percent is not None and (type(percent) is not int or not 0 <= percent <= MAX_WEIGHT_PERCENT):
        return _garbage(f"weight_percent is not an integer from 0 to {MAX_WEIGHT_PERCENT}", text)
    if state is None and percent is None:
        return _garbage("neither state nor weight_percent", text)
    return LoadReport(state=state, weight_percent=percent)


def _object(text: str) -> object:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


def _no_constant(name: str) -> object:
    raise ValueError(name)  # NaN, Infinity: not numbers a report may hold


def _utilization(value: object) -> float | None:
    """A utilization as ORCA has it: a finite number from 0 up (over 1 allowed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        return None
    return value


def parse_orca(header: bytes) -> LoadReport:  # noqa: PLR0911
    """An `endpoint-load-metrics` header value: `TEXT cpu_utilization=0.72, ...` or
    `JSON {"cpu_utilization": 0.72, ...}`. `application_utilization` is taken when given,
    else `cpu_utilization`; other metrics are ignored. The binary form is not read."""
    if len(header) > MAX_REPORT_BYTES:
        return _garbage(f"longer than {MAX_REPORT_BYTES} bytes", header)
    text = _text(header)
    if text is None:
        return _garbage("not ASCII", header)
    text = text.strip(" \t")
    form, _, rest = text.partition(" ")
    metrics: dict[str, object] = {}
    if form == "TEXT":
        for pair in rest.split(","):
            name, equals, value = pair.strip(" \t").partition("=")
            if not equals or not name:
                return _garbage("not name=value pairs", text)
            metrics[name] = _number(value.strip(" \t"))
    elif form == "JSON":
        found = _object(rest)
        if not isinstance(found, dict):
            return _garbage("not a JSON object", text)
        metrics = found
    elif form == "BIN":
        return _garbage("the binary form is not read (send TEXT or JSON)", text)
    else:
        return _garbage("neither TEXT nor JSON", text)
    for name in ("application_utilization", "cpu_utilization"):
        if name in metrics:
            used = _utilization(metrics[name])
            if used is None:
                return _garbage(f"{name} is not a number from 0 up", text)
            return LoadReport(utilization=used)
    return _garbage("neither application_utilization nor cpu_utilization", text)


def _number(text: str) -> object:
    try:
        return float(text) if text.isascii() else None
    except ValueError:
        return None


def parse_utilization_body(line: bytes) -> LoadReport | None:
    """`{"utilization": 0.72}` as the first body line; None when the line is not a JSON
    object holding `utilization` (a health page of its own, `OK` and the like)."""
    if len(line) > MAX_REPORT_BYTES:
        return None
    text = _text(line)
    if text is None or not text.strip(" \t\r").startswith("{"):
        return None
    fields = _object(text)
    if not isinstance(fields, dict) or "utilization" not in fields:
        return None if isinstance(fields, dict) else _garbage("not a JSON object", text)
    value = _utilization(fields["utilization"])
    if value is None:
        return _garbage("utilization is not a number from 0 up", text)
    return LoadReport(utilization=value)


def read_report(mode: str, header: bytes | None, body_line: bytes | None) -> LoadReport | None:
    """The report of one answer under `mode` ("off": None): the agent's body line, or the
    ORCA header, else a utilization body. None: the answer reported nothing."""
    if mode == "agent":
        return None if body_line is None else parse_agent(body_line)
    if mode == "utilization":
        if header is not None:
            return parse_orca(header)
        return None if body_line is None else parse_utilization_body(body_line)
    return None


def slow_start_percent(percent: int, since: float | None, now: float, seconds: float) -> int:
    """`percent` as a host that came back up at `since` gets it `now`: from 10% of it,
    linearly to all of it over `seconds` (0: at once). A share above 0 stays above 0."""
    if not seconds or since is None or percent == 0:
        return percent
    elapsed = now - since
    if elapsed >= seconds:
        return percent
    ramp = SLOW_START_FROM + (FULL - SLOW_START_FROM) * max(0.0, elapsed) / seconds
    return max(1, round(percent * ramp / FULL))


def effective_weights(weights: list[int], percents: list[int]) -> list[int]:
    """Integer weights for a rotation: each configured weight times its host's percent.
    When every host of the rotation has its share cut to 0 (drained), the configured
    weights: drained hosts take viewers only when nothing else is left."""
    scaled = [weight * percent for weight, percent in zip(weights, percents, strict=True)]
    if not any(scaled):
        return list(weights)
    return scaled
