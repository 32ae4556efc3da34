"""`make bench` end to end at toy size: it runs, reports, draws, and refuses bad figures.

Speed is claimed from the benchmark's own output, never asserted here.
"""

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--rounds", "1", "--duration", "1", "--warmup", "0"]
PYTHON = ["--generator", "python"]
# One connection, one request at a time: far below the 25,000 requests/s target on any
# machine, so a run of it misses that target for certain.
SLOW = ["--connections", "1"]
# The service and the two references only: what a test of the run itself needs.
ONLY_SERVICE = ["--variants", "service"]


def run_bench(
    database_url: str, redis_url: str, output_dir: Path, options: list[str] = PYTHON
) -> subprocess.CompletedProcess[str]:
    environ = {
        **{key: value for key, value in os.environ.items() if not key.startswith("BALANCER_")},
        "BALANCER_DATABASE_URL": database_url,
        "BALANCER_REDIS_URL": redis_url,
    }
    command = [sys.executable, "-m", "loadtest.bench", *TINY, *options]
    return subprocess.run(
        [*command, "--output-dir", str(output_dir)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
async def foreign_origin_config(database_url: str, initial_config: None) -> AsyncIterator[None]:
    """An active config whose origin domain no benchmark URL uses: every redirect is a 4xx."""
    connection = await asyncpg.connect(database_url)
    try:
        version = await connection.fetchval(
            "INSERT INTO config_versions (version, cdn_host, cdn_weight, origin_weight,"
            " origin_domains, comment)"
            " SELECT max(version) + 1, 'cdn.example.com', 9, 1, '{elsewhere-cluster}',"
            " 'bench harness test' FROM config_versions RETURNING version"
        )
        yield
        await connection.execute("DELETE FROM config_versions WHERE version = $1", version)
    finally:
        await connection.close()


def test_report_has_every_target_both_references_and_a_chart_when_run_briefly(
    database_url: str, redis_url: str, initial_config: None, tmp_path: Path
) -> None:
    result = run_bench(database_url, redis_url, tmp_path, [*PYTHON, *SLOW])

    # A missed target without --strict is reported, not an error.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL  service >= 25,000 rps on one core" in result.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["generator"]["name"] == "python"
    assert report["generator"]["generator_bound"] is True
    everything = {
        "raw",
        "reference",
        "raw-xff",
        "reference-xff",
        "service",
        "service-metrics-off",
        "service-fast-path-off",
        "service-2w",
        "service-pool",
        "service-pool-load",
        "service-xff",
        "service-limits",
        "service-regions",
        "service-every-feature",
    }
    assert {result["target"] for result in report["rounds"]} == everything
    for target in everything:
        assert report["medians"][target]["rps"] > 0
        assert report["medians"][target]["non_3xx"] == 0
        assert report["medians"][target]["socket_errors"] == 0
    # Each variant on one core is held against both references fed the same requests.
    for target, raw, asgi in (
        ("service", "raw", "reference"),
        ("service-fast-path-off", "raw", "reference"),
        ("service-xff", "raw-xff", "reference-xff"),
        ("service-every-feature", "raw-xff", "reference-xff"),
    ):
        for ratios in (report["ratios"], report["cpu_ratios"]):
            assert ratios[f"{target}_to_{raw}"]["median"] > 0
            assert ratios[f"{target}_to_{asgi}"]["median"] > 0
    assert "service-2w_to_raw" not in report["ratios"]  # unpinned: no one-core ratio
    checked = {check["name"] for check in report["checks"]}
    assert {
        "service >= 90% of reference rps",
        "service-xff >= 90% of reference-xff rps",
        "service-limits >= 90% of reference-xff rps",
        "service-regions >= 90% of reference-xff rps",
    } <= checked
    # Issue 19's goals are reported beside the ratios; a missed one fails nothing.
    assert {(goal["target"], goal["of"], goal["least"]) for goal in report["goals"]} == {
        ("service", "raw", 0.70),
        ("service-every-feature", "raw-xff", 0.40),
        ("service-every-feature", "reference-xff", 0.90),
    }
    assert re.search(r"\nservice +\| plain +\| +[0-9.]+ \| >= 0\.70 (PASS|FAIL)", result.stdout)
    assert re.search(
        r"\nservice-every-feature +\| xff +\| +[0-9.]+ \| >= 0\.40 (PASS|FAIL) +\|"
        r" +[0-9.]+ \| >= 0\.90 (PASS|FAIL)",
        result.stdout,
    )
    assert len(report["memory"]["service-2w"]["workers_rss_mb"]) == 2
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "service / service-metrics-off" in result.stdout


def test_run_fails_without_a_report_when_the_service_answers_other_than_3xx(
    database_url: str, redis_url: str, foreign_origin_config: None, tmp_path: Path
) -> None:
    result = run_bench(database_url, redis_url, tmp_path, [*PYTHON, *ONLY_SERVICE])

    assert result.returncode == 1, result.stdout + result.stderr
    assert "were not 3xx" in result.stderr
    assert not (tmp_path / "bench.json").exists()


def missed_targets(report: dict[str, Any]) -> list[str]:
    return [check["name"] for check in report["checks"] if not check["passed"]]


def test_wrk_drives_the_run_when_asked_for(
    database_url: str, redis_url: str, initial_config: None, tmp_path: Path
) -> None:
    require_tool("wrk", install="apt-get install wrk")

    result = run_bench(
        database_url,
        redis_url,
        tmp_path,
        ["--generator", "wrk", "--variants", "service,service-2w"],
    )

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["generator"]["name"] == "wrk"
    assert report["generator"]["generator_bound"] is False
    assert report["generator"]["version"].startswith("wrk ")
    for target in ("service", "reference", "raw", "service-2w"):
        assert report["medians"][target]["rps"] > 0
        assert report["medians"][target]["non_3xx"] == 0
        assert report["medians"][target]["socket_errors"] == 0
    assert "NOTE: fallback Python generator" not in result.stdout


def test_strict_run_exits_1_when_a_target_is_missed(
    database_url: str, redis_url: str, initial_config: None, tmp_path: Path
) -> None:
    result = run_bench(
        database_url, redis_url, tmp_path, [*PYTHON, *SLOW, *ONLY_SERVICE, "--strict"]
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "bench failed" not in result.stderr  # it missed a target; nothing broke
    assert "FAIL  service >= 25,000 rps on one core" in result.stdout
    report = json.loads((tmp_path / "bench.json").read_text())
    assert "service >= 25,000 rps on one core" in missed_targets(report)
