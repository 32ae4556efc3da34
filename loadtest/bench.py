"""`make bench`: the balancer's redirect path against a bare ASGI redirect, core for core.

Starts PostgreSQL and Redis (BALANCER_DATABASE_URL / BALANCER_REDIS_URL, else embedded
servers under a temporary folder), the balancer with one worker and the reference app
(loadtest/reference_app.py) pinned to one core each, and the balancer with two workers
unpinned. Loads all three in interleaved rounds with wrk (or loadtest/loadgen.py where wrk
is absent) pinned to the other core, prints medians and the targets from the issue, and
saves loadtest/results/bench.json and bench.png.
"""

import argparse
import http.client
import json
import math
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import statistics
import string
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from tempfile import TemporaryDirectory
from types import FrameType
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from app.infrastructure.postgres.migrations import migrate
from loadtest.support import backing_services, forget_sequence, free_port

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "loadtest" / "results"
WRK_SCRIPT = ROOT / "loadtest" / "wrk_urls.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
# Both servers trust forwarded headers from the same peers, as the service does by default.
FORWARDED_ALLOW_IPS = "127.0.0.1"

SERVICE = "service"
REFERENCE = "reference"
SERVICE_2W = "service-2w"

MIN_SHARE_OF_REFERENCE = 0.80
MIN_RPS_ONE_CORE = 25_000
MAX_P99_MS = 5.0
MAX_WORKER_RSS_MB = 100.0


class BenchError(RuntimeError):
    """The run cannot produce figures that mean anything."""


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: float
    warmup: float
    connections: int
    generator: str
    output_dir: Path
    strict: bool


# --- the request mix -----------------------------------------------------------------------


def video_paths(count: int = 2000, seed: int = 1488) -> list[str]:
    """`/?video=...` paths as players send them: many servers and videos, some signed.

    The URL goes into the query raw, as most players send it; a signed URL's own `?...&...`
    stays with it (the service takes everything after `video=` once it holds a `?`).
    """
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits
    paths = []
    for _ in range(count):
        scheme = "https" if rng.random() < 0.2 else "http"
        name = "".join(rng.choices(alphabet, k=11))
        extension = rng.choice((".m3u8", ".m3u8", ".ts", ".mp4"))
        url = (
            f"{scheme}://s{rng.randint(1, 40)}.origin-cluster"
            f"/video/{rng.randint(1, 99_999)}/{name}{extension}"
        )
        if rng.random() < 0.3:
            url += f"?token={rng.getrandbits(64):016x}&exp={1_767_000_000 + rng.randint(0, 86_400)}"
        paths.append(f"/?video={url}")
    return paths


