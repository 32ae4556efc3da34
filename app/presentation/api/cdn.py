from datetime import UTC, datetime

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Depends

from app.application.cdn_health import GetCdnHealth, HostLoad
from app.domain.cdn_health import HostState
from app.presentation.api.auth import Access
from app.presentation.api.schemas import PROBLEM_RESPONSE, CdnHostHealth


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def host_health(url: str, state: HostState, load: HostLoad | None = None) -> CdnHostHealth:
    load = load or HostLoad(1, 1.0)
    return CdnHostHealth(
        host=url,
        healthy=state.healthy,
        since=_time(state.since),
        last_check=_time(state.last_check),
        last_error=state.last_error,
        consecutive_failures=state.consecutive_failures,
        configured_weight=load.configured,
        effective_weight=round(load.effective, 3),
        reported=None if state.reported is None else state.reported.shown(),
        load_error=state.load_error,
    )


def cdn_router(auth: Access) -> APIRouter:
    router = APIRouter(prefix="/cdn", tags=["cdn"], route_class=DishkaRoute)

    @router.get(
        "/health",
        dependencies=[Depends(auth.reader)],
        responses=dict.fromkeys((401, 403, 503), PROBLEM_RESPONSE),
    )
    async def cdn_health(get: FromDishka[GetCdnHealth]) -> list[CdnHostHealth]:
        """Every configured CDN host (global pool and server rules' pools) as the probes
        have seen it. A host not probed yet counts as healthy (`since` null)."""
        report = await get()
        return [host_health(url, state, report.loads.get(url)) for url, state in report.hosts]

    return router
