import asyncpg

from app.application.limits import LimitExists
from app.domain.ratelimit import ClientLimit, IPNetwork, RateLimit, client_id_text
from app.infrastructure.postgres.errors import storage_errors
from app.infrastructure.postgres.pool import read_sql

_INSERT = read_sql("insert_limit")
_GET = read_sql("get_limit")
_LIST = read_sql("list_limits")
_REPLACE = read_sql("replace_limit")
_DELETE = read_sql("delete_limit")
_REVISION = read_sql("limits_revision")
_ALL = read_sql("all_limits")
_COUNT = read_sql("count_limits")


def _to_limit(row: asyncpg.Record) -> ClientLimit:
    return ClientLimit(
        client_id=row["client_id"],
        limit=RateLimit(row["capacity"], row["refill_per_second"]),
        comment=row["comment"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresLimitRepository:
    """Overrides in the `rate_limits` table; a trigger announces every change."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, limit: ClientLimit) -> ClientLimit:
        async with storage_errors():
            row = await self._pool.fetchrow(
                _INSERT,
                limit.client_id,
                limit.limit.capacity,
                limit.limit.refill_per_second,
                limit.comment,
            )
        if row is None:
            raise LimitExists(
                f"There is a limit for {client_id_text(limit.client_id)} already; PUT replaces it."
            )
        return _to_limit(row)

    async def get(self, client_id: IPNetwork) -> ClientLimit | None:
        async with storage_errors():
            row = await self._pool.fetchrow(_GET, client_id)
        return None if row is None else _to_limit(row)

    async def page(self, *, limit: int, after: IPNetwork | None) -> list[ClientLimit]:
        async with storage_errors():
            rows = await self._pool.fetch(_LIST, limit, after)
        return [_to_limit(row) for row in rows]

    async def replace(self, limit: ClientLimit) -> ClientLimit | None:
        async with storage_errors():
            row = await self._pool.fetchrow(
                _REPLACE,
                limit.client_id,
                limit.limit.capacity,
                limit.limit.refill_per_second,
                limit.comment,
            )
        return None if row is None else _to_limit(row)

    async def delete(self, client_id: IPNetwork) -> bool:
        async with storage_errors():
            deleted = await self._pool.fetchval(_DELETE, client_id)
        return deleted is not None

    async def revision(self) -> int:
        async with storage_errors():
            revision = await self._pool.fetchval(_REVISION)
        return int(revision)

    async def all(self) -> list[ClientLimit]:
        async with storage_errors():
            rows = await self._pool.fetch(_ALL)
        return [_to_limit(row) for row in rows]

    async def count(self) -> int:
        async with storage_errors():
            count = await self._pool.fetchval(_COUNT)
        return int(count)
