from typing import Any

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.application.health import CheckReadiness

router = APIRouter(tags=["health"], route_class=DishkaRoute)


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "No configuration loaded yet."}})
async def ready(check: FromDishka[CheckReadiness]) -> JSONResponse:
    """200 while this worker can redirect (`status` says `degraded` when PostgreSQL or Redis
    is down and it serves from memory), 503 while it cannot."""
    readiness = await check()
    body: dict[str, Any] = {
        "status": readiness.status,
        "worker": readiness.worker,
        "config_version": readiness.config_version,
        "checks": readiness.checks,
    }
    return JSONResponse(body, status_code=200 if readiness.can_serve else 503)
