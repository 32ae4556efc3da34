"""Instructions per redirect, counted by callgrind: exact and repeatable where `make bench`
swings by tens of percent between rounds, so a change on the redirect path can be weighed.

One process feeds the bench's request mix through the real HTTP protocol (uvicorn's
httptools protocol as the service runs it), the redirect front, the limiter and the tally;
there are no sockets, so the kernel's share of a request is not in it. Each mode runs twice
under valgrind, with 2,000 and 12,000 requests, and the difference per request is printed:
start-up falls out. Speed and memory are claimed from `make bench`; this says where the
instructions go.

    .venv/bin/python -m loadtest.instructions                    # every mode
    .venv/bin/python -m loadtest.instructions --modes xff,limits
"""

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from app.application.metrics import TICK_SECONDS, Tally
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.pool import CdnPool
from app.domain.ratelimit import ClientLimiter, RateLimit
from app.domain.regions import Region
from app.domain.split import Split
from app.infrastructure.geoip import BundledCountries
from app.presentation.edge.protocol import EdgeProtocol
from app.presentation.edge.redirect import RedirectFront
from loadtest.bench.load import video_paths
from loadtest.bench.variants import BENCH_RATE_LIMIT, forwarded_for

# mode -> (sends X-Forwarded-For, rate limit on, metrics on, regions), as the bench's variants
MODES = {
    "service": (False, False, True, False),
    "metrics-off": (False, False, False, False),
    "xff": (True, False, True, False),
    "limits": (True, True, True, False),
    "regions": (True, False, True, True),
    "every-feature": (True, True, True, True),
}
FEW, MANY = 2_000, 12_000
# Requests between two folds of the tally: what a TICK_SECONDS tick sees at 15,000/s.
FOLD_EVERY = round(15_000 * TICK_SECONDS)


class _Sink:
    """The transport: takes the answers and drops them."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)


class _Sequence:
    """Numbers from memory, as a worker hands out a leased block."""

    def __init__(self) -> None:
        self.taken: Counter[str] = Counter()

    def next(self, key: str) -> int:
        self.taken[key] += 1
        return self.taken[key] - 1

    def peek(self, key: str) -> int:
        return self.taken[key]


async def _never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("every request of the mix is answered by the protocol")


def requests(forwarded: bool) -> list[bytes]:
    heads = []
    for index, path in enumerate(video_paths()):
        headers = "".join(f"{name}: {value}\r\n" for name, value in forwarded_for(index).items())
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n{headers if forwarded else ''}\r\n"
        heads.append(head.encode())
    return heads


def regions_config() -> BalancerConfig:
    """The bench's `three_regions`: a global pool of three at 3:2:1 and three regions by
    country (one also by network) with pools of two (no host is probed in this loop)."""

    def pool(name: str, weights: tuple[int, ...]) -> CdnPool:
        return CdnPool.of([(f"{name}{n}.example.com", w) for n, w in enumerate(weights)])

    regions = (
        Region(
            "eu",
            pool("eu", (1, 1)),
            ("DE", "FR", "GB", "NL", "IT", "ES", "SE", "PL"),
            ("10.20.0.0/16",),
        ),
        Region("us", pool("us", (1, 1)), ("US", "CA"), split=Split(4, 1)),
        Region("apac", pool("apac", (1, 1)), ("JP", "CN", "KR", "AU", "IN", "SG")),
    )
    return BalancerConfig(
        "cdn.example.com", Split(9, 1), cdn_hosts=pool("cdn", (3, 2, 1)), regions=regions
    )


async def feed(mode: str, count: int) -> tuple[Tally | None, ClientLimiter]:
    """Feed `count` requests of the mix; the tally and limiter they went through."""
    forwarded, limited, counted, regional = MODES[mode]
    snapshot = ConfigSnapshot(BundledCountries() if regional else None)
    config = regions_config() if regional else BalancerConfig("cdn.example.com", Split(9, 1))
    snapshot.offer(ConfigVersion(1, config, datetime.now(UTC)))
    limiter = ClientLimiter(time.monotonic)
    if limited:
        limiter.set_default(RateLimit(**BENCH_RATE_LIMIT))
    tally = Tally() if counted else None
    front = RedirectFront(_never)
    front.bind(RedirectVideo(snapshot, _Sequence()), limiter, snapshot, tally)
    uvicorn = Config(front, http="httptools", lifespan="off", log_config=None, access_log=False)
    uvicorn.load()  # wraps the front in the proxy-headers middleware, 127.0.0.1 trusted
    protocol = EdgeProtocol(
        uvicorn, ServerState(), {}, asyncio.get_running_loop(), max_head_bytes=8192, read_timeout=60
    )
    protocol.connection_made(_Sink())  # type: ignore[arg-type]
    protocol.keep_alive_seconds = 3600
    heads = requests(forwarded)
    tick: Callable[[], None] = tally.tick if tally is not None else (lambda: None)
    for number in range(count):
        protocol.data_received(heads[number % len(heads)])
        if number % FOLD_EVERY == 0:
            tick()
    if protocol.idle_timer is not None:
        protocol.idle_timer.cancel()
    return tally, limiter


def instructions(mode: str, count: int, workdir: Path) -> int:
    command = [
        *("valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/{mode}.{count}"),
        *(sys.executable, "-m", "loadtest.instructions", "--feed", mode, str(count)),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"refs:\s+([\d,]+)", result.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.instructions", description=__doc__)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--feed", nargs=2, metavar=("MODE", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feed:
        asyncio.run(feed(args.feed[0], int(args.feed[1])))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as workdir, ThreadPoolExecutor() as pool:
        runs = {
            (mode, count): pool.submit(instructions, mode, count, Path(workdir))
            for mode in modes
            for count in (FEW, MANY)
        }
        for mode in modes:
            per_request = (runs[mode, MANY].result() - runs[mode, FEW].result()) / (MANY - FEW)
            print(f"{mode:<12} {per_request:>9,.0f} instructions per request", flush=True)


if __name__ == "__main__":
    main()
