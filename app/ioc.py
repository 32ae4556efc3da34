from collections.abc import AsyncIterator, Sequence

import asyncpg
from dishka import AnyOf, Provider, Scope, from_context, provide, provide_all
from redis.asyncio import Redis

from app.application.config import (
    GetConfig,
    ListConfigHistory,
    ReloadConfig,
    RollbackConfig,
    UpdateConfig,
)
from app.application.health import CheckReadiness
from app.application.ports import ConfigRepository, HealthCheck, SequenceSource
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.config import Settings
from app.infrastructure.health import PostgresHealth, RedisHealth
from app.infrastructure.postgres.config_repository import PostgresConfigRepository
from app.infrastructure.postgres.listener import ConfigWatcher
from app.infrastructure.postgres.pool import create_pool
from app.infrastructure.redis.sequence import RedisLeasedSequence


class InfrastructureProvider(Provider):
    scope = Scope.APP
    settings = from_context(provides=Settings)

    @provide
    async def pool(self, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
        pool = await create_pool(settings.database_url, timeout=settings.db_timeout_seconds)
        yield pool
        await pool.close()

    @provide
    async def redis(self, settings: Settings) -> AsyncIterator[Redis]:
        client = Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_timeout_seconds,
        )
        yield client
        await client.aclose()

    repository = provide(
        PostgresConfigRepository, provides=AnyOf[PostgresConfigRepository, ConfigRepository]
    )

    @provide(provides=AnyOf[RedisLeasedSequence, SequenceSource])
    async def sequence(
        self, redis: Redis, settings: Settings
    ) -> AsyncIterator[RedisLeasedSequence]:
        sequence = RedisLeasedSequence(
            redis,
            key=settings.sequence_key,
            block=settings.sequence_block,
            timeout=settings.redis_timeout_seconds,
        )
        await sequence.start()
        yield sequence
        await sequence.stop()

    @provide
    async def watcher(
        self, settings: Settings, reload: ReloadConfig
    ) -> AsyncIterator[ConfigWatcher]:
        watcher = ConfigWatcher(
            settings.database_url,
            reload,
            resync_seconds=settings.resync_seconds,
            timeout=settings.db_timeout_seconds,
        )
        await watcher.start()
        yield watcher
        await watcher.stop()

    @provide
    def health_checks(
        self,
        repository: PostgresConfigRepository,
        watcher: ConfigWatcher,
        sequence: RedisLeasedSequence,
    ) -> Sequence[HealthCheck]:
        return [PostgresHealth(repository, watcher), RedisHealth(sequence)]


class ApplicationProvider(Provider):
    scope = Scope.APP

    snapshot = provide(ConfigSnapshot)
    use_cases = provide_all(
        RedirectVideo,
        GetConfig,
        ReloadConfig,
        UpdateConfig,
        RollbackConfig,
        ListConfigHistory,
        CheckReadiness,
    )


def providers() -> tuple[Provider, ...]:
    return InfrastructureProvider(), ApplicationProvider()
