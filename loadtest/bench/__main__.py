"""`python -m loadtest.bench`: every variant of the service and both references (raw protocol,
bare ASGI) in interleaved rounds, one core each, with wrk (or loadtest/loadgen.py) pinned to
the other core; prints medians, ratios and the targets, saves loadtest/results/bench.json and
bench.png."""

import argparse
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from tempfile import TemporaryDirectory
from types import FrameType
from typing import Any

from app.infrastructure.postgres.migrations import migrate
from loadtest.bench import BenchError
from loadtest.bench.load import (
    Generator,
    choose_generator,
    generator_version,
    measure,
    request_lines,
    video_paths,
)
from loadtest.bench.procs import rss_mb
from loadtest.bench.report import save, table
from loadtest.bench.servers import (
    ROOT,
    Server,
    Variant,
    configure,
    raw_reference_server,
    reference_server,
    service_server,
)
from loadtest.bench.stats import summarise
from loadtest.bench.variants import MIXES, VARIANTS
from loadtest.support import backing_services, forget_keys, redis_keys, scratch_database

DEFAULT_OUTPUT = ROOT / "loadtest" / "results"


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: float
    warmup: float
    connections: int
    generator: str
    output_dir: Path
    strict: bool
    variants: tuple[str, ...]


def machine_info() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "usable_cores": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn": version("uvicorn"),
        "uvloop": version("uvloop"),
        "httptools": version("httptools"),
        "load_average_at_start": os.getloadavg(),
    }


def _pin_cores() -> tuple[int | None, int | None]:
    """(server core, generator core), or no pinning where taskset or a second core is missing."""
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None or len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def run(options: Options) -> dict[str, Any]:
    generator_name = choose_generator(options.generator)
    server_core, generator_core = _pin_cores()
    variants = [variant for variant in VARIANTS if variant.name in options.variants]
    paths = video_paths()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "generator": {
            "name": generator_name,
            "version": generator_version(generator_name),
            "threads": 1,
            "core": generator_core,
            "generator_bound": generator_name == "python",
        },
        "settings": {
            **{key: value for key, value in asdict(options).items() if key != "output_dir"},
            "urls": len(paths),
            "server_core": server_core,
            "generator_core": generator_core,
            "sample_paths": paths[:5],
        },
    }
    with ExitStack() as cleanup:
        workdir = Path(cleanup.enter_context(TemporaryDirectory(prefix="balancer-bench-")))
        servers = start_servers(cleanup, workdir, server_core, variants)
        pinned = Generator(generator_name, generator_core, workdir / "paths.txt")
        pinned.paths_file.write_text(request_lines(paths, None))
        generators = {}
        for server, mix in servers:
            generator = pinned if server.core is not None else replace(pinned, core=None)
            headers = MIXES[mix]
            if headers is not None:
                generator = replace(generator, paths_file=workdir / f"{mix}.paths.txt")
                if not generator.paths_file.exists():
                    generator.paths_file.write_text(request_lines(paths, headers))
            generators[server.name] = generator
        report["rounds"] = _load_rounds([server for server, _ in servers], generators, options)
        report["memory"] = {server.name: _memory(server) for server, _ in servers}
        measured = {variant.name: variant for variant in variants}
        report["targets"] = {
            server.name: {
                "label": server.label,
                "workers": server.workers,
                "core": server.core,
                "generator_core": generators[server.name].core,
                "mix": mix,
                **_held_against(measured.get(server.name)),
            }
            for server, mix in servers
        }
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    summarise(report)
    return report


def _held_against(variant: Variant | None) -> dict[str, Any]:
    """A variant's references and targets; None for a reference itself."""
    if variant is None:
        return dict.fromkeys(
            ("at_least_of", "reference", "raw_reference", "goal_of_raw", "goal_of_asgi")
        )
    return {
        "at_least_of": variant.at_least_of,
        "reference": variant.reference,
        "raw_reference": variant.raw_reference,
        "goal_of_raw": variant.goal_of_raw,
        "goal_of_asgi": variant.goal_of_asgi,
    }


