from typing import Annotated, Any

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Depends, Header, Path, Query, Response

from app.application.config import GetConfig, ListConfigHistory, RollbackConfig, UpdateConfig
from app.presentation.http.auth import AdminAuth
from app.presentation.http.etag import etag, if_match_version
from app.presentation.http.schemas import (
    PROBLEM_RESPONSE,
    ConfigBody,
    ConfigHistoryPage,
    ConfigPatch,
    RollbackBody,
)

IfMatch = Annotated[
    str | None,
    Header(description="Change only if this is still the active version's ETag; else 412."),
]
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 503), PROBLEM_RESPONSE)
WRITE_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys(
    (401, 403, 409, 412, 422, 503), PROBLEM_RESPONSE
)


def config_router(auth: AdminAuth) -> APIRouter:
    router = APIRouter(prefix="/config", tags=["config"], route_class=DishkaRoute)

    @router.get("", responses={503: PROBLEM_RESPONSE})
    async def get_config(get: FromDishka[GetConfig], response: Response) -> ConfigBody:
        """The configuration this worker serves. `ETag` is its version, for `If-Match`."""
        active = await get()
        response.headers["ETag"] = etag(active.version)
        return ConfigBody.of(active)

    @router.patch("", dependencies=[Depends(auth)], responses=WRITE_ERRORS)
    async def patch_config(
        body: ConfigPatch,
        update: FromDishka[UpdateConfig],
        response: Response,
        if_match: IfMatch = None,
    ) -> ConfigBody:
        """Change some settings. The result is stored as a new version and reaches every
        worker within a second. `origin_every: N` is shorthand for `N-1:1`."""
        saved = await update(body.to_change(), if_match=if_match_version(if_match))
        response.headers["ETag"] = etag(saved.version)
        return ConfigBody.of(saved)

    @router.get("/history", dependencies=[Depends(auth)], responses=ADMIN_ERRORS)
    async def config_history(
        history: FromDishka[ListConfigHistory],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        before: Annotated[int | None, Query(ge=1, description="Versions below this.")] = None,
    ) -> ConfigHistoryPage:
        """Stored versions, newest first."""
        versions = await history(limit=limit, before=before)
        more = len(versions) == limit and versions[-1].version > 1
        return ConfigHistoryPage(
            items=[ConfigBody.of(version) for version in versions],
            next_before=versions[-1].version if more else None,
        )

    @router.post(
        "/rollback/{version}",
        dependencies=[Depends(auth)],
        responses={404: PROBLEM_RESPONSE, **WRITE_ERRORS},
    )
    async def rollback_config(
        version: Annotated[int, Path(ge=1)],
        rollback: FromDishka[RollbackConfig],
        response: Response,
        if_match: IfMatch = None,
        body: RollbackBody | None = None,
    ) -> ConfigBody:
        """Make an earlier version's values active again, as a new version (the history
        stays linear). It reaches every worker like any change."""
        saved = await rollback(
            version,
            if_match=if_match_version(if_match),
            comment=body.comment if body is not None else None,
        )
        response.headers["ETag"] = etag(saved.version)
        return ConfigBody.of(saved)

    return router
