import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import asyncpg
import structlog

from app.application.documents import config_fields
from app.application.errors import ConfigNotLoaded, VersionConflict
from app.application.offload import off_loop
from app.application.ports import StoredVersion
from app.domain.access import Actor
from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.pacing import paced
from app.domain.pool import CdnPool
from app.domain.ratelimit import RateLimit
from app.domain.regions import Region, steering_settings
from app.domain.split import Split
from app.domain.steering import SteeringSettings
from app.infrastructure.postgres.errors import storage_errors
from app.infrastructure.postgres.pool import read_sql

_READ = read_sql("read_versions")
_APPEND = read_sql("append_config")
_HISTORY_DOCUMENTS = read_sql("history_documents")
# The configuration's fields, as the API and the columns name them.
_FIELDS = (
    "cdn_host",
    "cdn_weight",
    "origin_weight",
    "redirect_status",
    "origin_domains",
    "server_rules",
    "cdn_hosts",
    "cdn_health",
    "origin_fallback",
    "down_servers",
    "rate_limit",
    "regions",
    "content_steering",
)
_PING = read_sql("ping")
_SCAN_PAGE = 100
_HISTORY_PAGE = 10

log = structlog.get_logger(__name__)


def _hosts(entries: list[dict[str, Any]]) -> list[tuple[object, ...]]:
    return [(entry["host"], entry["weight"], entry.get("pathway")) for entry in entries]


def _pool(entries: list[dict[str, Any]] | None, field: str) -> CdnPool | None:
    if entries is None:
        return None
    return CdnPool.of(_hosts(entries), field)


def _region(index: int, entry: dict[str, Any]) -> Region:
    return Region.of(
        index,
        name=entry["name"],
        countries=entry.get("countries", []),
        networks=entry.get("networks", []),
        hosts=_hosts(entry["cdn_hosts"]),
        cdn_weight=entry.get("cdn_weight"),
        origin_weight=entry.get("origin_weight"),
        content_steering=entry.get("content_steering"),
    )


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _entries(texts: list[str] | None, field: str, kind: str) -> list[Any]:
    if texts is None:
        raise InvalidConfig(field, f"is not {kind}")
    return [json.loads(text) for text in paced(texts)]


def _to_version(row: asyncpg.Record) -> ConfigVersion:
    """The row (its documents as JSON text, see the SQL) as a version; InvalidConfig when
    the current rules refuse it."""
    rules: dict[str, Any] = dict(_entries(row["server_rules"], "server_rules", "an object"))
    health: dict[str, Any] = _json(row["cdn_health"]) or {}
    rate_limit = _json(row["rate_limit"])
    pools = {
        server: CdnPool.of(_hosts(rule["cdn_hosts"]), f"server_rules.{server}.cdn_hosts")
        for server, rule in paced(rules.items())
        if rule.get("cdn_hosts") is not None
    }
    steering = {
        server: settings
        for server, rule in paced(rules.items())
        if (
            settings := steering_settings(
                rule.get("content_steering"), f"server_rules.{server}.content_steering"
            )
        )
        is not None
    }
    return ConfigVersion(
        version=row["version"],
        config=BalancerConfig(
            cdn_host=row["cdn_host"],
            split=Split(row["cdn_weight"], row["origin_weight"]),
            redirect_status=row["redirect_status"],
            origin_domains=tuple(row["origin_domains"]),
            server_rules={
                server: Split(rule["cdn_weight"], rule["origin_weight"])
                for server, rule in paced(rules.items())
            },
            cdn_hosts=_pool(_json(row["cdn_hosts"]), "cdn_hosts"),
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
                _region(index, entry)
                for index, entry in enumerate(paced(_entries(row["regions"], "regions", "a list")))
            ),
            content_steering=SteeringSettings.of(
                _json(row["content_steering"]) or {}, "content_steering"
            ),
            server_steering=steering,
        ),
        created_at=row["created_at"],
        comment=row["comment"],
    )


def _to_versions(rows: list[asyncpg.Record]) -> list[ConfigVersion | InvalidConfig]:
    """Each row as a version, or what the current rules refuse in it."""
    versions: list[ConfigVersion | InvalidConfig] = []
    for row in rows:
        try:
            versions.append(_to_version(row))
        except InvalidConfig as error:
            versions.append(error)
    return versions


def _documents(config: BalancerConfig) -> tuple[str, str, str, str | None, str | None, str]:
    """The JSON text of server_rules, cdn_hosts, cdn_health, rate_limit, regions and
    content_steering, the
    long ones written entry by entry, as they are read: no single call holds the loop up."""
    fields = config_fields(config)
    rules = (
        f"{json.dumps(server)}: {json.dumps(rule)}"
        for server, rule in paced(fields["server_rules"].items())
    )
    regions = [json.dumps(region) for region in paced(fields["regions"])]
    limit = fields["rate_limit"]
    return (
        "{" + ", ".join(rules) + "}",
        json.dumps(fields["cdn_hosts"]),
        json.dumps(fields["cdn_health"]),
        None if limit is None else json.dumps(limit),
        "[" + ", ".join(regions) + "]" if regions else None,
        json.dumps(fields["content_steering"]),
    )


