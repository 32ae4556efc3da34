"""What a run prints and saves: the table, bench.json and the bench.png chart."""

import json
import statistics
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from loadtest.bench.servers import RAW_REFERENCE, REFERENCE
from loadtest.bench.variants import SERVICE, SERVICE_2W

# Other processes' CPU (% of one core) above which a run's requests/s are mostly contention.
BUSY_PERCENT = 50


def table(report: dict[str, Any]) -> str:
    generator = report["generator"]
    settings = report["settings"]
    where = f"pinned to core {generator['core']}" if generator["core"] is not None else "unpinned"
    lines = [
        f"generator: {generator['version']}, 1 thread, {settings['connections']} connections, "
        f"{where}; {settings['rounds']} rounds x {settings['duration']:g} s, medians",
    ]
    other = statistics.median(result["other_cpu_percent"] for result in report["rounds"])
    lines.append(
        f"other processes on the machine used {other:.0f}% of a core during the median round"
        f" (load average {report['machine']['load_average_at_start'][0]:.2f} at start)"
    )
    if other > BUSY_PERCENT:
        lines.append(
            "NOTE: the machine was busy: the servers' requests/s are what a shared core gave "
            "them; the by-CPU ratios below are the steadier figures"
        )
    if generator["generator_bound"]:
        lines.append(
            "NOTE: fallback Python generator (wrk not used): figures are generator-bound, "
            "a lower bound on what the servers can do"
        )
    width = max(len(target["label"]) for target in report["targets"].values())
    header = f"{'target':<{width}} | {'rps':>9} | {'p50 ms':>6} | {'p99 ms':>6} | "
    header += f"{'CPU µs/req':>10} | {'RSS MB':>13}"
    lines += [header, "-" * len(header)]
    for target, medians in report["medians"].items():
        workers = report["memory"][target]["workers_rss_mb"]
        rss = " / ".join(f"{value:.1f}" for value in workers)
        lines.append(
            f"{report['targets'][target]['label']:<{width}} | {medians['rps']:>9,.0f} | "
            f"{medians['p50_ms']:>6.2f} | {medians['p99_ms']:>6.2f} | "
            f"{medians['server_cpu_us_per_request']:>10.1f} | {rss:>13}"
        )
    lines += ["", *_ratio_table(report), ""]
    for name, ratio in report["ratios"].items():
        numerator, _, denominator = name.partition("_to_")
        if ratio["median"] is None or denominator.startswith((REFERENCE, RAW_REFERENCE)):
            continue  # in the table above
        if name == "two_workers_to_one":
            numerator, denominator = f"{SERVICE_2W} (unpinned)", SERVICE
        lines.append(
            f"{numerator} / {denominator} rps (median of per-round ratios): {ratio['median']:.2f}"
        )
    lines += ["", "targets:"]
    lines += [
        f"  {'PASS' if check['passed'] else 'FAIL'}  {check['name']:<45} {check['measured']}"
        for check in report["checks"]
    ]
    return "\n".join(lines)


def _ratio_table(report: dict[str, Any]) -> list[str]:
    """Each variant on one core against the raw and the bare ASGI reference fed the same
    requests, with issue 19's goals beside them."""
    goals = {(goal["target"], goal["of"]): goal for goal in report.get("goals", [])}

    def cell(target: str, reference: str) -> tuple[str, str, str]:
        name = f"{target}_to_{reference}"
        ratio = report["ratios"].get(name, {}).get("median")
        by_cpu = report.get("cpu_ratios", {}).get(name, {}).get("median")
        goal = goals.get((target, reference))
        verdict = f">= {goal['least']:.2f} {'PASS' if goal['passed'] else 'FAIL'}" if goal else ""
        return _figure(ratio), verdict, _figure(by_cpu)

    header = (
        f"{'variant (median of per-round ratios)':<36} | {'requests':<8} | {'/ raw':>6} | "
        f"{'goal':<12} | {'/ ASGI':>6} | {'goal':<12} | {'by CPU: / raw':>13} | {'/ ASGI':>6}"
    )
    lines = [header, "-" * len(header)]
    for target, described in report["targets"].items():
        if described.get("raw_reference") is None or described["core"] is None:
            continue
        raw, raw_goal, raw_cpu = cell(target, described["raw_reference"])
        asgi, asgi_goal, asgi_cpu = cell(target, described["reference"])
        lines.append(
            f"{target:<36} | {described.get('mix') or 'plain':<8} | {raw:>6} | "
            f"{raw_goal:<12} | {asgi:>6} | {asgi_goal:<12} | {raw_cpu:>13} | {asgi_cpu:>6}"
        )
    lines += [
        "raw: asyncio Protocol + httptools, no ASGI; ASGI: bare ASGI app under uvicorn; each fed"
        " the same requests. Goals are reported, never fail a run (--strict ignores them).",
        "by CPU: the same ratios of requests per second of the server's own CPU time, less moved"
        " by what else the machine runs; loopback work the kernel charges to no server is left"
        " out, so they read lower than requests/s on an idle core would.",
    ]
    return lines


def _figure(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}"


def _bars(axes: Axes, bars: list[tuple[str, dict[str, Any]]], title: str) -> None:
    labels = [label for label, _ in bars]
    values = [medians["rps"] for _, medians in bars]
    colours = [
        "#5c5c5c"
        if label.startswith(RAW_REFERENCE)
        else "#8c8c8c"
        if label.startswith(REFERENCE)
        else "#2b7bba"
        for label in labels
    ]
    drawn = axes.bar(labels, values, color=colours, width=0.6)
    for bar, (_, medians) in zip(drawn, bars, strict=True):
        axes.annotate(
            f"{medians['rps']:,.0f}\np99 {medians['p99_ms']:.1f} ms",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    axes.set_title(title, fontsize=11)
    axes.tick_params(axis="x", labelrotation=30, labelsize=9)
    for label in axes.get_xticklabels():
        label.set_horizontalalignment("right")
    axes.grid(axis="y", alpha=0.3)
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count > 1 else ''}"


def render(report: dict[str, Any], path: Path) -> None:
    medians, targets = report["medians"], report["targets"]
    # Target names: the labels (in bench.json and the table) are too long for 13 bars.
    pinned = [(name, medians[name]) for name in targets if targets[name]["core"] is not None]
    scaling = [
        (f"{name}\n({_workers(targets[name]['workers'])})", medians[name])
        for name in (SERVICE, SERVICE_2W)
        if name in medians
    ]
    figure = Figure(figsize=(4 + 1.1 * len(pinned), 5.6))
    FigureCanvasAgg(figure)  # the non-interactive backend; no display needed
    left, right = figure.subplots(
        1, 2, sharey=True, gridspec_kw={"width_ratios": [len(pinned), max(1, len(scaling))]}
    )
    _bars(left, pinned, "Each on one core")
    _bars(right, scaling, "Service scaling")
    left.set_ylabel("requests/s (median of rounds)")
    # The panels share the y axis: leave room above the tallest bar of either for its label.
    left.set_ylim(0, 1.25 * max(target["rps"] for target in medians.values()))
    generator = report["generator"]
    settings = report["settings"]
    suffix = " (generator-bound)" if generator["generator_bound"] else ""
    figure.suptitle(
        f"make bench: {generator['name']}{suffix}, {settings['connections']} connections, "
        f"{settings['rounds']} x {settings['duration']:g} s, {report['generated_at']}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def save(report: dict[str, Any], output_dir: Path) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "bench.json"
    png_path = output_dir / "bench.png"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    render(report, png_path)
    return json_path, png_path