def start_servers(
    cleanup: ExitStack, workdir: Path, core: int | None, variants: list[Variant]
) -> list[tuple[Server, str]]:
    """Backing services, then both references for every request mix and every variant,
    answering and configured; each with the mix it is fed; all stopped by `cleanup` in
    reverse order."""
    database_url, redis_url = cleanup.enter_context(backing_services(workdir))
    try:
        migrate(database_url)
    except subprocess.CalledProcessError as error:
        raise BenchError(f"migrating {database_url} failed: {error}") from None
    mixes = dict.fromkeys(["", *(variant.mix for variant in variants)])
    servers: list[tuple[Server, str]] = [
        (start(core, workdir, mix), mix)
        for mix in mixes
        for start in (raw_reference_server, reference_server)
    ]
    for variant in variants:
        sequence_key = f"balancer-bench:{uuid.uuid4().hex}"
        cleanup.callback(forget_keys, redis_url, sequence_key)
        own_database = database_url
        if variant.config is not None:
            own_database = cleanup.enter_context(scratch_database(database_url))
        backing = {
            "BALANCER_DATABASE_URL": own_database,
            "BALANCER_REDIS_URL": redis_url,
            **redis_keys(sequence_key),
        }
        servers.append((service_server(variant, core, backing, workdir), variant.mix))
    for server, _ in servers:
        cleanup.callback(server.stop)
        server.start()
    configs = {variant.name: variant.config for variant in variants}
    for server, _ in servers:
        server.wait_ready()
        config = configs.get(server.name)
        if config is not None:
            configure(server, config(cleanup))
    return servers


def _load_rounds(
    servers: list[Server], generators: dict[str, Generator], options: Options
) -> list[dict[str, Any]]:
    if options.warmup > 0:
        for server in servers:
            measure(
                server,
                generators[server.name],
                duration=options.warmup,
                connections=options.connections,
                round_no=0,
            )
    rounds = []
    for round_no in range(1, options.rounds + 1):
        # Each round starts one target later: over len(servers) rounds every target has run
        # in every position, so a slowdown that recurs at some point of a round (seen here)
        # does not land on the same target every time.
        shift = (round_no - 1) % len(servers)
        for server in servers[shift:] + servers[:shift]:
            result = measure(
                server,
                generators[server.name],
                duration=options.duration,
                connections=options.connections,
                round_no=round_no,
            )
            rounds.append(asdict(result))
            print(
                f"round {round_no}/{options.rounds}  {server.name:<20} {result.rps:>9,.0f} rps"
                f"  p50 {result.p50_ms:5.2f} ms  p99 {result.p99_ms:5.2f} ms"
                f"  {result.server_cpu_us_per_request:5.1f} CPU µs/req"
                f"  (other processes: {result.other_cpu_percent:3.0f}% of a core)",
                flush=True,
            )
    return rounds


def _memory(server: Server) -> dict[str, Any]:
    workers = server.worker_pids()
    return {
        "workers_rss_mb": [round(rss_mb(pid), 1) for pid in workers],
        "supervisor_rss_mb": None if workers == [server.pid] else round(rss_mb(server.pid), 1),
    }


def parse_options(argv: list[str] | None) -> Options:
    names = [variant.name for variant in VARIANTS]
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--rounds", type=_positive(int), default=5)
    parser.add_argument(
        "--duration", type=_positive(float), default=5.0, help="seconds per round (wrk: whole)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per target, 0 = none")
    parser.add_argument("--connections", type=_positive(int), default=64)
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--variants",
        type=_names(names),
        default=tuple(names),
        help=f"comma-separated, of: {', '.join(names)} (default: all)",
    )
    args = parser.parse_args(argv)
    return Options(
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        generator=args.generator,
        output_dir=args.output_dir,
        strict=args.strict,
        variants=args.variants,
    )


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def convert(raw: str) -> float:
        value = kind(raw)
        if value <= 0 or math.isnan(value):
            raise argparse.ArgumentTypeError(f"{raw} is not positive")
        return value

    return convert


def _names(known: list[str]) -> Callable[[str], tuple[str, ...]]:
    def convert(raw: str) -> tuple[str, ...]:
        chosen = tuple(name.strip() for name in raw.split(",") if name.strip())
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"unknown variants {unknown}; known: {known}")
        return chosen

    return convert


def _interrupt(signum: int, _: FrameType | None) -> None:
    # SIGTERM takes the same way out as Ctrl-C, so the servers are stopped on either.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run(options)
    except BenchError as error:
        print(f"bench failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted; servers stopped", file=sys.stderr)
        return 130
    print()
    print(table(report))
    json_path, png_path = save(report, options.output_dir)
    print(f"\nsaved {json_path} and {png_path}")
    missed = [check["name"] for check in report["checks"] if not check["passed"]]
    return 1 if options.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
