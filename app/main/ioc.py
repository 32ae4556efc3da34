import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import asyncpg
import structlog
from dishka import AnyOf, Provider, Scope, decorate, from_context, provide, provide_all
from redis.asyncio import Redis

from app.application.cdn_health import (
    CdnHealthCheck,
    CdnHealthView,
    GetCdnHealth,
    ProbeCdnHosts,
    RefreshCdnHealth,
)
from app.application.config_versions import (
    GetConfig,
    ListConfigHistory,
    ReloadConfig,
    RemoveServerRule,
    RollbackConfig,
    SetServerRule,
    UpdateConfig,
)
from app.application.lifecycle import CheckReadiness, Lifecycle
from app.application.limits import (
    CountLimits,
    CreateLimit,
    DeleteLimit,
    GetLimit,
    ListLimitHistory,
    ListLimits,
    ReloadLimits,
    ReplaceLimit,
)
from app.application.metrics import TICK_SECONDS, GetStats, ReadInstanceFigures, ResetStats, Tally
from app.application.ports import (
    CdnProbe,
    ConfigRepository,
    CountryLookup,
    HealthBoard,
    HealthCheck,
    LimitRepository,
    SequenceSource,
    StatsStore,
    WorkerFigures,
)
from app.application.redirect import ExplainRoute, RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.application.steering import DescribeSteering, SteerPlayer
from app.domain.ratelimit import ClientLimiter
from app.domain.steering import SessionTokens
from app.infrastructure.backend_errors import backend_errors
from app.infrastructure.backend_health import PostgresHealth, RedisHealth
from app.infrastructure.geoip import BundledCountries, MaxMindCountries
from app.infrastructure.http.probe import HttpProbe
from app.infrastructure.loop_watch import LoopWatch
from app.infrastructure.metrics import FileFigures, MetricsFlusher, metrics_directory
from app.infrastructure.postgres.config_repository import PostgresConfigRepository
from app.infrastructure.postgres.limits_repository import PostgresLimitRepository
from app.infrastructure.postgres.listener import LIMITS_CHANNEL, ConfigWatcher, LimitsWatcher
from app.infrastructure.postgres.pool import create_pool
from app.infrastructure.redis.cdn_health import CdnHealthMonitor, RedisHealthBoard, instance_id
from app.infrastructure.redis.client import connect
from app.infrastructure.redis.ratelimit import RateLimitHealth, RedisLimitSettler
from app.infrastructure.redis.sequence import RedisLeasedSequence
from app.infrastructure.redis.stats import RedisStats
from app.main.services import SequenceLeases
from app.main.settings import Settings

log = structlog.get_logger(__name__)


