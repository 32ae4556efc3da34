"""RSS of a worker's rate limiter after many distinct clients, measured in-process.

`python -m loadtest.ratelimit_memory --clients 1000000` drives the limiter as the redirect
path does (one `check` per request, a new address each time, settlement batches drained as
the settler drains them) with the default limit on, and prints the tracked bucket count and
the process's RSS before and after. The worker's other memory (FastAPI, the container) is
not loaded here: add the RSS `make bench` reports for a worker (about 80 MB).
"""

import argparse
import gc
import ipaddress
import json
import sys
import time
from pathlib import Path

from app.domain.ratelimit import ClientLimiter, RateLimit


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.ratelimit_memory")
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--max-clients", type=int, default=100_000)
    parser.add_argument("--ipv6", action="store_true", help="IPv6 addresses (longer keys)")
    args = parser.parse_args(argv)
    limiter = ClientLimiter(time.monotonic, max_clients=args.max_clients)
    limiter.set_default(RateLimit(100, 50.0))
    base = ipaddress.ip_address("2001:db8::" if args.ipv6 else "10.0.0.0")
    before = rss_mb()
    peak = before
    started = time.perf_counter()
    for number in range(args.clients):
        limiter.check(str(base + number))
        if number % 20_000 == 0:  # the settler drains about once a second
            limiter.take_dirty()
            limiter.take_urgent()
            peak = max(peak, rss_mb())
    elapsed = time.perf_counter() - started
    limiter.take_dirty()
    gc.collect()
    result = {
        "clients": args.clients,
        "max_clients": args.max_clients,
        "tracked_buckets": limiter.tracked,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(max(peak, rss_mb()), 1),
        "rss_after_mb": round(rss_mb(), 1),
        "us_per_check": round(elapsed / args.clients * 1e6, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
