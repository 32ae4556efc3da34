"""A configuration as JSON documents, field by field: the shape the admin API answers in and
the one each version is stored in (PostgreSQL keeps `server_rules`, `cdn_hosts`,
`cdn_health`, `rate_limit` and `regions` as these documents)."""

from dataclasses import asdict
from typing import Any

from app.domain.config import BalancerConfig
from app.domain.pacing import paced
from app.domain.pool import CdnPool
from app.domain.regions import Region


def config_fields(config: BalancerConfig) -> dict[str, Any]:
    """Every field of `config`, named as the API names it, in JSON types."""
    pools = config.server_pools
    rules: dict[str, dict[str, Any]] = {}
    for server, split in paced(config.server_rules.items()):
        rule: dict[str, Any] = {
            "cdn_weight": split.cdn_weight,
            "origin_weight": split.origin_weight,
        }
        pool = pools.get(server)
        if pool is not None:
            rule["cdn_hosts"] = pool_document(pool)
        steering = config.server_steering.get(server)
        if steering is not None:
            rule["content_steering"] = steering.document()
        rules[server] = rule
    limit = config.rate_limit
    return {
        "cdn_host": config.cdn_host,
        "cdn_weight": config.split.cdn_weight,
        "origin_weight": config.split.origin_weight,
        "redirect_status": config.redirect_status,
        "origin_domains": list(config.origin_domains),
        "server_rules": rules,
        "cdn_hosts": pool_document(config.pool),
        "cdn_health": asdict(config.cdn_health),
        "origin_fallback": config.origin_fallback,
        "down_servers": list(config.down_servers),
        "rate_limit": None
        if limit is None
        else {"capacity": limit.capacity, "refill_per_second": limit.refill_per_second},
        "regions": [region_document(region) for region in paced(config.regions)],
        "content_steering": config.content_steering.document(),
    }


def pool_document(pool: CdnPool) -> list[dict[str, Any]]:
    return [
        {"host": host.host, "weight": host.weight, "pathway": host.pathway}
        if host.pathway
        else {"host": host.host, "weight": host.weight}
        for host in pool.hosts
    ]


def region_document(region: Region) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": region.name,
        "countries": list(region.countries),
        "networks": list(region.networks),
        "cdn_hosts": pool_document(region.pool),
    }
    if region.split is not None:
        document["cdn_weight"] = region.split.cdn_weight
        document["origin_weight"] = region.split.origin_weight
    if region.steering is not None:
        document["content_steering"] = region.steering.document()
    return document
