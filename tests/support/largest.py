"""The largest configuration the balancer accepts, as a `PATCH /config` body.

Every count at its cap: 64 regions of 64 CDN hosts each, with every ISO country and 10,000
networks between them (half IPv4, half IPv6); 10,000 server rules, 63 of them with a pool
of 64 hosts (8,192 hosts over all pools with the global 64 and the regions' 4,096);
10,000 down servers; 32 origin domains, `origin-cluster` first. Names are of the length
operators write (`r07-12.edge.<tag>.video-cdn.example.com`). About 1.6 MB of JSON.

`tag` goes into every host name and seeds the networks, so two tags share no host and no
network: a worker that read one has nothing of the other cached.
"""

import random
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from iso3166 import countries_by_alpha2

from app.domain.config import MAX_ORIGIN_DOMAINS, MAX_SERVER_RULES
from app.domain.pool import MAX_HOSTS_IN_ALL, MAX_POOL_HOSTS
from app.domain.regions import MAX_NETWORKS, MAX_REGIONS

COUNTRIES = sorted(countries_by_alpha2)


def pool(prefix: str, tag: str, size: int = MAX_POOL_HOSTS) -> list[dict[str, Any]]:
    return [
        {"host": f"{prefix}-{n:02d}.edge.{tag}.video-cdn.example.com", "weight": 1 + n % 3}
        for n in range(size)
    ]


def networks(total: int, tag: str) -> list[str]:
    """`total` distinct canonical CIDR blocks, half IPv4 (/16 to /32), half IPv6."""
    draw = random.Random(tag)
    found: set[str] = set()
    while len(found) < total:
        if len(found) % 2:
            length = draw.choice((32, 40, 48, 56, 64))
            found.add(str(IPv6Network((draw.getrandbits(length) << (128 - length), length))))
        else:
            length = draw.choice((16, 20, 24, 28, 32))
            found.add(str(IPv4Network((draw.getrandbits(length) << (32 - length), length))))
    return sorted(found)


def server(number: int) -> str:
    return f"edge-server-{number:05d}"


def largest_config(tag: str = "a", *, networks_in_one_region: bool = False) -> dict[str, Any]:
    """The body; `networks_in_one_region` puts all 10,000 networks in the first region."""
    blocks = networks(MAX_NETWORKS, tag)
    regions = []
    for index in range(MAX_REGIONS):
        if networks_in_one_region:
            mine = blocks if index == 0 else []
        else:
            mine = blocks[index::MAX_REGIONS]
        regions.append(
            {
                "name": f"region-{index:02d}",
                "countries": COUNTRIES,
                "networks": mine,
                "cdn_hosts": pool(f"r{index:02d}", tag),
                "cdn_weight": 4000 - index,  # a period of its own, short enough to be listed
                "origin_weight": 1 + index,
            }
        )
    hosts_left = MAX_HOSTS_IN_ALL - MAX_POOL_HOSTS * (1 + MAX_REGIONS)
    rules: dict[str, Any] = {}
    for number in range(MAX_SERVER_RULES):
        rule: dict[str, Any] = {"cdn_weight": 1 + number % 7, "origin_weight": 1}
        if number < hosts_left // MAX_POOL_HOSTS:
            rule["cdn_hosts"] = pool(f"s{number:02d}", tag)
        rules[server(number)] = rule
    return {
        "cdn_hosts": pool("global", tag),
        "origin_domains": [
            "origin-cluster",  # the players' videos of the other tests stay allowed
            *(f"origin-{n:02d}.video.internal" for n in range(1, MAX_ORIGIN_DOMAINS)),
        ],
        "server_rules": rules,
        "down_servers": [server(number) for number in range(MAX_SERVER_RULES)],
        "regions": regions,
    }
