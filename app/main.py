import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import structlog
from dishka import AsyncContainer, make_async_container
from dishka.integrations.fastapi import setup_dishka
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.application.config import ReloadConfig
from app.application.errors import StorageUnavailable
from app.application.health import Lifecycle
from app.application.limits import ReloadLimits
from app.application.metrics import Tally
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.config import Settings, load_settings
from app.domain.ratelimit import ClientLimiter
from app.infrastructure.logging import configure_logging
from app.infrastructure.metrics import MetricsFlusher
from app.infrastructure.postgres.errors import UNREACHABLE
from app.infrastructure.postgres.listener import ConfigWatcher, LimitsWatcher, reconnect_delays
from app.infrastructure.redis.cdn_health import CdnHealthMonitor
from app.infrastructure.redis.ratelimit import RedisLimitSettler
from app.infrastructure.redis.sequence import RedisLeasedSequence
from app.ioc import providers
from app.presentation.api import balance, cdn, config, health, limits, metrics, route
from app.presentation.api.auth import AdminAuth, AdminGate, MetricsAuth
from app.presentation.api.console import mount_console
from app.presentation.api.context import RequestContext
from app.presentation.api.docs import mount_docs
from app.presentation.api.errors import install_error_handlers
from app.presentation.api.openapi import document_redirect
from app.presentation.edge.redirect import RedirectFront
from app.presentation.edge.request_limits import RequestLimits

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> RedirectFront:
    """The ASGI application: the redirect front with the FastAPI admin app behind it."""
    settings = settings or load_settings()
    configure_logging(
        level=settings.log_level,
        json=settings.log_format == "json",
        access_log=settings.access_log,
    )
    lifecycle = Lifecycle(drain_seconds=settings.drain_seconds)
    container = make_async_container(
        *providers(), context={Settings: settings, Lifecycle: lifecycle}
    )

    startup = Startup(container, lifecycle, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with startup(front):
            yield

    # Swagger UI and ReDoc from the package's own copies: the docs work without internet.
    api = FastAPIOffline(
        title="Video balancer",
        version="1.0.0",
        description="Sends video players to the CDN or the origin at a configured split.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # Starlette's slash redirect builds its Location from the Host header: `/config/` is 404.
        redirect_slashes=False,
    )
    auth = AdminAuth(settings.admin_token)
    metrics_token = MetricsAuth(settings.metrics_token) if settings.metrics_token else None
    routers = (
        health.router,
        balance.router,
        config.config_router(auth),
        route.route_router(auth),
        cdn.cdn_router(auth),
        limits.limits_router(auth),
        metrics.metrics_router(metrics_token),
        metrics.stats_router(auth),
    )
    for router in routers:
        api.include_router(router)
    install_error_handlers(api)
    document_redirect(api)
    mount_docs(api)
    mount_console(api)
    setup_dishka(container, api)
    api.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    # Outside RequestLimits: a request without a valid admin token is refused before its body.
    api.add_middleware(AdminGate, routes=[one for router in routers for one in router.routes])
    api.add_middleware(RequestContext)  # added last, so outermost: refusals carry the id too
    front = RedirectFront(api, lifecycle)
    return front


# PostgreSQL not reachable (yet): start-up waits for it. Anything else fails at once.
_RETRIED: tuple[type[BaseException], ...] = (StorageUnavailable, *UNREACHABLE)


class Startup:
    """Starts a worker: loads the configuration, starts what the redirect path uses, binds it.

    When PostgreSQL does not answer, the worker listens anyway (`/ready` says 503
    `starting` and what it waits for; other paths 503 `starting`) and retries in the
    background with backoff until `startup_timeout_seconds` have passed. Giving up marks
    the lifecycle `failed`; the server then exits with uvicorn's start-up failure status.
    Redis is not waited for: without it the worker counts locally (`degraded`).
    """

    def __init__(self, container: AsyncContainer, lifecycle: Lifecycle, settings: Settings):
        self._container = container
        self._lifecycle = lifecycle
        self._timeout = settings.startup_timeout_seconds
        self._metrics = settings.metrics
        self._where = service_address(settings.database_url)
        self._redis_where = service_address(settings.redis_url)

    @asynccontextmanager
    async def __call__(self, front: RedirectFront) -> AsyncIterator[None]:
        waiting: asyncio.Task[None] | None = None
        try:
            await self._serve(await self._start(front))
        except _RETRIED as error:
            waiting = asyncio.create_task(self._retry(front, error), name="start-up")
        except BaseException:
            log.exception("startup_failed")
            await self._container.close()
            raise
        try:
            yield
        finally:
            if waiting is not None:
                waiting.cancel()
                await asyncio.wait([waiting])
            await self._container.close()

    async def _start(self, front: RedirectFront) -> int:
        container = self._container
        loaded = await (await container.get(ReloadConfig))()
        await (await container.get(ReloadLimits))()
        await container.get(ConfigWatcher)
        await container.get(LimitsWatcher)
        await container.get(CdnHealthMonitor)
        await container.get(RedisLimitSettler)
        await container.get(MetricsFlusher)
        front.bind(
            await container.get(RedirectVideo),
            await container.get(ClientLimiter),
            await container.get(ConfigSnapshot),
            await container.get(Tally) if self._metrics else None,
        )
        return loaded.version

    async def _serve(self, version: int) -> None:
        self._lifecycle.phase, self._lifecycle.waiting_for = Lifecycle.SERVING, ""
        log.info("serving", config_version=version)
        if (await self._container.get(RedisLeasedSequence)).degraded:
            # Not waited for: redirects flow on local counting meanwhile (see the README).
            log.warning(
                "startup_without_redis",
                address=self._redis_where,
                serving="counting locally; leases retried in the background, at most 2 s apart",
            )
        # Everything allocated so far lives as long as the worker: keep the collector from
        # walking it again and again while requests allocate.
        gc.freeze()

    async def _retry(self, front: RedirectFront, error: BaseException) -> None:
        deadline = time.monotonic() + self._timeout
        delays = _backoff()
        while True:
            delay = next(delays)
            left = deadline - time.monotonic()
            self._lifecycle.waiting_for = f"postgres: {type(error).__name__}"
            if left < delay:
                log.error(
                    "startup_failed",
                    waiting_for="postgres",
                    address=self._where,
                    error=_reason(error),
                    gave_up_after_seconds=self._timeout,
                )
                self._lifecycle.phase = Lifecycle.FAILED
                return
            log.warning(
                "startup_waiting",
                waiting_for="postgres",
                address=self._where,
                error=_reason(error),
                next_attempt_in_seconds=round(delay, 2),
                gives_up_in_seconds=round(left, 1),
            )
            await asyncio.sleep(delay)
            try:
                version = await self._start(front)
            except _RETRIED as retry:
                error = retry
                continue
            except Exception:
                log.exception("startup_failed")
                self._lifecycle.phase = Lifecycle.FAILED
                return
            await self._serve(version)
            return


def _backoff() -> Iterator[float]:
    """0.25 s doubling to 5 s, jittered as the listener's reconnections are."""
    return reconnect_delays(0.25, 5.0)


def _reason(error: BaseException) -> str:
    detail = getattr(error, "detail", None) or str(error)
    name = type(error).__name__
    return f"{name}: {detail}" if detail and detail != name else name


def service_address(url: str) -> str:
    """Where a database or Redis URL points, without its user or password."""
    parts = urlsplit(url)
    socket = parse_qs(parts.query).get("host", [""])[0]
    if parts.scheme == "unix" or socket.startswith("/"):
        return socket or parts.path
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"
