from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from dishka import make_async_container
from dishka.integrations.fastapi import setup_dishka
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.application.lifecycle import Lifecycle
from app.infrastructure.jwt_verifier import JwksKeys, JwtVerifier
from app.infrastructure.logging import configure_logging
from app.main.ioc import providers
from app.main.settings import Settings, load_settings
from app.main.startup import Startup
from app.presentation.api import (
    balance,
    cdn,
    config_routes,
    limits,
    metrics,
    probes,
    route,
    steering,
)
from app.presentation.api.auth import Access, AdminGate, MetricsAuth, declare_roles, whoami_router
from app.presentation.api.console import mount_console
from app.presentation.api.context import RequestContext
from app.presentation.api.docs import mount_docs
from app.presentation.api.error_handlers import install_error_handlers
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
        *providers(settings), context={Settings: settings, Lifecycle: lifecycle}
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
    auth = Access(settings.static_tokens, _jwt_verifier(settings))
    metrics_token = MetricsAuth(settings.metrics_token) if settings.metrics_token else None
    routers = (
        probes.router,
        balance.router,
        steering.router,
        config_routes.config_router(auth),
        route.route_router(auth),
        cdn.cdn_router(auth),
        limits.limits_router(auth),
        metrics.metrics_router(metrics_token),
        metrics.stats_router(auth),
        whoami_router(auth),
    )
    for router in routers:
        declare_roles(router.routes)
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


def _jwt_verifier(settings: Settings) -> JwtVerifier | None:
    if not settings.jwt_jwks:
        return None
    keys = JwksKeys(settings.jwt_jwks, refetch_seconds=settings.jwt_jwks_refetch_seconds)
    return JwtVerifier(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        roles_claim=settings.jwt_roles_claim,
    )
