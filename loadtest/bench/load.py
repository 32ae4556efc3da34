"""The request mix, the load generators (wrk, or loadtest/loadgen.py) and one measured round."""

import json
import platform
import random
import resource
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.bench import BenchError
from loadtest.bench.procs import busy_seconds, cpu_seconds, pinned
from loadtest.bench.servers import HOST, ROOT, Server

WRK_SCRIPT = ROOT / "loadtest" / "wrk_urls.lua"


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


def request_lines(paths: list[str], headers: Callable[[int], Mapping[str, str]] | None) -> str:
    """The generators' input: a request a line, `path` then tab-separated `Name: value`."""
    if headers is None:
        return "\n".join(paths) + "\n"
    return "".join(
        "\t".join([path, *(f"{name}: {value}" for name, value in headers(index).items())]) + "\n"
        for index, path in enumerate(paths)
    )


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
        return pinned(command, self.core)

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


def measure(
    server: Server, generator: Generator, *, duration: float, connections: int, round_no: int
) -> Measurement:
    """Load `server` for `duration` seconds; round 0 is a warm-up."""
    cpu_before, busy_before, wall_before = cpu_seconds(server.pid), busy_seconds(), time.monotonic()
    load = generator.run(server.port, connections, duration)
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
