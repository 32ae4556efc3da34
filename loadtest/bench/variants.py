"""The service variants `make bench` measures and the request mixes they are fed; each is
held against the two references (raw protocol, bare ASGI) fed the same mix.

Every feature that touches the redirect path adds the variant that proves what it costs.
"""

import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

from loadtest.bench.servers import Variant
from loadtest.fake_cdn import FakeCdn

SERVICE = "service"
SERVICE_2W = "service-2w"
SERVICE_POOL = "service-pool"
# The same service with counting off: what /metrics and /stats cost on the redirect path.
METRICS_OFF = "service-metrics-off"
# Every request through uvicorn's ASGI cycle: what answering from the parser buys.
FAST_PATH_OFF = "service-fast-path-off"


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

# First octets of blocks that the RIRs delegated to many countries (RIPE, ARIN, APNIC,
# LACNIC, AFRINIC): 8 x 512 = 4,096 distinct public viewers over the three regions and none.
_VIEWER_PREFIXES = (85, 90, 81, 8, 24, 1, 126, 200)


def viewer_address(index: int) -> str:
    """One of 4,096 public addresses, the same for the same `index % 4096`; consecutive
    indexes take turns over the eight blocks, so any few requests in a row span the regions."""
    index %= 4096
    prefix, rest = _VIEWER_PREFIXES[index & 7], index >> 3
    return f"{prefix}.{rest & 63}.{(rest >> 6) * 31 + 1}.{rest % 250 + 1}"


def forwarded_for(index: int) -> Mapping[str, str]:
    """Request `index` comes through the trusted proxy (127.0.0.1) from a public viewer of its
    own (2,000 of them over the 2,000 URLs of the mix)."""
    return {"X-Forwarded-For": viewer_address(index)}


def rate_limited(_: ExitStack) -> Mapping[str, Any]:
    return {"rate_limit": BENCH_RATE_LIMIT}


REGIONS = "service-regions"


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


def every_feature(cleanup: ExitStack) -> Mapping[str, Any]:
    """The three regions and the global pool of three, health checks on, and the rate limit."""
    return {**three_regions(cleanup), "rate_limit": BENCH_RATE_LIMIT}


EVERY_FEATURE = "service-every-feature"

# The request mixes: request `i` of a mix gets these headers (None: the URL alone). The
# references are fed every mix a variant is, so a ratio measures what the service adds, not
# what the request carries: both parse the header and resolve it (one trusted peer, the
# rightmost untrusted address), the ASGI one through uvicorn's proxy-headers middleware.
XFF = "xff"
MIXES: dict[str, Callable[[int], Mapping[str, str]] | None] = {"": None, XFF: forwarded_for}

VARIANTS: tuple[Variant, ...] = (
    Variant(SERVICE, "service, default config", at_least_of=(METRICS_OFF, 0.95), goal_of_raw=0.70),
    Variant(METRICS_OFF, "service, metrics off", environ={"BALANCER_METRICS": "false"}),
    Variant(
        FAST_PATH_OFF,
        "service, fast path off (all through ASGI)",
        environ={"BALANCER_FAST_PATH": "false"},
    ),
    Variant(SERVICE_2W, "service", workers=2, pinned=False),
    Variant(SERVICE_POOL, "service, pool of 3 with health checks", config=pool_of_three),
    Variant(
        LOAD_REPORTS,
        "service, pool of 3, agent load reports changing every second",
        config=pool_reporting_load,
        at_least_of=(SERVICE_POOL, 0.95),
    ),
    Variant(FORWARDED, "service, 2,000 clients via XFF, limits off", mix=XFF),
    Variant(
        LIMITED,
        "service, 2,000 clients via XFF, rate limit on",
        config=rate_limited,
        mix=XFF,
        at_least_of=(FORWARDED, 0.95),
    ),
    Variant(
        REGIONS,
        "service, 3 regions, 2,000 viewers via XFF",
        config=three_regions,
        mix=XFF,
        at_least_of=(FORWARDED, 0.95),
    ),
    Variant(
        EVERY_FEATURE,
        "service, every feature, 2,000 viewers via XFF",
        config=every_feature,
        mix=XFF,
        goal_of_raw=0.40,
        goal_of_asgi=0.90,
    ),
)
