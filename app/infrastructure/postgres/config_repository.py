import asyncpg

from app.application.errors import ConfigNotLoaded, VersionConflict
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.split import Split
from app.infrastructure.postgres.errors import storage_errors
from app.infrastructure.postgres.pool import read_sql

_GET_ACTIVE = read_sql("get_active_config")
_GET = read_sql("get_config")
_APPEND = read_sql("append_config")
_HISTORY = read_sql("config_history")
_PING = read_sql("ping")


def _to_version(row: asyncpg.Record) -> ConfigVersion:
    rules = row["server_rules"] or {}
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
        ),
        created_at=row["created_at"],
        comment=row["comment"],
    )


class PostgresConfigRepository:
    """Config versions in the `config_versions` table; a trigger NOTIFYs every insert."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get_active(self) -> ConfigVersion:
        async with storage_errors():
            row = await self._pool.fetchrow(_GET_ACTIVE)
        if row is None:
            raise ConfigNotLoaded("No configuration is stored: run the migrations.")
        return _to_version(row)

    async def get(self, version: int) -> ConfigVersion | None:
        async with storage_errors():
            row = await self._pool.fetchrow(_GET, version)
        return None if row is None else _to_version(row)

    async def history(self, *, limit: int, before: int | None) -> list[ConfigVersion]:
        async with storage_errors():
            rows = await self._pool.fetch(_HISTORY, limit, before)
        return [_to_version(row) for row in rows]

    async def append(
        self, config: BalancerConfig, *, after: int, comment: str | None
    ) -> ConfigVersion:
        rules = {
            server: {"cdn_weight": split.cdn_weight, "origin_weight": split.origin_weight}
            for server, split in config.server_rules.items()
        }
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
                    comment,
                )
            except asyncpg.UniqueViolationError as error:
                raise VersionConflict(f"Version {after + 1} already exists.") from error
        assert row is not None
        return _to_version(row)

    async def ping(self) -> None:
        async with storage_errors():
            await self._pool.fetchval(_PING)
