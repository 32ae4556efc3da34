import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from dishka import make_async_container
from dishka.integrations.fastapi import setup_dishka
from fastapi import FastAPI

from app.application.config import ReloadConfig
from app.application.redirect import RedirectVideo
from app.config import Settings, load_settings
from app.infrastructure.logging import configure_logging
from app.infrastructure.postgres.listener import ConfigWatcher
from app.ioc import providers
from app.presentation.http import balance, config, health
from app.presentation.http.auth import AdminAuth
from app.presentation.http.context import RequestContext
from app.presentation.http.errors import install_error_handlers
from app.presentation.http.openapi import document_redirect
from app.presentation.http.redirect import RedirectFront

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
            await container.get(ConfigWatcher)
            front.bind(await container.get(RedirectVideo))
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

    api = FastAPI(
        title="Video balancer",
        version="1.0.0",
        description="Sends video players to the CDN or the origin at a configured split.",
        lifespan=lifespan,
    )
    api.include_router(health.router)
    api.include_router(balance.router)
    api.include_router(config.config_router(AdminAuth(settings.admin_token)))
    install_error_handlers(api)
    document_redirect(api)
    setup_dishka(container, api)
    api.add_middleware(RequestContext)
    front = RedirectFront(api)
    return front
