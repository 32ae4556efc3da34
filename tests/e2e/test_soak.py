"""A minute of steady load: nothing fails, latency does not creep up, memory stays flat.

Latency on a machine shared with other work moves with that work (other test sessions here,
noisy neighbours elsewhere) far more than with the balancer: the p99 of a window of 10 s can
go from 0.5 ms to 7 ms while the balancer does nothing different. So the bare reference
redirect of `make bench` takes the same fixed load at the same time, and what the machine did
to its p99 between the first and the last window is allowed on top of the 2x the balancer may
drift. That allowance must not hide a balancer that slows down by burning CPU (on two cores
it slows the reference too), so the CPU time its workers spend per request must hold as well.
"""

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import pytest

from loadtest.bench.servers import reference_server
from loadtest.steady import Answer, SteadyLoad
from loadtest.support import ServerProcess
from tests.support.servers import reset_config, server_environ

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
RATE = 500  # requests/s: fixed, so that the percentiles of two windows compare
WORKERS = 2
WARM_UP = 5.0  # s: connections, caches and the first leases before memory is measured
SOAK = 60.0
WINDOW = 10.0
MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def window(answers: Sequence[Answer], start: float, seconds: float) -> list[Answer]:
    return [answer for answer in answers if start <= answer.sent < start + seconds]


def p99(answers: Sequence[Answer]) -> float:
    latencies = sorted(answer.latency for answer in answers)
    return latencies[int(0.99 * len(latencies))]


@pytest.mark.slow
async def test_a_minute_of_steady_load_has_no_errors_a_stable_p99_and_flat_memory(
    database_url: str, redis_url: str, sequence_key: str, tmp_path: Path
) -> None:
    server = ServerProcess(
        server_environ(database_url, redis_url, sequence_key, log_format="json"), workers=WORKERS
    )
    reference = reference_server(None, tmp_path)
    path = f"/?video={quote(VIDEO, safe='')}"
    await asyncio.to_thread(server.start)
    try:
        reference.start()
        await asyncio.to_thread(reference.wait_ready)
        await asyncio.to_thread(reset_config, server.url)
        load = SteadyLoad("127.0.0.1", server.port, path, rate=RATE, workers=WORKERS)
        # One worker at one balancer worker's share of the load.
        control = SteadyLoad("127.0.0.1", reference.port, path, rate=RATE / WORKERS, workers=0)
        async with load, control:
            await asyncio.sleep(WARM_UP)
            workers = sorted(load.workers)
            rss_before = [rss_bytes(pid) for pid in workers]
            start = time.monotonic()
            # CPU at the edges of the first and the last window
            cpu = [sum(map(cpu_seconds, workers))]
            await asyncio.sleep(WINDOW)
            cpu.append(sum(map(cpu_seconds, workers)))
            await asyncio.sleep(SOAK - 2 * WINDOW)
            cpu.append(sum(map(cpu_seconds, workers)))
            await asyncio.sleep(WINDOW)
            cpu.append(sum(map(cpu_seconds, workers)))
            rss_after = [rss_bytes(pid) for pid in workers]
    finally:
        reference.stop()
        await asyncio.to_thread(server.stop)

    soak = window(load.answers, start, SOAK)
    first, last = window(soak, start, WINDOW), window(soak, start + SOAK - WINDOW, WINDOW)
    machine_first = p99(window(control.answers, start, WINDOW))
    machine_last = p99(window(control.answers, start + SOAK - WINDOW, WINDOW))
    cpu_first = (cpu[1] - cpu[0]) / len(first)
    cpu_last = (cpu[3] - cpu[2]) / len(last)
    errors = [answer for answer in load.answers if answer.status != 301]
    growth = [(after - before) / MB for before, after in zip(rss_before, rss_after, strict=True)]
    print(
        f"\nsoak: {len(soak)} requests in {SOAK:.0f} s at {RATE}/s on {len(workers)} workers "
        f"(after {WARM_UP:.0f} s of warm-up), {len(errors)} errors; p99 "
        f"{p99(first) * 1000:.2f} ms in the first {WINDOW:.0f} s, {p99(last) * 1000:.2f} ms in "
        f"the last (the bare reference: {machine_first * 1000:.2f} ms, "
        f"{machine_last * 1000:.2f} ms); worker CPU per request {cpu_first * 1e6:.0f} us, "
        f"{cpu_last * 1e6:.0f} us; RSS "
        + ", ".join(
            f"{before / MB:.1f} -> {after / MB:.1f} MB"
            for before, after in zip(rss_before, rss_after, strict=True)
        )
    )
    assert len(workers) == WORKERS
    assert errors == []
    assert len(soak) >= 0.9 * RATE * SOAK  # the load was what it says
    assert cpu_last <= 2 * cpu_first
    assert p99(last) <= 2 * p99(first) * max(1.0, machine_last / machine_first)
    assert max(growth) < 10
