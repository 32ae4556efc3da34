from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.domain.config import BalancerConfig, ConfigVersion


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """A version as it was stored, for the history: checked when it was written and not
    again (the served one, `get_active`, is). `fields` holds each field of the
    configuration (`cdn_host`, `server_rules`, ... as the API names them) as JSON text, in
    the shape the API gives it."""

    version: int
    created_at: datetime
    comment: str | None
    fields: Mapping[str, str]


class ConfigRepository(Protocol):
    """Versioned configuration storage; every append is announced to every worker."""

    async def get_active(self) -> ConfigVersion:
        """The newest version. Raises StorageUnavailable."""
        ...

    async def append(
        self, config: BalancerConfig, *, after: int, comment: str | None
    ) -> ConfigVersion:
        """Store `config` as version `after + 1`. Raises VersionConflict if that exists."""
        ...

    async def get(self, version: int) -> ConfigVersion | None: ...

    def history(self, *, limit: int, before: int | None) -> AsyncIterator[StoredVersion]:
        """Versions newest first, only those below `before` when it is given."""
        ...


class SequenceSource(Protocol):
    """Globally shared sequence numbers, handed out without I/O (the redirect path calls it)."""

    def next(self, key: str) -> int:
        """The next number of the sequence named `key` ("" is the global one)."""
        ...

    def peek(self, key: str) -> int:
        """The number `next(key)` would give in this worker, without taking it."""
        ...


class CountryLookup(Protocol):
    """The country of an IP address from a country database; the region matcher calls it on
    a cache miss, so it must not do I/O."""

    source: str  # where the data comes from, for /config/route and the logs

    def __call__(self, address: str) -> str | None:
        """An ISO 3166-1 alpha-2 code, or None when the address is unknown."""
        ...


class HealthCheck(Protocol):
    """A dependency's health as this worker sees it."""

    name: str

    async def __call__(self) -> str | None:
        """None when healthy, otherwise a short description of what is wrong."""
        ...
