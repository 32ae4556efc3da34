"""The Grafana dashboard in deploy/grafana, read as Grafana reads it: its panels' PromQL with
Grafana's own variables filled in, and the metrics reference in docs/operations.md it may use."""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "balancer.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
METRICS_REFERENCE = ROOT / "docs" / "operations.md"

# Grafana's built-in interval variables; a dashboard without template variables has no other.
GRAFANA_VARIABLES = ("$__rate_interval", "$__interval", "$__range")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@dataclass(frozen=True)
class Query:
    panel: str  # the panel's title, or "annotation: <name>"
    ref: str  # the target's refId (the annotation's name for annotations)
    expr: str
    legend: str

    def rendered(self, window: str) -> str:
        """The PromQL Grafana sends, every interval variable given `window` (e.g. "30s")."""
        expr = self.expr
        for variable in GRAFANA_VARIABLES:
            expr = expr.replace(variable, window)
        return expr


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(document: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too; rows themselves are not panels."""
    found: list[dict[str, Any]] = []
    for panel in (document or dashboard())["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_queries(document: dict[str, Any] | None = None) -> Iterator[Query]:
    for panel in panels(document):
        for target in panel.get("targets", []):
            yield Query(panel["title"], target["refId"], target["expr"], target["legendFormat"])


def annotation_queries(document: dict[str, Any] | None = None) -> Iterator[Query]:
    for annotation in (document or dashboard())["annotations"]["list"]:
        if annotation.get("datasource", {}).get("type") == "prometheus":
            name = annotation["name"]
            yield Query(f"annotation: {name}", name, annotation["expr"], "")


# PromQL words that are not metric names: functions, aggregations, operators, modifiers.
_PROMQL_WORDS = frozenset(
    re.split(
        r"\s+",
        """sum min max avg group stddev stdvar count count_values bottomk topk quantile
        by without on ignoring group_left group_right bool and or unless offset
        rate irate increase delta idelta deriv changes resets histogram_quantile
        abs ceil floor round clamp clamp_min clamp_max vector scalar time timestamp absent
        absent_over_time label_replace label_join sort sort_desc
        avg_over_time min_over_time max_over_time sum_over_time count_over_time last_over_time
        quantile_over_time stddev_over_time present_over_time""",
    )
)


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects (label names, values and PromQL words left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    text = re.sub(r"\$__\w+", "", text)
    words = set(re.findall(r"(?<![\w.])[a-zA-Z_:][\w:]*", text))
    return words - _PROMQL_WORDS


def label_names(expr: str) -> set[str]:
    """Label names `expr` matches on or groups by."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        names |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        names |= {name.strip() for name in grouping.split(",") if name.strip()}
    return names


def metrics_reference() -> dict[str, set[str]]:
    """The metrics reference of docs/operations.md: metric name -> its label names.

    The table headed `| metric | labels | meaning |`: the first cell holds the name in
    backticks (`process_*` stands for the standard process metrics), the second the label
    names in backticks, with example values in parentheses after them.
    """
    lines = METRICS_REFERENCE.read_text().splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("| metric | labels |")]
    assert len(header) == 1, "docs/operations.md needs one metrics table (| metric | labels |)"
    reference: dict[str, set[str]] = {}
    for row in lines[header[0] + 2 :]:
        if not row.startswith("|"):
            break
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        names = re.sub(r"\([^)]*\)", "", cells[1])
        reference[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", names))
    return reference


def referenced(name: str, reference: dict[str, set[str]]) -> str | None:
    """The reference entry `name` belongs to (a histogram's series and process_* included)."""
    if name in reference:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in reference:
            return name.removesuffix(suffix)
    for entry in reference:
        if entry.endswith("*") and name.startswith(entry.rstrip("*")):
            return entry
    return None
