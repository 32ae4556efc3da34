"""Rounds into medians, per-round ratios, the pass/fail checks of the issues (which `--strict`
enforces) and the goals of issue 19 (reported beside the ratios, never failing a run)."""

import statistics
from collections import defaultdict
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from loadtest.bench.variants import SERVICE, SERVICE_2W

MIN_SHARE_OF_REFERENCE = 0.90
MIN_RPS_ONE_CORE = 25_000
MAX_P99_MS = 5.0
MAX_WORKER_RSS_MB = 100.0


def requests_per_cpu_second(result: dict[str, Any]) -> float:
    """A round's requests per second of the server's own CPU time: what it would serve with a
    core to itself, so less moved than requests/s by what else the machine runs."""
    cpu_us: float = result["server_cpu_us_per_request"]
    return 1e6 / cpu_us if cpu_us > 0 else 0.0  # 0: less than a clock tick, not known


def per_round_ratios(
    rounds: list[dict[str, Any]],
    numerator: str,
    denominator: str,
    figure: Callable[[dict[str, Any]], float] = itemgetter("rps"),
) -> list[float]:
    by_round: dict[int, dict[str, float]] = defaultdict(dict)
    for result in rounds:
        by_round[result["round"]][result["target"]] = figure(result)
    return [
        targets[numerator] / targets[denominator]
        for _, targets in sorted(by_round.items())
        if targets.get(numerator, 0) > 0 and targets.get(denominator, 0) > 0
    ]


def _ratio(
    rounds: list[dict[str, Any]],
    numerator: str,
    denominator: str,
    figure: Callable[[dict[str, Any]], float] = itemgetter("rps"),
) -> dict[str, Any]:
    ratios = per_round_ratios(rounds, numerator, denominator, figure)
    return {"per_round": ratios, "median": statistics.median(ratios) if ratios else None}


def summarise(report: dict[str, Any]) -> None:
    """Medians across rounds, per-round ratios and the targets, added to `report`."""
    rounds = report["rounds"]
    medians = {}
    for target in report["targets"]:
        mine = [result for result in rounds if result["target"] == target]
        medians[target] = {
            "rps": statistics.median(result["rps"] for result in mine),
            "p50_ms": statistics.median(result["p50_ms"] for result in mine),
            "p99_ms": statistics.median(result["p99_ms"] for result in mine),
            "server_cpu_us_per_request": statistics.median(
                result["server_cpu_us_per_request"] for result in mine
            ),
            "non_3xx": sum(result["non_3xx"] for result in mine),
            "socket_errors": sum(result["socket_errors"] for result in mine),
            "max_worker_rss_mb": max(report["memory"][target]["workers_rss_mb"]),
        }
    report["medians"] = medians
    ratios, cpu_ratios = {}, {}
    for target, described in report["targets"].items():
        at_least_of = described.get("at_least_of")
        # A variant on one core against both references on one core fed the same requests.
        pinned = described["core"] is not None and described.get("reference") is not None
        for other in (
            described.get("raw_reference") if pinned else None,
            described.get("reference") if pinned else None,
            at_least_of[0] if at_least_of else None,
        ):
            if other is not None:
                ratios[f"{target}_to_{other}"] = _ratio(rounds, target, other)
                cpu_ratios[f"{target}_to_{other}"] = _ratio(
                    rounds, target, other, requests_per_cpu_second
                )
    if SERVICE in medians and SERVICE_2W in medians:
        ratios["two_workers_to_one"] = _ratio(rounds, SERVICE_2W, SERVICE)
    report["ratios"] = ratios
    # The same ratios by requests per CPU second: on a shared machine, the check on the above.
    report["cpu_ratios"] = cpu_ratios
    report["checks"] = checks(report)
    report["goals"] = goals(report)


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's shares of the references fed the same requests (plain redirect >= 0.70 of
    raw; every feature >= 0.40 of raw and >= 0.90 of bare ASGI): reported, not enforced."""
    found = []
    for target, described in report["targets"].items():
        for kind, reference in (("raw", "raw_reference"), ("asgi", "reference")):
            least = described.get(f"goal_of_{kind}")
            ratio = report["ratios"].get(f"{target}_to_{described.get(reference)}", {})
            if least is not None and ratio.get("median") is not None:
                found.append(
                    {
                        "target": target,
                        "of": described[reference],
                        "least": least,
                        "measured": round(ratio["median"], 3),
                        "passed": ratio["median"] >= least,
                    }
                )
    return found


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    medians, ratios, targets = report["medians"], report["ratios"], report["targets"]
    found = []
    for target, described in targets.items():
        reference = described.get("reference")  # None: a reference itself
        share = ratios.get(f"{target}_to_{reference}", {}).get("median")
        if share is not None:
            found.append(
                _check(
                    f"{target} >= {MIN_SHARE_OF_REFERENCE:.0%} of {reference} rps",
                    f"{share:.0%}",
                    share >= MIN_SHARE_OF_REFERENCE,
                )
            )
        if described.get("at_least_of"):
            other, least = described["at_least_of"]
            share = ratios[f"{target}_to_{other}"]["median"]
            if share is None:  # the other variant was not run (--variants)
                continue
            found.append(
                _check(f"{target} >= {least:.0%} of {other} rps", f"{share:.0%}", share >= least)
            )
    if SERVICE in medians:
        connections = report["settings"]["connections"]
        found += [
            _check(
                f"{SERVICE} >= {MIN_RPS_ONE_CORE:,} rps on one core",
                f"{medians[SERVICE]['rps']:,.0f} rps",
                medians[SERVICE]["rps"] >= MIN_RPS_ONE_CORE,
            ),
            _check(
                f"{SERVICE} p99 <= {MAX_P99_MS:g} ms at {connections} connections",
                f"{medians[SERVICE]['p99_ms']:.2f} ms",
                medians[SERVICE]["p99_ms"] <= MAX_P99_MS,
            ),
        ]
    service_rss = [
        rss
        for target, described in targets.items()
        if described.get("reference") is not None
        for rss in report["memory"][target]["workers_rss_mb"]
    ]
    found.append(
        _check(
            f"each service worker < {MAX_WORKER_RSS_MB:g} MB RSS",
            f"max {max(service_rss):.1f} MB",
            max(service_rss) < MAX_WORKER_RSS_MB,
        )
    )
    return found


def _check(name: str, measured: str, passed: bool) -> dict[str, Any]:
    return {"name": name, "measured": measured, "passed": passed}