# --- processes under /proc -----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; the command name may hold spaces."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant of it."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children[int(_stat_fields(int(entry.name))[1])].append(int(entry.name))
            except (OSError, IndexError):
                continue  # gone while we looked
    found, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        found.append(current)
        waiting.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its live descendants."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def busy_seconds() -> float:
    """CPU time all cores have spent busy since boot (/proc/stat, steal included)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _, _, irq, softirq, steal = (int(value) for value in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pinned(command: list[str], core: int | None) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


# --- servers -------------------------------------------------------------------------------


def _http_get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _service_ready(status: int, body: bytes) -> bool:
    return status == 200 and json.loads(body).get("status") == "ok"


def _reference_ready(status: int, _: bytes) -> bool:
    return 300 <= status < 400


@dataclass
class Server:
    """One server under test, started in a process group of its own so that it and its
    workers stop together whatever happens to the harness."""

    name: str
    label: str
    workers: int
    core: int | None
    command: list[str]
    environ: dict[str, str]
    port: int
    ready_path: str
    is_ready: Callable[[int, bytes], bool]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                _pinned(self.command, self.core),
                cwd=ROOT,
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BenchError(f"{self.name} exited during start-up\n{self.log_tail()}")
            try:
                if self.is_ready(*_http_get(self.port, self.ready_path)):
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} did not become ready in {timeout:.0f} s\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, signum: signal.Signals) -> None:
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """uvicorn serves in-process with one worker and from spawned children with more."""
        spawned = [pid for pid in process_tree(self.pid) if "spawn_main" in _command_line(pid)]
        return spawned or [self.pid]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def service_server(
    workers: int, core: int | None, backing: dict[str, str], workdir: Path
) -> Server:
    port = free_port()
    name = SERVICE if workers == 1 else SERVICE_2W
    where = f"core {core}" if core is not None else "unpinned"
    environ = {
        **{key: value for key, value in os.environ.items() if not key.startswith("BALANCER_")},
        **backing,
        "BALANCER_HOST": HOST,
        "BALANCER_PORT": str(port),
        "BALANCER_WORKERS": str(workers),
        "BALANCER_ACCESS_LOG": "false",
        "BALANCER_LOG_FORMAT": "console",
        "BALANCER_FORWARDED_ALLOW_IPS": FORWARDED_ALLOW_IPS,
        "BALANCER_ADMIN_TOKEN": secrets.token_urlsafe(24),
    }
    return Server(
        name=name,
        label=f"service ({workers} worker{'s' if workers > 1 else ''}, {where})",
        workers=workers,
        core=core,
        command=[sys.executable, "-m", "app", "serve"],
        environ=environ,
        port=port,
        ready_path="/ready",
        is_ready=_service_ready,
        log_path=workdir / f"{name}.log",
    )


def reference_server(core: int | None, workdir: Path) -> Server:
    port = free_port()
    where = f"core {core}" if core is not None else "unpinned"
    return Server(
        name=REFERENCE,
        label=f"reference (bare ASGI, {where})",
        workers=1,
        core=core,
        command=[
            *(sys.executable, "-m", "uvicorn", "loadtest.reference_app:app"),
            *("--host", HOST, "--port", str(port)),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log"),
            *("--proxy-headers", "--forwarded-allow-ips", FORWARDED_ALLOW_IPS),
            "--no-server-header",
        ],
        environ=dict(os.environ),
        port=port,
        ready_path="/?video=http://s1.origin-cluster/video/1/ready.m3u8",
        is_ready=_reference_ready,
        log_path=workdir / f"{REFERENCE}.log",
    )


# --- the load generator --------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    requests: int
    duration_s: float
    p50_us: float
    p99_us: float
    non_3xx: int
    socket_errors: int
    generator_cpu_s: float


@dataclass(frozen=True)
class Generator:
    name: str  # "wrk" or "python"
    core: int | None
    paths_file: Path

    def command(self, port: int, connections: int, duration: float) -> list[str]:
        if self.name == "wrk":
            command = [
                *("wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s"),
                *("--timeout", "5s", "-s", str(WRK_SCRIPT), f"http://{HOST}:{port}/"),
                *("--", str(self.paths_file)),
            ]
        else:
            command = [
                *(sys.executable, "-m", "loadtest.loadgen", "--host", HOST, "--port", str(port)),
                *("--paths", str(self.paths_file), "--connections", str(connections)),
                *("--duration", str(duration)),
            ]
        return _pinned(command, self.core)

    def run(self, port: int, connections: int, duration: float) -> Load:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            result = subprocess.run(
                self.command(port, connections, duration),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=duration + 60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self.name} did not finish a {duration:g} s run in time") from None
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise BenchError(f"{self.name} failed ({result.returncode}):\n{result.stderr[-2000:]}")
        raw = self._parse(result.stdout)
        return Load(
            requests=int(raw["requests"]),
            duration_s=float(raw["duration_s"]),
            p50_us=float(raw["p50_us"]),
            p99_us=float(raw["p99_us"]),
            non_3xx=int(raw["non_3xx"]),
            socket_errors=int(raw["socket_errors"]),
            generator_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        )

    def _parse(self, stdout: str) -> dict[str, Any]:
        if self.name == "python":
            parsed: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
            return parsed
        for line in stdout.splitlines():
            if line.startswith("BENCH_RESULT "):
                raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
                raw["duration_s"] = raw.pop("duration_us") / 1e6
                raw["socket_errors"] += raw.pop("timeouts")
                return raw
        raise BenchError(f"wrk printed no BENCH_RESULT line:\n{stdout[-2000:]}")


def choose_generator(requested: str) -> str:
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if requested == "wrk" and not shutil.which("wrk"):
        raise BenchError("--generator wrk: wrk is not installed")
    return requested


def generator_version(name: str) -> str:
    if name == "python":
        return f"loadtest/loadgen.py on Python {platform.python_version()}"
    result = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first_line = (result.stdout or result.stderr).splitlines()[0]
    return first_line.split(" Copyright")[0].strip()


# --- one measurement -----------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    target: str
    round: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_3xx: int
    socket_errors: int
    server_cpu_us_per_request: float
    generator_cpu_percent: float
    # CPU the rest of the machine used meanwhile (% of one core; the kernel's softirq work
    # for loopback traffic counts here too): how noisy the round was.
    other_cpu_percent: float


def measure(server: Server, generator: Generator, options: Options, round_no: int) -> Measurement:
    duration = options.warmup if round_no == 0 else options.duration
    cpu_before, busy_before, wall_before = cpu_seconds(server.pid), busy_seconds(), time.monotonic()
    load = generator.run(server.port, options.connections, duration)
    cpu_used = cpu_seconds(server.pid) - cpu_before
    busy, wall = busy_seconds() - busy_before, time.monotonic() - wall_before
    if load.non_3xx or load.socket_errors or load.requests == 0:
        phase = "warm-up" if round_no == 0 else f"round {round_no}"
        raise BenchError(
            f"{server.name}, {phase}: {load.non_3xx} answers were not 3xx, "
            f"{load.socket_errors} socket errors, {load.requests} requests completed; "
            f"figures from a failing server mean nothing\n{server.log_tail()}"
        )
    return Measurement(
        target=server.name,
        round=round_no,
        requests=load.requests,
        duration_s=load.duration_s,
        rps=load.requests / load.duration_s,
        p50_ms=load.p50_us / 1000,
        p99_ms=load.p99_us / 1000,
        non_3xx=load.non_3xx,
        socket_errors=load.socket_errors,
        server_cpu_us_per_request=cpu_used * 1e6 / load.requests,
        generator_cpu_percent=100 * load.generator_cpu_s / load.duration_s,
        other_cpu_percent=100 * max(0.0, busy - cpu_used - load.generator_cpu_s) / wall,
    )


# --- the run -------------------------------------------------------------------------------


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
        servers = start_servers(cleanup, workdir, server_core)
        paths_file = workdir / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        pinned = Generator(generator_name, generator_core, paths_file)
        # Two unpinned workers may use both cores, so the generator shares them too.
        generators = {
            server.name: pinned if server.workers == 1 else replace(pinned, core=None)
            for server in servers
        }
        report["rounds"] = _load_rounds(servers, generators, options)
        report["memory"] = {server.name: _memory(server) for server in servers}
        report["targets"] = {
            server.name: {
                "label": server.label,
                "workers": server.workers,
                "core": server.core,
                "generator_core": generators[server.name].core,
            }
            for server in servers
        }
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    summarise(report)
    return report


def start_servers(cleanup: ExitStack, workdir: Path, core: int | None) -> list[Server]:
    """Backing services, then the three servers under test, answering; all stopped by
    `cleanup` in reverse order."""
    database_url, redis_url = cleanup.enter_context(backing_services(workdir))
    try:
        migrate(database_url)
    except subprocess.CalledProcessError as error:
        raise BenchError(f"migrating {database_url} failed: {error}") from None
    sequence_key = f"balancer-bench:{uuid.uuid4().hex}"
    cleanup.callback(forget_sequence, redis_url, sequence_key)
    backing = {
        "BALANCER_DATABASE_URL": database_url,
        "BALANCER_REDIS_URL": redis_url,
        "BALANCER_SEQUENCE_KEY": sequence_key,
    }
    servers = [
        service_server(1, core, backing, workdir),
        reference_server(core, workdir),
        service_server(2, None, backing, workdir),
    ]
    for server in servers:
        cleanup.callback(server.stop)
        server.start()
    for server in servers:
        server.wait_ready()
    return servers


def _load_rounds(
    servers: list[Server], generators: dict[str, Generator], options: Options
) -> list[dict[str, Any]]:
    if options.warmup > 0:
        for server in servers:
            measure(server, generators[server.name], options, round_no=0)
    rounds = []
    for round_no in range(1, options.rounds + 1):
        for server in servers:
            result = measure(server, generators[server.name], options, round_no)
            rounds.append(asdict(result))
            print(
                f"round {round_no}/{options.rounds}  {server.name:<10} {result.rps:>9,.0f} rps"
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


# --- summary -------------------------------------------------------------------------------


def _per_round_ratios(
    rounds: list[dict[str, Any]], numerator: str, denominator: str
) -> list[float]:
    by_round: dict[int, dict[str, float]] = defaultdict(dict)
    for result in rounds:
        by_round[result["round"]][result["target"]] = result["rps"]
    return [
        targets[numerator] / targets[denominator]
        for _, targets in sorted(by_round.items())
        if numerator in targets and denominator in targets
    ]


def summarise(report: dict[str, Any]) -> None:
    """Medians across rounds, per-round ratios and the issue's targets, added to `report`."""
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
    versus_reference = _per_round_ratios(rounds, SERVICE, REFERENCE)
    scaling = _per_round_ratios(rounds, SERVICE_2W, SERVICE)
    report["ratios"] = {
        "service_to_reference": {
            "per_round": versus_reference,
            "median": statistics.median(versus_reference),
        },
        "two_workers_to_one": {"per_round": scaling, "median": statistics.median(scaling)},
    }
    report["checks"] = checks(report)


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    medians = report["medians"]
    share = report["ratios"]["service_to_reference"]["median"]
    service_rss = [
        rss
        for target in (SERVICE, SERVICE_2W)
        for rss in report["memory"][target]["workers_rss_mb"]
    ]
    connections = report["settings"]["connections"]
    return [
        _check(
            f"service >= {MIN_SHARE_OF_REFERENCE:.0%} of reference rps",
            f"{share:.0%}",
            share >= MIN_SHARE_OF_REFERENCE,
        ),
        _check(
            f"service >= {MIN_RPS_ONE_CORE:,} rps on one core",
            f"{medians[SERVICE]['rps']:,.0f} rps",
            medians[SERVICE]["rps"] >= MIN_RPS_ONE_CORE,
        ),
        _check(
            f"service p99 <= {MAX_P99_MS:g} ms at {connections} connections",
            f"{medians[SERVICE]['p99_ms']:.2f} ms",
            medians[SERVICE]["p99_ms"] <= MAX_P99_MS,
        ),
        _check(
            f"each service worker < {MAX_WORKER_RSS_MB:g} MB RSS",
            f"max {max(service_rss):.1f} MB",
            max(service_rss) < MAX_WORKER_RSS_MB,
        ),
    ]


