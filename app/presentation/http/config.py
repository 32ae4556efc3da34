from typing import Annotated

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Depends, Header, Response

from app.application.config import GetConfig, UpdateConfig
from app.presentation.http.auth import AdminAuth
from app.presentation.http.etag import etag, if_match_version
from app.presentation.http.schemas import PROBLEM_RESPONSE, ConfigBody, ConfigPatch

IfMatch = Annotated[
    str | None,
    Header(description="Change only if this is still the active version's ETag; else 412."),
]


def config_router(auth: AdminAuth) -> APIRouter:
    router = APIRouter(prefix="/config", tags=["config"], route_class=DishkaRoute)

    @router.get("", responses={503: PROBLEM_RESPONSE})
    async def get_config(get: FromDishka[GetConfig], response: Response) -> ConfigBody:
        """The configuration this worker serves. `ETag` is its version, for `If-Match`."""
        active = await get()
        response.headers["ETag"] = etag(active.version)
        return ConfigBody.of(active)

    @router.patch(
        "",
        dependencies=[Depends(auth)],
        responses=dict.fromkeys((401, 403, 409, 412, 422, 503), PROBLEM_RESPONSE),
    )
    async def patch_config(
        body: ConfigPatch,
        update: FromDishka[UpdateConfig],
        response: Response,
        if_match: IfMatch = None,
    ) -> ConfigBody:
        """Change some settings; the result is stored as a new version and reaches every
        worker within a second."""
        saved = await update(body.to_change(), if_match=if_match_version(if_match))
        response.headers["ETag"] = etag(saved.version)
        return ConfigBody.of(saved)

    return router
