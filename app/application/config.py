import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import structlog

from app.application.errors import (
    PreconditionFailed,
    TooManyConflicts,
    VersionConflict,
    VersionNotFound,
)
from app.application.ports import ConfigRepository
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.split import Split

MAX_WRITE_ATTEMPTS = 50
MAX_COMMENT_LENGTH = 1000

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigChange:
    """A partial update: fields left as None keep their current values."""

    cdn_host: str | None = None
    cdn_weight: int | None = None
    origin_weight: int | None = None
    origin_every: int | None = None
    redirect_status: int | None = None
    origin_domains: tuple[str, ...] | None = None
    server_rules: Mapping[str, Split] | None = None
    comment: str | None = None

    def named_fields(self) -> list[str]:
        return [name for name in self.__dataclass_fields__ if getattr(self, name) is not None]

    def apply(self, config: BalancerConfig) -> BalancerConfig:
        if self.comment is not None and len(self.comment) > MAX_COMMENT_LENGTH:
            raise InvalidConfig("comment", f"at most {MAX_COMMENT_LENGTH} characters")
        split = config.split
        if self.origin_every is not None:
            if self.cdn_weight is not None or self.origin_weight is not None:
                raise InvalidConfig(
                    "origin_every", "give either origin_every or the weights, not both"
                )
            split = Split.origin_every(self.origin_every)
        elif self.cdn_weight is not None or self.origin_weight is not None:
            split = Split(
                split.cdn_weight if self.cdn_weight is None else self.cdn_weight,
                split.origin_weight if self.origin_weight is None else self.origin_weight,
            )
        changes: dict[str, object] = {"split": split}
        for name in ("cdn_host", "redirect_status", "origin_domains", "server_rules"):
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        return replace(config, **changes)  # type: ignore[arg-type]


class GetConfig:
    """The served configuration, from memory: it answers while PostgreSQL is down."""

    def __init__(self, snapshot: ConfigSnapshot) -> None:
        self._snapshot = snapshot

    async def __call__(self) -> ConfigVersion:
        return self._snapshot.version


class ReloadConfig:
    """Fetch the active version from storage and serve it if it is newer."""

    def __init__(self, repository: ConfigRepository, snapshot: ConfigSnapshot) -> None:
        self._repository = repository
        self._snapshot = snapshot

    async def __call__(self) -> ConfigVersion:
        version = await self._repository.get_active()
        if self._snapshot.offer(version):
            log.info("config_loaded", version=version.version)
        return self._snapshot.version


class _VersionWriter:
    """Appends a version computed from the active one, retrying while other writers win."""

    def __init__(self, repository: ConfigRepository, snapshot: ConfigSnapshot) -> None:
        self._repository = repository
        self._snapshot = snapshot

    async def _write(
        self,
        build: Callable[[ConfigVersion], BalancerConfig],
        *,
        if_match: int | None,
        comment: str | None,
    ) -> ConfigVersion:
        for _ in range(MAX_WRITE_ATTEMPTS):
            active = await self._repository.get_active()
            if if_match is not None and active.version != if_match:
                raise PreconditionFailed(f"The active version is {active.version}, not {if_match}.")
            try:
                saved = await self._repository.append(
                    build(active), after=active.version, comment=comment
                )
            except VersionConflict:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"Version {active.version} was replaced while this change was written."
                    ) from None
                await asyncio.sleep(random.uniform(0, 0.005))  # noqa: S311 - jitter, not crypto
                continue
            self._snapshot.offer(saved)
            return saved
        raise TooManyConflicts("The configuration is being changed concurrently; retry.")


class UpdateConfig(_VersionWriter):
    """Validate a partial change against the active version and store it as the next version."""

    async def __call__(self, change: ConfigChange, *, if_match: int | None) -> ConfigVersion:
        if self._snapshot.loaded:  # refuse bad input with 422 even while storage is down
            change.apply(self._snapshot.version.config)
        saved = await self._write(
            lambda active: change.apply(active.config), if_match=if_match, comment=change.comment
        )
        log.info("config_changed", version=saved.version, fields=change.named_fields())
        return saved


class RollbackConfig(_VersionWriter):
    """Make an earlier version's values active again, as a new version."""

    async def __call__(
        self, version: int, *, if_match: int | None, comment: str | None
    ) -> ConfigVersion:
        source = await self._repository.get(version)
        if source is None:
            raise VersionNotFound(f"There is no configuration version {version}.")
        saved = await self._write(
            lambda _: source.config,
            if_match=if_match,
            comment=comment if comment is not None else f"rollback to version {version}",
        )
        log.info("config_rolled_back", version=saved.version, source=version)
        return saved


class ListConfigHistory:
    """Stored versions, newest first."""

    def __init__(self, repository: ConfigRepository) -> None:
        self._repository = repository

    async def __call__(self, *, limit: int, before: int | None) -> list[ConfigVersion]:
        return await self._repository.history(limit=limit, before=before)
