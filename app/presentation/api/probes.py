import os
from typing import Any

from dishka import AsyncContainer
from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.application.cdn_health import GetCdnHealth
from app.application.lifecycle import CheckReadiness, Lifecycle

router = APIRouter(tags=["health"], route_class=DishkaRoute)


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={503: {"description": "Starting (no configuration yet), draining or stopping."}},
)
async def ready(request: Request, lifecycle: FromDishka[Lifecycle]) -> JSONResponse:
    """200 while this worker can redirect (`status` says `degraded` when PostgreSQL or Redis
    is down and it serves from memory, or its view of CDN health is stale), 503 while it
    cannot or is shutting down: `status` is `starting` (with `waiting_for`), `draining`
    (told to stop: still serving for a moment, take it out of rotation) or `failed`.
    `cdn_hosts` is each CDN host's state as this worker routes by it."""
    if not lifecycle.serving:
        state: dict[str, Any] = {"status": lifecycle.phase, "worker": os.getpid()}
        if lifecycle.waiting_for:
            state["waiting_for"] = lifecycle.waiting_for
        return JSONResponse(state, status_code=503)
    # Resolved here, not as parameters: before start-up completes they cannot be built.
    container: AsyncContainer = request.state.dishka_container
    check = await container.get(CheckReadiness)
    cdn_health = await container.get(GetCdnHealth)
    readiness = await check()
    body: dict[str, Any] = {
        "status": readiness.status,
        "worker": readiness.worker,
        "config_version": readiness.config_version,
        "checks": readiness.checks,
    }
    if readiness.can_serve:
        report = await cdn_health()
        body["cdn_hosts"] = {url: "up" if state.healthy else "down" for url, state in report.hosts}
        body["cdn_prober"] = report.prober
        body["cdn_fallbacks"] = {
            "origin": report.fallbacks_to_origin,
            "refused": report.refused,
            "regions_to_default_pool": report.regions_to_default,
        }
    return JSONResponse(body, status_code=200 if readiness.can_serve else 503)
