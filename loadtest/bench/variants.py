"""The service variants `make bench` measures, each against the same bare reference.

Every feature that touches the redirect path adds the variant that proves what it costs.
"""

import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

from loadtest.bench.servers import REFERENCE, Variant
from loadtest.fake_cdn import FakeCdn

SERVICE = "service"
SERVICE_2W = "service-2w"
SERVICE_POOL = "service-pool"
# The same service with counting off: what /metrics and /stats cost on the redirect path.
METRICS_OFF = "service-metrics-off"


def pool_of_three(cleanup: ExitStack) -> Mapping[str, Any]:
    """Three real loopback CDN hosts at 3:2:1 with health checks on (default timings), so
    the service probes them in the background and spreads CDN redirects over all three."""
    hosts = []
    for _ in range(3):
        host = FakeCdn().start()
        cleanup.callback(host.stop)
        hosts.append(host)
    return {
        "cdn_hosts": [
            {"host": host.host, "weight": weight}
            for host, weight in zip(hosts, (3, 2, 1), strict=True)
        ],
        "cdn_health": {"enabled": True},
    }


LOAD_REPORTS = "service-pool-load"


def pool_reporting_load(cleanup: ExitStack) -> Mapping[str, Any]:
    """Three loopback CDN hosts at 3:2:1 probed every second with HAProxy agent reports
    on, each answering a new percentage every second (`up 20%` to `up 100%`): every probe
    round moves the weights, and every worker lays out its rotations again."""
    hosts = [FakeCdn().start() for _ in range(3)]
    stop = threading.Event()

    def report() -> None:
        turn = 0
        while not stop.is_set():
            for index, host in enumerate(hosts):
                body = f"up {20 + (turn * 37 + index * 23) % 81}%\n".encode()
                host.answer = (
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                    % len(body)
                ) + body
            turn += 1
            stop.wait(1.0)

    threading.Thread(target=report, daemon=True).start()
    cleanup.callback(stop.set)
    for host in hosts:
        cleanup.callback(host.stop)
    return {
        "cdn_hosts": [
            {"host": host.host, "weight": weight}
            for host, weight in zip(hosts, (3, 2, 1), strict=True)
        ],
        "cdn_health": {
            "enabled": True,
            "method": "GET",
            "load": "agent",
            "interval_seconds": 1.0,
            "timeout_seconds": 0.5,
        },
    }


FORWARDED = "service-xff"
LIMITED = "service-limits"
# Far above what one of the 2,000 clients sends (~15 requests/s each at 30,000/s): every
# request is admitted, and each is counted for settlement.
BENCH_RATE_LIMIT = {"capacity": 1000, "refill_per_second": 500}


def forwarded_for(index: int) -> Mapping[str, str]:
    """Request `index` comes through the trusted proxy (127.0.0.1) from a client of its own."""
    return {"X-Forwarded-For": f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"}


def rate_limited(_: ExitStack) -> Mapping[str, Any]:
    return {"rate_limit": BENCH_RATE_LIMIT}


REGIONS = "service-regions"
# First octets of blocks that the RIRs delegated to many countries (RIPE, ARIN, APNIC,
# LACNIC, AFRINIC): 8 x 512 = 4,096 distinct public viewers over the three regions and none.
_VIEWER_PREFIXES = (85, 90, 81, 8, 24, 1, 126, 200)


def viewer_address(index: int) -> str:
    """One of 4,096 public addresses, the same for the same `index % 4096`."""
    index %= 4096
    prefix = _VIEWER_PREFIXES[index >> 9]
    return f"{prefix}.{(index >> 3) & 63}.{(index & 7) * 31 + 1}.{(index >> 1) % 250 + 1}"


def geo_forwarded_for(index: int) -> Mapping[str, str]:
    """Request `index` comes through the trusted proxy (127.0.0.1) from a public viewer."""
    return {"X-Forwarded-For": viewer_address(index)}


def three_regions(cleanup: ExitStack) -> Mapping[str, Any]:
    """Three regions by country (the bundled iptocc RIR data) and one by network, each with
    a pool of two real loopback CDN hosts, health checks on; unmatched viewers get the global
    pool of three."""
    config = dict(pool_of_three(cleanup))

    def pool() -> list[dict[str, Any]]:
        hosts = []
        for _ in range(2):
            host = FakeCdn().start()
            cleanup.callback(host.stop)
            hosts.append({"host": host.host, "weight": 1})
        return hosts

    config["regions"] = [
        {
            "name": "eu",
            "countries": ["DE", "FR", "GB", "NL", "IT", "ES", "SE", "PL"],
            "networks": ["10.20.0.0/16"],
            "cdn_hosts": pool(),
        },
        {
            "name": "us",
            "countries": ["US", "CA"],
            "cdn_hosts": pool(),
            "origin_weight": 1,
            "cdn_weight": 4,
        },
        {"name": "apac", "countries": ["JP", "CN", "KR", "AU", "IN", "SG"], "cdn_hosts": pool()},
    ]
    return config


# The reference fed the same requests as the variants that send X-Forwarded-For: it parses
# the header too, and uvicorn's proxy-headers middleware resolves it (one trusted peer, as for
# the service), so the ratio measures what the service adds, not what the request carries.
REFERENCE_XFF = f"{REFERENCE}-xff"
REFERENCE_GEO = f"{REFERENCE}-geo"
REFERENCES: dict[str, Callable[[int], Mapping[str, str]] | None] = {
    REFERENCE: None,
    REFERENCE_XFF: forwarded_for,
    REFERENCE_GEO: geo_forwarded_for,
}

VARIANTS: tuple[Variant, ...] = (
    Variant(SERVICE, "service, default config", at_least_of=(METRICS_OFF, 0.95)),
    Variant(METRICS_OFF, "service, metrics off", environ={"BALANCER_METRICS": "false"}),
    Variant(SERVICE_2W, "service", workers=2, pinned=False),
    Variant(SERVICE_POOL, "service, pool of 3 with health checks", config=pool_of_three),
    Variant(
        LOAD_REPORTS,
        "service, pool of 3 with agent load reports changing every second",
        config=pool_reporting_load,
        at_least_of=(SERVICE_POOL, 0.95),
    ),
    Variant(
        FORWARDED,
        "service, 2,000 clients via X-Forwarded-For, limits off",
        headers=forwarded_for,
        reference=REFERENCE_XFF,
    ),
    Variant(
        LIMITED,
        "service, 2,000 clients via X-Forwarded-For, rate limit on",
        config=rate_limited,
        headers=forwarded_for,
        reference=REFERENCE_XFF,
        at_least_of=(FORWARDED, 0.95),
    ),
    Variant(
        REGIONS,
        "service, 3 regions, 4,096 public viewers via X-Forwarded-For",
        config=three_regions,
        headers=geo_forwarded_for,
        reference=REFERENCE_GEO,
        at_least_of=(FORWARDED, 0.95),
    ),
)