class PostgresConfigRepository:
    """Config versions in the `config_versions` table; a trigger NOTIFYs every insert.

    Every row read is validated as a new configuration would be. A row the current rules
    refuse (written by hand, or stored before a rule existed) is never served: in its place
    comes the newest valid version's values under the refused row's number, with a comment
    saying so, so workers start and serve, and an admin's next change (or rollback) appends
    after it as usual. Only when no stored version is valid does loading fail.

    Validating the largest configuration takes tens of milliseconds, so rows are read into
    versions in a thread (the event loop answers redirects meanwhile), and the active
    version is read once: rows are never updated, so while no newer one is stored
    `get_active` answers the one it has without reading it again.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._reported: int | None = None
        self._active: ConfigVersion | None = None

    async def get_active(self) -> ConfigVersion:
        known = self._active
        async with storage_errors():
            row = await self._pool.fetchrow(_READ, 0 if known is None else known.version, None, 1)
        if row is None:
            if known is not None:
                return known
            raise ConfigNotLoaded("No configuration is stored: run the migrations.")
        (version,) = await off_loop(_to_versions, [row])
        active = await self._checked(row, version)
        if self._active is None or self._active.version < active.version:
            self._active = active
        return active

    async def get(self, version: int) -> ConfigVersion | None:
        async with storage_errors():
            row = await self._pool.fetchrow(_READ, version - 1, version + 1, 1)
        if row is None:
            return None
        (found,) = await off_loop(_to_versions, [row])
        if isinstance(found, InvalidConfig):
            raise InvalidConfig(
                found.field, f"stored version {version} is refused by the current rules: {found}"
            ) from None
        return found

    async def history(self, *, limit: int, before: int | None) -> AsyncIterator[StoredVersion]:
        # A few at a time: 100 of the largest are 160 MB, more than one query should carry
        # within the database timeout.
        while limit > 0:
            async with storage_errors():
                rows = await self._pool.fetch(_HISTORY_DOCUMENTS, min(limit, _HISTORY_PAGE), before)
            for row in rows:
                fields = {name: row[name] for name in _FIELDS}
                # Rows written before health checks hold only some settings (or none).
                health, stored = asdict(HealthSettings()), json.loads(fields["cdn_health"])
                health.update((name, stored[name]) for name in health if name in stored)
                fields["cdn_health"] = json.dumps(health)
                actor = None
                if row["actor"] is not None:
                    actor = Actor(row["actor"], row["actor_issuer"], row["actor_address"])
                yield StoredVersion(
                    row["version"], row["created_at"], row["comment"], fields, actor
                )
            if len(rows) < min(limit, _HISTORY_PAGE):
                return
            limit, before = limit - len(rows), rows[-1]["version"]

    async def _checked(
        self, row: asyncpg.Record, version: ConfigVersion | InvalidConfig
    ) -> ConfigVersion:
        if isinstance(version, ConfigVersion):
            return version
        refused = version
        number = row["version"]
        valid = await self._newest_valid(before=number)
        if valid is None:
            raise ConfigNotLoaded(
                f"No stored configuration version is valid (version {number}: {refused})."
            )
        if self._reported != number:
            self._reported = number
            log.error(
                "config_version_refused",
                version=number,
                error=str(refused),
                serving_values_of=valid.version,
            )
        return ConfigVersion(
            version=number,
            config=valid.config,
            created_at=row["created_at"],
            comment=f"refused ({refused}); serving the values of version {valid.version}",
        )

    async def _newest_valid(self, *, before: int) -> ConfigVersion | None:
        while True:
            async with storage_errors():
                rows = await self._pool.fetch(_READ, 0, before, _SCAN_PAGE)
            if not rows:
                return None
            for version in await off_loop(_to_versions, rows):
                if isinstance(version, ConfigVersion):
                    return version
            before = rows[-1]["version"]

    async def append(
        self,
        config: BalancerConfig,
        *,
        after: int,
        comment: str | None,
        actor: Actor | None = None,
    ) -> ConfigVersion:
        rules, hosts, health, rate_limit, regions, steering = await off_loop(_documents, config)
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
                    hosts,
                    health,
                    config.origin_fallback,
                    list(config.down_servers),
                    comment,
                    rate_limit,
                    regions,
                    actor and actor.name,
                    actor and actor.issuer,
                    actor and actor.address,
                    steering,
                )
            except asyncpg.UniqueViolationError as error:
                raise VersionConflict(f"Version {after + 1} already exists.") from error
        assert row is not None
        saved = ConfigVersion(row["version"], config, row["created_at"], row["comment"])
        self._active = saved  # the newest now, unless another worker's append comes after
        return saved

    async def ping(self) -> None:
        async with storage_errors():
            await self._pool.fetchval(_PING)
