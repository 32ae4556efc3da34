import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace

import structlog

from app.application.errors import (
    PreconditionFailed,
    ServerRuleNotFound,
    TooManyConflicts,
    VersionConflict,
    VersionNotFound,
)
from app.application.offload import off_loop
from app.application.ports import ConfigRepository, StoredVersion
from app.application.snapshot import ConfigSnapshot
from app.domain.access import Actor
from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.pool import CdnPool
from app.domain.ratelimit import RateLimit
from app.domain.regions import Region
from app.domain.split import Split
from app.domain.steering import SteeringSettings
from app.domain.syntax import is_server_label

MAX_WRITE_ATTEMPTS = 50
MAX_COMMENT_LENGTH = 1000

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RateLimitChange:
    """A new default rate limit; `limit=None` switches the default off."""

    limit: RateLimit | None


@dataclass(frozen=True, slots=True)
class ServerRule:
    """One server's rule as a whole: its split and, when it has one, a CDN pool of its own."""

    split: Split
    cdn_hosts: CdnPool | None = None
    content_steering: SteeringSettings | None = None  # only with a pool of its own


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
    cdn_hosts: CdnPool | None = None
    # Only the settings named change; the others keep their values.
    cdn_health: Mapping[str, object] | None = None
    origin_fallback: bool | None = None
    down_servers: tuple[str, ...] | None = None
    # Pools of the servers named in `server_rules`; a rule without one uses the global pool.
    server_pools: Mapping[str, CdnPool] | None = None
    rate_limit: RateLimitChange | None = None
    regions: tuple[Region, ...] | None = None
    # Only the settings named change; the others keep their values.
    content_steering: Mapping[str, object] | None = None
    # Steering settings of the rules in `server_rules` that have them (given with it).
    server_steering: Mapping[str, SteeringSettings] | None = None
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
        if self.rate_limit is not None:
            changes["rate_limit"] = self.rate_limit.limit
        for name in (
            "redirect_status",
            "origin_domains",
            "server_rules",
            "origin_fallback",
            "down_servers",
            "regions",
        ):
            value = getattr(self, name)
            if value is not None:
                changes[name] = value
        changes.update(self._pool_changes(config))
        return replace(config, **changes)  # type: ignore[arg-type]

    def _pool_changes(self, config: BalancerConfig) -> dict[str, object]:
        changes: dict[str, object] = {}
        if self.cdn_host is not None and self.cdn_hosts is not None:
            raise InvalidConfig("cdn_hosts", "give either cdn_host or cdn_hosts, not both")
        if self.cdn_host is not None:  # a pool of one
            changes.update(cdn_host=self.cdn_host, cdn_hosts=None)
        elif self.cdn_hosts is not None:
            changes.update(cdn_host=self.cdn_hosts.first.host, cdn_hosts=self.cdn_hosts)
        if self.server_pools is not None:
            changes["server_pools"] = self.server_pools
        elif self.server_rules is not None:  # pools of rules that are gone go with them
            changes["server_pools"] = {
                server: pool
                for server, pool in config.server_pools.items()
                if server in self.server_rules
            }
        if self.cdn_health is not None:
            current = {
                name: getattr(config.cdn_health, name)
                for name in HealthSettings.__dataclass_fields__
            }
            unknown = set(self.cdn_health) - set(current)
            if unknown:
                raise InvalidConfig(f"cdn_health.{min(unknown)}", "is not a health check setting")
            changes["cdn_health"] = HealthSettings(**{**current, **self.cdn_health})
        if self.server_steering is not None:
            changes["server_steering"] = self.server_steering
        elif self.server_rules is not None:
            pools = self.server_pools or {}
            changes["server_steering"] = {
                server: settings
                for server, settings in config.server_steering.items()
                if server in pools
            }
        if self.content_steering is not None:
            current_steering = config.content_steering.document()
            changes["content_steering"] = SteeringSettings.of(
                {**current_steering, **self.content_steering}, "content_steering"
            )
        return changes


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
        if await self._snapshot.serve(version):
            log.info("config_loaded", version=version.version)
        return self._snapshot.version


class _VersionWriter:
    """Appends a version computed from the active one, retrying while other writers win.

    Building a version validates all of it (10,000 rules and networks at most): that runs
    in a thread, as compiling it does (`ConfigSnapshot.serve`), so that redirects answered
    by this worker meanwhile wait for the interpreter lock only, never for the build.
    """

    def __init__(self, repository: ConfigRepository, snapshot: ConfigSnapshot) -> None:
        self._repository = repository
        self._snapshot = snapshot

    async def _write(
        self,
        build: Callable[[ConfigVersion], BalancerConfig],
        *,
        if_match: int | None,
        comment: str | None,
        actor: Actor | None,
    ) -> ConfigVersion:
        for _ in range(MAX_WRITE_ATTEMPTS):
            active = await self._repository.get_active()
            if if_match is not None and active.version != if_match:
                raise PreconditionFailed(
                    f"If-Match does not name the active version ({active.version})."
                )
            config = await off_loop(build, active)
            try:
                saved = await self._repository.append(
                    config, after=active.version, comment=comment, actor=actor
                )
            except VersionConflict:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"Version {active.version} was replaced while this change was written."
                    ) from None
                await asyncio.sleep(random.uniform(0, 0.005))  # noqa: S311 - jitter, not crypto
                continue
            await self._snapshot.serve(saved)
            return saved
        raise TooManyConflicts("The configuration is being changed concurrently; retry.")


