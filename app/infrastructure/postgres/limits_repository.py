import socket

import asyncpg

from app.application.limits import MAX_LIMITS, LimitExists, TooManyLimits
from app.application.ports import EnforcedPage, LimitChange, LimitEvent, LimitsRevision
from app.domain.access import Actor
from app.domain.ratelimit import ClientLimit, IPNetwork, RateLimit, client_id_text
from app.infrastructure.postgres.errors import storage_errors
from app.infrastructure.postgres.pool import read_sql

_INSERT = read_sql("insert_limit")
_GET = read_sql("get_limit")
_LIST = read_sql("list_limits")
_REPLACE = read_sql("replace_limit")
_DELETE = read_sql("delete_limit")
_HISTORY = read_sql("limit_history")
_REVISION = read_sql("limits_revision")
_CHANGES = read_sql("limits_changes")
_ALL = read_sql("all_limits")
_ALL_AFTER = read_sql("all_limits_after")
_COUNT = read_sql("count_limits")
# The CHECK on rate_limits_revision.overrides (db/migrations), at MAX_LIMITS.
_CAP = "rate_limits_cap"


def _to_limit(row: asyncpg.Record) -> ClientLimit:
    return ClientLimit(
        client_id=row["client_id"],
        limit=RateLimit(row["capacity"], row["refill_per_second"]),
        comment=row["comment"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        actor=_stored_actor(row),
    )


def _stored_actor(row: asyncpg.Record) -> Actor | None:
    if row["actor"] is None:
        return None
    return Actor(row["actor"], row["actor_issuer"], row["actor_address"])


def _actor(limit: ClientLimit) -> tuple[str | None, str | None, str | None]:
    actor = limit.actor
    return (None, None, None) if actor is None else (actor.name, actor.issuer, actor.address)


class PostgresLimitRepository:
    """Overrides in the `rate_limits` table; a trigger announces every change."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, limit: ClientLimit) -> ClientLimit:
        async with storage_errors():
            try:
                row = await self._pool.fetchrow(
                    _INSERT,
                    limit.client_id,
                    limit.limit.capacity,
                    limit.limit.refill_per_second,
                    limit.comment,
                    *_actor(limit),
                )
            except asyncpg.CheckViolationError as error:
                if error.constraint_name != _CAP:
                    raise
                raise TooManyLimits(
                    f"At most {MAX_LIMITS:,} overrides can be stored; delete some first."
                ) from None
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
                *_actor(limit),
            )
        return None if row is None else _to_limit(row)

    async def delete(self, client_id: IPNetwork, actor: Actor | None = None) -> bool:
        who = (None, None, None) if actor is None else (actor.name, actor.issuer, actor.address)
        async with storage_errors():
            deleted = await self._pool.fetchval(_DELETE, client_id, *who)
        return deleted is not None

    async def history(self, *, limit: int, before: int | None) -> list[LimitEvent]:
        async with storage_errors():
            rows = await self._pool.fetch(_HISTORY, limit, before)
        return [
            LimitEvent(
                id=row["id"],
                changed_at=row["changed_at"],
                action=row["action"],
                client_id=row["client_id"],
                limit=None
                if row["capacity"] is None
                else RateLimit(row["capacity"], row["refill_per_second"]),
                comment=row["comment"],
                actor=_stored_actor(row),
            )
            for row in rows
        ]

    async def revision(self) -> LimitsRevision:
        async with storage_errors():
            row = await self._pool.fetchrow(_REVISION)
        assert row is not None  # the migration made the one row
        return LimitsRevision(row["revision"], row["pruned"])

    async def changes(self, *, since: int, limit: int) -> tuple[LimitsRevision, list[LimitChange]]:
        async with storage_errors():
            rows = await self._pool.fetch(_CHANGES, since, limit)
        stored = LimitsRevision(rows[0]["stored"], rows[0]["pruned"])
        return stored, [
            LimitChange(
                row["revision"],
                row["client_id"],
                None
                if row["capacity"] is None
                else RateLimit(row["capacity"], row["refill_per_second"]),
            )
            for row in rows
            if row["revision"] is not None
        ]

    async def enforced(self, *, after: str | None, limit: int) -> EnforcedPage:
        async with storage_errors():
            if after is None:
                rows = await self._pool.fetch(_ALL, limit)
            else:
                rows = await self._pool.fetch(_ALL_AFTER, after, limit)
        limits: dict[tuple[int, float], RateLimit] = {}
        overrides = []
        for version, prefixlen, address, capacity, refill, _ in rows:
            bits, family = (32, socket.AF_INET) if version == 4 else (128, socket.AF_INET6)
            number = int.from_bytes(socket.inet_pton(family, address)) >> (bits - prefixlen)
            rate = limits.get((capacity, refill))
            if rate is None:
                rate = limits[capacity, refill] = RateLimit(capacity, refill)
            overrides.append(((version, prefixlen, number), rate))
        return EnforcedPage(overrides, rows[-1]["id"] if rows else None)

    async def count(self) -> int:
        async with storage_errors():
            count = await self._pool.fetchval(_COUNT)
        return int(count)