class InfrastructureProvider(Provider):
    scope = Scope.APP
    settings = from_context(provides=Settings)

    @provide
    async def pool(self, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
        pool = await create_pool(settings.database_url, timeout=settings.db_timeout_seconds)
        yield pool
        # close() waits for every connection to be released: a query that never ends (or a
        # connection never given back) would hold the worker's shutdown forever.
        try:
            await asyncio.wait_for(pool.close(), settings.db_timeout_seconds)
        except TimeoutError:
            log.warning("database_pool_terminated", reason="connections not released in time")
            pool.terminate()

    @provide
    async def redis(self, settings: Settings) -> AsyncIterator[Redis]:
        client = connect(settings.redis_url, timeout=settings.redis_timeout_seconds)
        yield client
        await client.aclose()

    repository = provide(
        PostgresConfigRepository, provides=AnyOf[PostgresConfigRepository, ConfigRepository]
    )

    @provide(provides=AnyOf[RedisLeasedSequence, SequenceSource])
    def sequence(
        self, redis: Redis, settings: Settings, snapshot: ConfigSnapshot
    ) -> RedisLeasedSequence:
        sequence = RedisLeasedSequence(
            redis,
            key=settings.sequence_key,
            block=settings.sequence_block,
            timeout=settings.redis_timeout_seconds,
            period=snapshot.period,
        )
        # Every version served from now on counts on leased numbers from its first request;
        # the one served already when the sequence starts, too (SequenceLeases).
        snapshot.before_serving(sequence.prepare)
        return sequence

    sequence_leases = provide(SequenceLeases)

    limits = provide(PostgresLimitRepository, provides=LimitRepository)

    @provide
    def settler(
        self, redis: Redis, limiter: ClientLimiter, settings: Settings
    ) -> RedisLimitSettler:
        return RedisLimitSettler(
            redis, limiter, key=settings.rate_limit_key, timeout=settings.redis_timeout_seconds
        )

    @provide
    def watcher(
        self, settings: Settings, reload: ReloadConfig, reload_limits: ReloadLimits
    ) -> ConfigWatcher:
        async def reload_all() -> None:
            await reload()
            await reload_limits()  # cheap when no override changed: a new default's sweep

        return ConfigWatcher(
            settings.database_url,
            reload_all,
            resync_seconds=settings.resync_seconds,
            timeout=settings.db_timeout_seconds,
        )

    @provide
    def limits_watcher(self, settings: Settings, reload_limits: ReloadLimits) -> LimitsWatcher:
        return LimitsWatcher(
            settings.database_url,
            reload_limits,
            resync_seconds=settings.resync_seconds,
            timeout=settings.db_timeout_seconds,
            channel=LIMITS_CHANNEL,
        )

    probe = provide(HttpProbe, provides=AnyOf[HttpProbe, CdnProbe])

    @provide(provides=AnyOf[RedisHealthBoard, HealthBoard])
    def health_board(self, redis: Redis, settings: Settings) -> RedisHealthBoard:
        return RedisHealthBoard(
            redis,
            key=settings.cdn_health_key,
            lease_seconds=settings.cdn_prober_lease_seconds,
            timeout=settings.redis_timeout_seconds,
            me=instance_id(),
        )

    @provide
    def cdn_health_monitor(
        self,
        settings: Settings,
        board: RedisHealthBoard,
        probe_round: ProbeCdnHosts,
        refresh: RefreshCdnHealth,
        view: CdnHealthView,
    ) -> CdnHealthMonitor:
        return CdnHealthMonitor(
            board,
            probe_round,
            refresh,
            lambda: probe_round.settings.interval_seconds,
            view,
            lease_seconds=settings.cdn_prober_lease_seconds,
        )

    @provide
    def health_checks(
        self,
        repository: PostgresConfigRepository,
        watcher: ConfigWatcher,
        sequence: RedisLeasedSequence,
        cdn: CdnHealthCheck,
        rate_limits: RateLimitHealth,
    ) -> Sequence[HealthCheck]:
        return [PostgresHealth(repository, watcher), RedisHealth(sequence), cdn, rate_limits]

    rate_limit_health = provide(RateLimitHealth)

    @provide(provides=AnyOf[FileFigures, WorkerFigures])
    def worker_figures(self, settings: Settings) -> Iterator[FileFigures]:
        with metrics_directory(settings.metrics_dir) as directory:
            yield FileFigures(directory)

    @provide
    def loop_watch(self) -> LoopWatch:
        return LoopWatch()

    @provide(provides=AnyOf[RedisStats, StatsStore])
    def stats_store(self, redis: Redis, settings: Settings) -> RedisStats:
        return RedisStats(redis, key=settings.stats_key, timeout=settings.redis_timeout_seconds)

    @provide
    def metrics_flusher(  # noqa: PLR0917 - every source of a figure
        self,
        tally: Tally,
        snapshot: ConfigSnapshot,
        sequence: RedisLeasedSequence,
        limiter: ClientLimiter,
        cdn_health: CdnHealthView,
        files: FileFigures,
        store: RedisStats,
        watch: LoopWatch,
        settings: Settings,
    ) -> MetricsFlusher:
        return MetricsFlusher(
            tally,
            snapshot,
            sequence,
            limiter,
            backend_errors,
            cdn_health,
            files,
            store,
            watch,
            tick=TICK_SECONDS if settings.metrics else None,
        )


class ApplicationProvider(Provider):
    scope = Scope.APP
    settings = from_context(provides=Settings)
    lifecycle = from_context(provides=Lifecycle)

    @provide
    def snapshot(self, countries: CountryLookup) -> ConfigSnapshot:
        return ConfigSnapshot(countries)

    cdn_health_view = provide(CdnHealthView)
    tally = provide(Tally)

    @provide
    def get_stats(
        self,
        store: StatsStore,
        workers: WorkerFigures,
        snapshot: ConfigSnapshot,
        settings: Settings,
    ) -> GetStats:
        return GetStats(store, workers, snapshot, enabled=settings.metrics)

    @provide
    def reset_stats(self, store: StatsStore, settings: Settings) -> ResetStats:
        return ResetStats(store, enabled=settings.metrics)

    @provide
    def steer_player(
        self, settings: Settings, snapshot: ConfigSnapshot, tally: Tally
    ) -> SteerPlayer:
        # Unset (an app made without `serve`): a secret of this process's own.
        secret = settings.steering_secret or secrets.token_urlsafe(32)
        tokens = SessionTokens(secret.encode())
        return SteerPlayer(snapshot, tokens, tally if settings.metrics else None)

    @provide
    def limiter(self, settings: Settings, snapshot: ConfigSnapshot) -> ClientLimiter:
        limiter = ClientLimiter(
            time.monotonic,
            max_clients=settings.rate_limit_max_clients,
            idle_seconds=settings.rate_limit_idle_seconds,
            ipv6_prefix=settings.rate_limit_ipv6_prefix,
        )
        snapshot.watch(lambda version: limiter.set_default(version.config.rate_limit))
        return limiter

    use_cases = provide_all(
        RedirectVideo,
        ExplainRoute,
        DescribeSteering,
        ReadInstanceFigures,
        GetConfig,
        ReloadConfig,
        UpdateConfig,
        RollbackConfig,
        SetServerRule,
        RemoveServerRule,
        ListConfigHistory,
        CheckReadiness,
        ProbeCdnHosts,
        RefreshCdnHealth,
        GetCdnHealth,
        CdnHealthCheck,
        ReloadLimits,
        CreateLimit,
        GetLimit,
        ListLimits,
        ListLimitHistory,
        CountLimits,
        ReplaceLimit,
        DeleteLimit,
    )


class BundledCountriesProvider(Provider):
    """Countries from the data bundled with `iptocc` (no BALANCER_GEOIP_DATABASE)."""

    scope = Scope.APP
    countries = provide(BundledCountries, provides=CountryLookup)


class MaxMindCountriesProvider(Provider):
    """Countries from the MaxMind DB file in BALANCER_GEOIP_DATABASE."""

    scope = Scope.APP

    @provide(provides=AnyOf[MaxMindCountries, CountryLookup])
    def countries(self, settings: Settings) -> MaxMindCountries:
        return MaxMindCountries(Path(settings.geoip_database))

    @decorate
    def forget_regions_on_reload(
        self, snapshot: ConfigSnapshot, countries: MaxMindCountries
    ) -> ConfigSnapshot:
        """A new country database: the region matcher's cached answers are stale."""
        countries.on_reload.append(snapshot.forget_regions)
        return snapshot


def providers(settings: Settings) -> tuple[Provider, ...]:
    """The providers of each layer; the country database's come last (one decorates the
    application's ConfigSnapshot)."""
    countries = (
        MaxMindCountriesProvider() if settings.geoip_database else BundledCountriesProvider()
    )
    return InfrastructureProvider(), ApplicationProvider(), countries