def _check(name: str, measured: str, passed: bool) -> dict[str, Any]:
    return {"name": name, "measured": measured, "passed": passed}


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
    if generator["generator_bound"]:
        lines.append(
            "NOTE: fallback Python generator (wrk not used): figures are generator-bound, "
            "a lower bound on what the servers can do"
        )
    header = f"{'target':<34} | {'rps':>9} | {'p50 ms':>6} | {'p99 ms':>6} | "
    header += f"{'CPU µs/req':>10} | {'RSS MB':>13}"
    lines += [header, "-" * len(header)]
    for target, medians in report["medians"].items():
        workers = report["memory"][target]["workers_rss_mb"]
        rss = " / ".join(f"{value:.1f}" for value in workers)
        lines.append(
            f"{report['targets'][target]['label']:<34} | {medians['rps']:>9,.0f} | "
            f"{medians['p50_ms']:>6.2f} | {medians['p99_ms']:>6.2f} | "
            f"{medians['server_cpu_us_per_request']:>10.1f} | {rss:>13}"
        )
    ratios = report["ratios"]
    lines += [
        "",
        "service / reference rps (median of per-round ratios): "
        f"{ratios['service_to_reference']['median']:.2f}",
        "service 2 workers / 1 worker rps (median of per-round ratios): "
        f"{ratios['two_workers_to_one']['median']:.2f}"
        "  (2 workers unpinned: they share both cores with the generator)",
        "",
        "targets:",
    ]
    lines += [
        f"  {'PASS' if check['passed'] else 'FAIL'}  {check['name']:<45} {check['measured']}"
        for check in report["checks"]
    ]
    return "\n".join(lines)


