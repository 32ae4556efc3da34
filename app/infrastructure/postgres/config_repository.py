from dataclasses import asdict
from typing import Any

import asyncpg
import structlog

from app.application.errors import ConfigNotLoaded, VersionConflict
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.health import HealthSettings
from app.domain.pool import CdnPool
from app.domain.ratelimit import RateLimit
from app.domain.regions import Region
from app.domain.split import Split
from app.infrastructure.postgres.errors import storage_errors
from app.infrastructure.postgres.pool import read_sql

_GET_ACTIVE = read_sql("get_active_config")
_GET = read_sql("get_config")
_APPEND = read_sql("append_config")
_HISTORY = read_sql("config_history")
_PING = read_sql("ping")
_SCAN_PAGE = 100

log = structlog.get_logger(__name__)


def _pool(entries: list[dict[str, Any]] | None, field: str) -> CdnPool | None:
    if entries is None:
        return None
    return CdnPool.of(((entry["host"], entry["weight"]) for entry in entries), field)


def _pool_document(pool: CdnPool) -> list[dict[str, Any]]:
    return [{"host": host.host, "weight": host.weight} for host in pool.hosts]


def _region(index: int, entry: dict[str, Any]) -> Region:
    return Region.of(
        index,
        name=entry["name"],
        countries=entry.get("countries", []),
        networks=entry.get("networks", []),
        hosts=[(host["host"], host["weight"]) for host in entry["cdn_hosts"]],
        cdn_weight=entry.get("cdn_weight"),
        origin_weight=entry.get("origin_weight"),
    )


def _region_document(region: Region) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": region.name,
        "countries": list(region.countries),
        "networks": list(region.networks),
        "cdn_hosts": _pool_document(region.pool),
    }
    if region.split is not None:
        document["cdn_weight"] = region.split.cdn_weight
        document["origin_weight"] = region.split.origin_weight
    return document


def _to_version(row: asyncpg.Record) -> ConfigVersion:
    rules = row["server_rules"] or {}
    health = row["cdn_health"] or {}
    pools = {
        server: CdnPool.of(
            ((entry["host"], entry["weight"]) for entry in rule["cdn_hosts"]),
            f"server_rules.{server}.cdn_hosts",
        )
        for server, rule in rules.items()
        if rule.get("cdn_hosts") is not None
    }
    rate_limit = row["rate_limit"]
    return ConfigVersion(
        version=row["version"],
        config=BalancerConfig(
            cdn_host=row["cdn_host"],
            split=Split(row["cdn_weight"], row["origin_weight"]),
            redirect_status=row["redirect_status"],
            origin_domains=tuple(row["origin_domains"]),
            server_rules={
                server: Split(rule["cdn_weight"], rule["origin_weight"])
                for server, rule in rules.items()
            },
            cdn_hosts=_pool(row["cdn_hosts"], "cdn_hosts"),
            cdn_health=HealthSettings(
                **{k: v for k, v in health.items() if k in HealthSettings.__dataclass_fields__}
            ),
            origin_fallback=row["origin_fallback"],
            down_servers=tuple(row["down_servers"]),
            server_pools=pools,
            rate_limit=None
            if rate_limit is None
            else RateLimit(rate_limit["capacity"], rate_limit["refill_per_second"]),
            regions=tuple(
                _region(index, entry) for index, entry in enumerate(row["regions"] or ())
            ),
        ),
        created_at=row["created_at"],
        comment=row["comment"],
    )


class PostgresConfigRepository:
    """Config versions in the `config_versions` table; a trigger NOTIFYs every insert.

    Every row read is validated as a new configuration would be. A row the current rules
    refuse (written by hand, or stored before a rule existed) is never served: in its place
    comes the newest valid version's values under the refused row's number, with a comment
    saying so, so workers start and serve, and an admin's next change (or rollback) appends
    after it as usual. Only when no stored version is valid does loading fail.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._reported: int | None = None

    async def get_active(self) -> ConfigVersion:
        async with storage_errors():
            row = await self._pool.fetchrow(_GET_ACTIVE)
        if row is None:
            raise ConfigNotLoaded("No configuration is stored: run the migrations.")
        return await self._checked(row)

    async def get(self, version: int) -> ConfigVersion | None:
        async with storage_errors():
            row = await self._pool.fetchrow(_GET, version)
        if row is None:
            return None
        try:
            return _to_version(row)
        except InvalidConfig as error:
            raise InvalidConfig(
                error.field, f"stored version {version} is refused by the current rules: {error}"
            ) from None

    async def history(self, *, limit: int, before: int | None) -> list[ConfigVersion]:
        async with storage_errors():
            rows = await self._pool.fetch(_HISTORY, limit, before)
        return [await self._checked(row) for row in rows]

    async def _checked(self, row: asyncpg.Record) -> ConfigVersion:
        try:
            return _to_version(row)
        except InvalidConfig as error:
            refused = error
        version = row["version"]
        valid = await self._newest_valid(before=version)
        if valid is None:
            raise ConfigNotLoaded(
                f"No stored configuration version is valid (version {version}: {refused})."
            )
        if self._reported != version:
            self._reported = version
            log.error(
                "config_version_refused",
                version=version,
                error=str(refused),
                serving_values_of=valid.version,
            )
        return ConfigVersion(
            version=version,
            config=valid.config,
            created_at=row["created_at"],
            comment=f"refused ({refused}); serving the values of version {valid.version}",
        )

    async def _newest_valid(self, *, before: int) -> ConfigVersion | None:
        while True:
            async with storage_errors():
                rows = await self._pool.fetch(_HISTORY, _SCAN_PAGE, before)
            if not rows:
                return None
            for row in rows:
                try:
                    return _to_version(row)
                except InvalidConfig:
                    continue
            before = rows[-1]["version"]

    async def append(
        self, config: BalancerConfig, *, after: int, comment: str | None
    ) -> ConfigVersion:
        rules: dict[str, dict[str, Any]] = {
            server: {"cdn_weight": split.cdn_weight, "origin_weight": split.origin_weight}
            for server, split in config.server_rules.items()
        }
        for server, pool in config.server_pools.items():
            rules[server]["cdn_hosts"] = _pool_document(pool)
        async with storage_errors():
            try:
                row = await self._pool.fetchrow(
                    _APPEND,
                    after,
                    config.cdn_host,
                    config.split.cdn_weight,
                    config.split.origin_weight,
                    config.redirect_status,
                    list(config.origin_domains),
                    rules,
                    _pool_document(config.pool),
                    asdict(config.cdn_health),
                    config.origin_fallback,
                    list(config.down_servers),
                    comment,
                    None
                    if config.rate_limit is None
                    else {
                        "capacity": config.rate_limit.capacity,
                        "refill_per_second": config.rate_limit.refill_per_second,
                    },
                    [_region_document(region) for region in config.regions] or None,
                )
            except asyncpg.UniqueViolationError as error:
                raise VersionConflict(f"Version {after + 1} already exists.") from error
        assert row is not None
        return _to_version(row)

    async def ping(self) -> None:
        async with storage_errors():
            await self._pool.fetchval(_PING)
