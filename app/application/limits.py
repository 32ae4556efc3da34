"""Per-client rate limit overrides: the admin use cases and the ports they need."""

import asyncio
from collections.abc import Iterator

import structlog

from app.application.ports import LimitEvent, LimitRepository
from app.domain.access import Actor
from app.domain.errors import BalancerError
from app.domain.ratelimit import (
    ClientLimit,
    ClientLimiter,
    InvalidLimit,
    client_id_text,
    network_key,
    parse_client_id,
)

MAX_PAGE = 1000
MAX_COMMENT_LENGTH = 1000
# Overrides a worker holds, all of them in memory (the storage refuses more).
MAX_LIMITS = 100_000
# More changes than this since the revision a worker has: it reads every override instead.
MAX_CATCH_UP = 1000
# Overrides read at a time when a worker reads them all.
LOAD_PAGE = 500

log = structlog.get_logger(__name__)


class LimitNotFound(BalancerError):
    code = "limit-not-found"


class LimitExists(BalancerError):
    code = "limit-exists"


class TooManyLimits(BalancerError):
    code = "too-many-limits"


def _checked(limit: ClientLimit) -> ClientLimit:
    if limit.comment is not None and len(limit.comment) > MAX_COMMENT_LENGTH:
        raise InvalidLimit("comment", f"at most {MAX_COMMENT_LENGTH} characters")
    return limit


class CreateLimit:
    """Store a new override; it reaches every worker within a second."""

    def __init__(self, repository: LimitRepository) -> None:
        self._repository = repository

    async def __call__(self, limit: ClientLimit) -> ClientLimit:
        saved = await self._repository.create(_checked(limit))
        log.info("limit_created", client_id=client_id_text(saved.client_id))
        return saved


class GetLimit:
    def __init__(self, repository: LimitRepository) -> None:
        self._repository = repository

    async def __call__(self, client_id: str) -> ClientLimit:
        found = await self._repository.get(parse_client_id(client_id))
        if found is None:
            raise LimitNotFound(f"There is no limit for {client_id}.")
        return found


class ListLimits:
    """Overrides in client id order, a page at a time."""

    def __init__(self, repository: LimitRepository) -> None:
        self._repository = repository

    async def __call__(self, *, limit: int, after: str | None) -> list[ClientLimit]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidLimit("limit", f"must be from 1 to {MAX_PAGE}")
        start = None if after is None else parse_client_id(after)
        return await self._repository.page(limit=limit, after=start)


class CountLimits:
    """How many overrides are stored, for a listing's total."""

    def __init__(self, repository: LimitRepository) -> None:
        self._repository = repository

    async def __call__(self) -> int:
        return await self._repository.count()


class ReplaceLimit:
    def __init__(self, repository: LimitRepository) -> None:
        self._repository = repository

    async def __call__(self, limit: ClientLimit) -> ClientLimit:
        saved = await self._repository.replace(_checked(limit))
        if saved is None:
            raise LimitNotFound(f"There is no limit for {client_id_text(limit.client_id)}.")
        log.info("limit_replaced", client_id=client_id_text(saved.client_id))
        return saved


class DeleteLimit:
    def __init__(self, repository: LimitRepository) -> None:
        self._repository = repository

    async def __call__(self, client_id: str, actor: Actor | None = None) -> None:
        network = parse_client_id(client_id)
        if not await self._repository.delete(network, actor):
            raise LimitNotFound(f"There is no limit for {client_id}.")
        log.info("limit_deleted", client_id=client_id_text(network))


class ListLimitHistory:
    """Who created, replaced or deleted which override, newest first, a page at a time."""

    def __init__(self, repository: LimitRepository) -> None:
        self._repository = repository

    async def __call__(self, *, limit: int, before: int | None) -> list[LimitEvent]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidLimit("limit", f"must be from 1 to {MAX_PAGE}")
        return await self._repository.history(limit=limit, before=before)


class ReloadLimits:
    """Bring this worker's limiter up to the stored overrides.

    It applies the changes made since the revision it has, one override at a time; a worker
    that has none yet (start-up), or is further behind than the changes kept or than
    MAX_CATCH_UP, reads every override a page at a time and applies the difference. Either
    way the work is cut into slices with the event loop let run in between, so redirects
    are never held up for long, whatever the number of overrides.
    """

    def __init__(self, repository: LimitRepository, limiter: ClientLimiter) -> None:
        self._repository = repository
        self._limiter = limiter
        self._revision: int | None = None
        self._running = asyncio.Lock()  # the limits and the config watchers both call it

    async def __call__(self) -> None:
        async with self._running:
            await _in_slices(self._limiter.sweep())  # what a change of the default left
            if self._revision is None:
                await self._load((await self._repository.revision()).revision)
            else:
                await self._catch_up(self._revision)
            await _in_slices(self._limiter.sweep())

    async def _catch_up(self, since: int) -> None:
        stored, changes = await self._repository.changes(since=since, limit=MAX_CATCH_UP + 1)
        if stored.revision == since:
            return
        if since < stored.pruned or len(changes) > MAX_CATCH_UP:
            await self._load(stored.revision)
            return
        for count, change in enumerate(changes, start=1):
            self._limiter.change(network_key(change.client_id), change.limit)
            if count % _CHANGE_SLICE == 0:
                await asyncio.sleep(0)
        self._revision = changes[-1].revision if changes else stored.revision
        log.debug("limits_changed", changes=len(changes), revision=self._revision)

    async def _load(self, revision: int) -> None:
        resync = self._limiter.resync()
        after: str | None = None
        while True:
            page = await self._repository.enforced(after=after, limit=LOAD_PAGE)
            resync.page(page.overrides)
            if len(page.overrides) < LOAD_PAGE:
                break
            after = page.last
        await _in_slices(resync.finish())
        if self._revision is not None or resync.count:
            log.info("limits_loaded", overrides=resync.count, revision=revision)
        self._revision = revision


_CHANGE_SLICE = 200


async def _in_slices(work: Iterator[None]) -> None:
    for _ in work:
        await asyncio.sleep(0)
