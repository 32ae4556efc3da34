import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from dishka import make_async_container
from dishka.integrations.fastapi import setup_dishka
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.application.config import ReloadConfig
from app.application.limits import ReloadLimits
from app.application.metrics import Tally
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.config import Settings, load_settings
from app.domain.ratelimit import ClientLimiter
from app.infrastructure.logging import configure_logging
from app.infrastructure.metrics import MetricsFlusher
from app.infrastructure.postgres.listener import ConfigWatcher
from app.infrastructure.redis.cdn_health import CdnHealthMonitor
from app.infrastructure.redis.ratelimit import RedisLimitSettler
from app.ioc import providers
from app.presentation.http import balance, cdn, config, health, limits, metrics, route
from app.presentation.http.auth import AdminAuth
from app.presentation.http.console import mount_console
from app.presentation.http.context import RequestContext
from app.presentation.http.docs import mount_docs
from app.presentation.http.errors import install_error_handlers
from app.presentation.http.openapi import document_redirect
from app.presentation.http.redirect import RedirectFront
from app.presentation.http.request_limits import RequestLimits

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> RedirectFront:
    """The ASGI application: the redirect front with the FastAPI admin app behind it."""
    settings = settings or load_settings()
    configure_logging(
        level=settings.log_level,
        json=settings.log_format == "json",
        access_log=settings.access_log,
    )
    container = make_async_container(*providers(), context={Settings: settings})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            loaded = await (await container.get(ReloadConfig))()
            await (await container.get(ReloadLimits))()
            await container.get(ConfigWatcher)
            await container.get(CdnHealthMonitor)
            await container.get(RedisLimitSettler)
            await container.get(MetricsFlusher)
            front.bind(
                await container.get(RedirectVideo),
                await container.get(ClientLimiter),
                await container.get(ConfigSnapshot),
                await container.get(Tally) if settings.metrics else None,
            )
        except BaseException:
            log.exception("startup_failed")
            await container.close()
            raise
        log.info("serving", config_version=loaded.version)
        # Everything allocated so far lives as long as the worker: keep the collector from
        # walking it again and again while requests allocate.
        gc.freeze()
        yield
        await container.close()

    # Swagger UI and ReDoc from the package's own copies: the docs work without internet.
    api = FastAPIOffline(
        title="Video balancer",
        version="1.0.0",
        description="Sends video players to the CDN or the origin at a configured split.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    api.include_router(health.router)
    api.include_router(balance.router)
    auth = AdminAuth(settings.admin_token)
    api.include_router(config.config_router(auth))
    api.include_router(route.route_router(auth))
    api.include_router(cdn.cdn_router(auth))
    api.include_router(limits.limits_router(auth))
    metrics_token = AdminAuth(settings.metrics_token) if settings.metrics_token else None
    api.include_router(metrics.metrics_router(metrics_token))
    api.include_router(metrics.stats_router(auth))
    install_error_handlers(api)
    document_redirect(api)
    mount_docs(api)
    mount_console(api)
    setup_dishka(container, api)
    api.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    api.add_middleware(RequestContext)  # added last, so outermost: refusals carry the id too
    front = RedirectFront(api)
    return front