class UpdateConfig(_VersionWriter):
    """Validate a partial change against the active version and store it as the next version."""

    async def __call__(
        self, change: ConfigChange, *, if_match: int | None, actor: Actor | None = None
    ) -> ConfigVersion:
        served, checked = None, None
        if self._snapshot.loaded:  # refuse bad input with 422 even while storage is down
            served = self._snapshot.version
            checked = await off_loop(change.apply, served.config)

        def build(active: ConfigVersion) -> BalancerConfig:
            # The active version is most often the one served: built on it already.
            if active is served and checked is not None:
                return checked
            return change.apply(active.config)

        saved = await self._write(build, if_match=if_match, comment=change.comment, actor=actor)
        log.info("config_changed", version=saved.version, fields=change.named_fields())
        return saved


class RollbackConfig(_VersionWriter):
    """Make an earlier version's values active again, as a new version."""

    async def __call__(
        self,
        version: int,
        *,
        if_match: int | None,
        comment: str | None,
        actor: Actor | None = None,
    ) -> ConfigVersion:
        source = await self._repository.get(version)
        if source is None:
            raise VersionNotFound(f"There is no configuration version {version}.")
        saved = await self._write(
            lambda _: source.config,
            if_match=if_match,
            comment=comment if comment is not None else f"rollback to version {version}",
            actor=actor,
        )
        log.info("config_rolled_back", version=saved.version, source=version)
        return saved


def _check_rule_write(server: str, comment: str | None) -> None:
    if not is_server_label(server):
        raise InvalidConfig(
            "server",
            f"{server!r} is not a server label like 's1': lower-case letters, digits and '-',"
            " 1 to 63 characters",
        )
    if comment is not None and len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidConfig("comment", f"at most {MAX_COMMENT_LENGTH} characters")


class SetServerRule(_VersionWriter):
    """Add or replace one server's rule and nothing else.

    The new version is built from the active one each time the writer tries, so admins
    writing rules of different servers at the same moment all keep theirs.
    """

    async def __call__(
        self,
        server: str,
        rule: ServerRule,
        *,
        if_match: int | None,
        comment: str | None,
        actor: Actor | None = None,
    ) -> ConfigVersion:
        _check_rule_write(server, comment)

        def build(active: ConfigVersion) -> BalancerConfig:
            rules = dict(active.config.server_rules)
            rules[server] = rule.split
            pools = dict(active.config.server_pools)
            steering = dict(active.config.server_steering)
            steering.pop(server, None)
            if rule.cdn_hosts is None:  # the whole rule: without a pool, the global one
                pools.pop(server, None)
            else:
                pools[server] = rule.cdn_hosts
            if rule.content_steering is not None:
                steering[server] = rule.content_steering
            return replace(
                active.config,
                server_rules=rules,
                server_pools=pools,
                server_steering=steering,
            )

        if self._snapshot.loaded:  # refuse bad input with 422 even while storage is down
            await off_loop(build, self._snapshot.version)
        saved = await self._write(
            build,
            if_match=if_match,
            comment=comment or f"set the rule of server {server}",
            actor=actor,
        )
        log.info("server_rule_set", version=saved.version, server=server)
        return saved


class RemoveServerRule(_VersionWriter):
    """Remove one server's rule (it follows the global split again) and nothing else."""

    async def __call__(
        self,
        server: str,
        *,
        if_match: int | None,
        comment: str | None,
        actor: Actor | None = None,
    ) -> ConfigVersion:
        _check_rule_write(server, comment)

        def build(active: ConfigVersion) -> BalancerConfig:
            if server not in active.config.server_rules:
                raise ServerRuleNotFound(f"Server {server} has no rule of its own.")
            rules = dict(active.config.server_rules)
            del rules[server]
            pools = dict(active.config.server_pools)
            pools.pop(server, None)
            steering = dict(active.config.server_steering)
            steering.pop(server, None)
            return replace(
                active.config, server_rules=rules, server_pools=pools, server_steering=steering
            )

        saved = await self._write(
            build,
            if_match=if_match,
            comment=comment or f"remove the rule of server {server}",
            actor=actor,
        )
        log.info("server_rule_removed", version=saved.version, server=server)
        return saved


class ListConfigHistory:
    """Stored versions, newest first, as they were stored: each was checked when written,
    and checking 100 of the largest again took seconds of a worker's time."""

    def __init__(self, repository: ConfigRepository) -> None:
        self._repository = repository

    async def __call__(self, *, limit: int, before: int | None) -> AsyncIterator[StoredVersion]:
        async for version in self._repository.history(limit=limit, before=before):
            yield version
