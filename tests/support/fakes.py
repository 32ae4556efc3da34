"""In-memory stand-ins for the ports, and builders of what the use cases take."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from app.application.errors import VersionConflict
from app.application.ports import StoredVersion
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.access import Actor
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.split import Split

DEFAULT = BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1))


def version(number: int, config: BalancerConfig = DEFAULT) -> ConfigVersion:
    return ConfigVersion(number, config, datetime(2026, 1, 1, tzinfo=UTC))


class FakeConfigRepository:
    """In-memory versions; `rivals` writes land just before ours, as racing admins' would."""

    def __init__(self) -> None:
        self.versions = [version(1)]
        self.rivals: list[BalancerConfig] = []

    async def get_active(self) -> ConfigVersion:
        return self.versions[-1]

    async def get(self, number: int) -> ConfigVersion | None:
        return next((v for v in self.versions if v.version == number), None)

    async def history(self, *, limit: int, before: int | None) -> AsyncIterator[StoredVersion]:
        found = [v for v in reversed(self.versions) if before is None or v.version < before]
        for version in found[:limit]:
            yield StoredVersion(version.version, version.created_at, version.comment, {})

    async def append(
        self,
        config: BalancerConfig,
        *,
        after: int,
        comment: str | None,
        actor: Actor | None = None,
    ) -> ConfigVersion:
        if self.rivals:
            self._store(self.rivals.pop(0), None)
        if self.versions[-1].version != after:
            raise VersionConflict(f"{after + 1} exists")
        return self._store(config, comment)

    def _store(self, config: BalancerConfig, comment: str | None) -> ConfigVersion:
        stored = ConfigVersion(self.versions[-1].version + 1, config, datetime.now(UTC), comment)
        self.versions.append(stored)
        return stored


class CountingSequence:
    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def next(self, key: str) -> int:
        number = self.numbers.get(key, 0)
        self.numbers[key] = number + 1
        return number

    def peek(self, key: str) -> int:
        return self.numbers.get(key, 0)


def redirect_for(config: BalancerConfig) -> tuple[RedirectVideo, CountingSequence]:
    snapshot = ConfigSnapshot()
    snapshot.offer(version(3, config))
    sequence = CountingSequence()
    return RedirectVideo(snapshot, sequence), sequence
