"""Per-client rate limit overrides: the admin use cases and the ports they need."""

from typing import Protocol

import structlog

from app.domain.errors import BalancerError
from app.domain.ratelimit import (
    ClientLimit,
    ClientLimiter,
    InvalidLimit,
    IPNetwork,
    client_id_text,
    parse_client_id,
)

MAX_PAGE = 1000
MAX_COMMENT_LENGTH = 1000

log = structlog.get_logger(__name__)


class LimitNotFound(BalancerError):
    code = "limit-not-found"


class LimitExists(BalancerError):
    code = "limit-exists"


class LimitRepository(Protocol):
    """Stored overrides; every change is announced to every worker."""

    async def create(self, limit: ClientLimit) -> ClientLimit:
        """Raises LimitExists when the client id is taken."""
        ...

    async def get(self, client_id: IPNetwork) -> ClientLimit | None: ...

    async def page(self, *, limit: int, after: IPNetwork | None) -> list[ClientLimit]:
        """Overrides in client id order, only those after `after` when it is given."""
        ...

    async def replace(self, limit: ClientLimit) -> ClientLimit | None:
        """None when there is no such client id."""
        ...

    async def delete(self, client_id: IPNetwork) -> bool: ...

    async def revision(self) -> int:
        """A number that changes whenever any override changes."""
        ...

    async def all(self) -> list[ClientLimit]: ...

    async def count(self) -> int:
        """How many overrides are stored."""
        ...


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

    async def __call__(self, client_id: str) -> None:
        network = parse_client_id(client_id)
        if not await self._repository.delete(network):
            raise LimitNotFound(f"There is no limit for {client_id}.")
        log.info("limit_deleted", client_id=client_id_text(network))


class ReloadLimits:
    """Hand this worker's limiter the stored overrides when they changed."""

    def __init__(self, repository: LimitRepository, limiter: ClientLimiter) -> None:
        self._repository = repository
        self._limiter = limiter
        self._revision: int | None = None

    async def __call__(self) -> None:
        revision = await self._repository.revision()
        if revision == self._revision:
            return
        overrides = await self._repository.all()
        self._limiter.set_overrides(overrides)
        if self._revision is not None or overrides:
            log.info("limits_loaded", overrides=len(overrides), revision=revision)
        self._revision = revision
