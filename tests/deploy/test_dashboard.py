"""The Grafana dashboard, checked structurally (no Grafana can be installed here): every panel
on the provisioned Prometheus datasource, PromQL that parses (promtool) and names only
metrics and labels of the metrics reference (docs/operations.md), the issue's panels all there, and
configuration changes as annotations. tests/e2e/test_dashboard.py runs the same queries on a
real Prometheus scraping real servers."""

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.grafana import (
    DATASOURCES,
    GRAFANA_VARIABLES,
    annotation_queries,
    dashboard,
    label_names,
    metric_names,
    metrics_reference,
    panel_queries,
    panels,
    referenced,
)
from tests.support.tools import require_tool

GRID_COLUMNS = 24


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dashboard()


def provisioned_datasource() -> dict[str, Any]:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    found: dict[str, Any] = datasource
    return found


def test_dashboard_has_a_fixed_uid_and_title(document: dict[str, Any]) -> None:
    assert document["uid"] == "video-balancer"  # the URL /d/video-balancer stays the same
    assert document["title"] == "Video balancer"
    assert isinstance(document["schemaVersion"], int)
    assert "id" not in document or document["id"] is None  # Grafana assigns its own


def test_every_panel_queries_the_provisioned_prometheus(document: dict[str, Any]) -> None:
    datasource = provisioned_datasource()
    expected = {"type": "prometheus", "uid": datasource["uid"]}
    assert panels(document)
    for panel in panels(document):
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_have_unique_ids_and_titles_and_do_not_overlap(document: dict[str, Any]) -> None:
    every = panels(document)
    assert len({panel["id"] for panel in every}) == len(every)
    assert len({panel["title"] for panel in every}) == len(every)
    cells: dict[tuple[int, int], str] = {}
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_queries_use_only_metrics_and_labels_of_the_metrics_reference(
    document: dict[str, Any],
) -> None:
    reference = metrics_reference()
    queries = [*panel_queries(document), *annotation_queries(document)]
    for query in queries:
        names = metric_names(query.expr)
        assert names, f"{query.panel} {query.ref}: no metric in {query.expr}"
        entries = set()
        for name in names:
            entry = referenced(name, reference)
            assert entry is not None, f"{query.panel}: {name} is not in the metrics reference"
            entries.add(entry)
        labels = set().union(*(reference[entry] for entry in entries)) | {"le", "instance"}
        assert label_names(query.expr) <= labels, (query.panel, label_names(query.expr) - labels)


def test_queries_use_no_variable_the_dashboard_does_not_define(document: dict[str, Any]) -> None:
    assert document["templating"]["list"] == []
    for query in [*panel_queries(document), *annotation_queries(document)]:
        rest = query.expr
        for variable in GRAFANA_VARIABLES:
            rest = rest.replace(variable, "")
        assert "$" not in rest, f"{query.panel}: {query.expr}"


def test_rates_use_grafanas_rate_interval(document: dict[str, Any]) -> None:
    """$__rate_interval spans at least four scrapes at any zoom; a fixed window would show
    nothing when zoomed out past it, or noise when zoomed in."""
    for query in [*panel_queries(document), *annotation_queries(document)]:
        for window in re.findall(r"\[([^\]]*)\]", query.expr):
            assert window == "$__rate_interval", f"{query.panel}: [{window}]"


def expressions(document: dict[str, Any]) -> list[str]:
    return [query.expr for query in panel_queries(document)]


def some_query(document: dict[str, Any], pattern: str) -> bool:
    return any(re.search(pattern, " ".join(expr.split())) for expr in expressions(document))


@pytest.mark.parametrize(
    ("shown", "pattern"),
    [
        ("requests/s by target", r"sum by \(target\) \(rate\(balancer_redirects_total\["),
        ("configured origin share", r"balancer_configured_origin_share"),
        (
            "achieved origin share",
            r'rate\(balancer_redirects_total\{target="origin"\}.*'
            r"/ sum\(rate\(balancer_redirects_total\[",
        ),
        (
            "p50 latency",
            r"histogram_quantile\(0\.5, sum by \(le\) \(rate\(balancer_redirect_duration",
        ),
        ("p99 latency", r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(balancer_redirect_dur"),
        (
            "rejections by code",
            r'sum by \(code\) \(rate\(balancer_rejected_total\{code!="rate-limited"',
        ),
        ("rate-limited", r'rate\(balancer_rejected_total\{code="rate-limited"\}'),
        ("CDN health", r"min by \(host\) \(balancer_cdn_up\)"),
        ("CDN effective weights", r"min by \(host\) \(balancer_cdn_effective_weight\)"),
        ("reported utilization", r"by \(host\) \(balancer_cdn_reported_utilization\)"),
        ("origin fallback", r"rate\(balancer_fallback_total\["),
        ("degraded mode", r"by \(instance\) \(balancer_sequence_degraded\)"),
        ("config version", r"max\(balancer_config_version\)"),
    ],
)
def test_dashboard_shows(document: dict[str, Any], shown: str, pattern: str) -> None:
    assert some_query(document, pattern), f"no panel shows {shown}"


def test_configuration_changes_are_annotations(document: dict[str, Any]) -> None:
    datasource = {"type": "prometheus", "uid": provisioned_datasource()["uid"]}
    (annotation,) = [a for a in document["annotations"]["list"] if a["datasource"] == datasource]
    assert annotation["enable"] is True
    assert "changes(balancer_config_version[$__rate_interval])" in annotation["expr"]
    assert annotation["useValueForTime"] is False


@pytest.mark.e2e
def test_promtool_parses_every_query(tmp_path: Path, document: dict[str, Any]) -> None:
    promtool = require_tool("promtool", install="apt-get install prometheus")
    queries = [*panel_queries(document), *annotation_queries(document)]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{number}", "expr": query.rendered("1m")}
                    for number, query in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