# --- outputs -------------------------------------------------------------------------------


def _bars(axes: Axes, bars: list[tuple[str, dict[str, Any]]], title: str) -> None:
    labels = [label for label, _ in bars]
    values = [medians["rps"] for _, medians in bars]
    drawn = axes.bar(labels, values, color=["#8c8c8c", "#2b7bba"], width=0.6)
    for bar, (_, medians) in zip(drawn, bars, strict=True):
        axes.annotate(
            f"{medians['rps']:,.0f} rps\np99 {medians['p99_ms']:.2f} ms",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    axes.set_title(title, fontsize=11)
    axes.grid(axis="y", alpha=0.3)
    axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def render(report: dict[str, Any], path: Path) -> None:
    medians = report["medians"]
    figure = Figure(figsize=(10, 4.8))
    FigureCanvasAgg(figure)  # the non-interactive backend; no display needed
    left, right = figure.subplots(1, 2, sharey=True)
    _bars(
        left,
        [
            ("reference\n(bare ASGI, 1 core)", medians[REFERENCE]),
            ("service\n(1 core)", medians[SERVICE]),
        ],
        "Service vs reference, one core each",
    )
    _bars(
        right,
        [
            ("service\n1 worker (pinned)", medians[SERVICE]),
            ("service\n2 workers (unpinned)", medians[SERVICE_2W]),
        ],
        "Service scaling",
    )
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


# --- command line --------------------------------------------------------------------------


def parse_options(argv: list[str] | None) -> Options:
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
    args = parser.parse_args(argv)
    return Options(
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        generator=args.generator,
        output_dir=args.output_dir,
        strict=args.strict,
    )


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def convert(raw: str) -> float:
        value = kind(raw)
        if value <= 0 or math.isnan(value):
            raise argparse.ArgumentTypeError(f"{raw} is not positive")
        return value

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
