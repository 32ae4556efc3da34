from typing import Annotated, Any

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Depends, Header, Path, Query, Response

from app.application.config import (
    GetConfig,
    ListConfigHistory,
    RemoveServerRule,
    RollbackConfig,
    SetServerRule,
    UpdateConfig,
)
from app.application.errors import ServerRuleNotFound
from app.domain.syntax import LABEL
from app.presentation.http.auth import AdminAuth
from app.presentation.http.etag import MAX_VERSION, etag, if_match_version
from app.presentation.http.schemas import (
    PROBLEM_RESPONSE,
    ConfigBody,
    ConfigHistoryPage,
    ConfigPatch,
    RollbackBody,
    ServerRuleBody,
    ServerRulePut,
)

IfMatch = Annotated[
    str | None,
    Header(description="Change only if this is still the active version's ETag; else 412."),
]
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 503), PROBLEM_RESPONSE)
WRITE_ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys(
    (401, 403, 409, 412, 422, 503), PROBLEM_RESPONSE
)
Server = Annotated[
    str,
    Path(
        description="The origin server label: `s7` for `s7.origin-cluster`.",
        # Documented, not enforced here: the configuration's own check names the field.
        json_schema_extra={"pattern": f"^{LABEL.pattern}$"},
    ),
]


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
        before: Annotated[
            int | None, Query(ge=1, le=MAX_VERSION, description="Versions below this.")
        ] = None,
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
        version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
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

    @router.get("/server-rules/{server}", responses=dict.fromkeys((404, 503), PROBLEM_RESPONSE))
    async def get_server_rule(
        server: Server, get: FromDishka[GetConfig], response: Response
    ) -> ServerRuleBody:
        """One server's rule, from the configuration this worker serves (`ETag` is its
        version). 404 when the server follows the global split."""
        active = await get()
        config = active.config
        split = config.server_rules.get(server)
        if split is None:
            raise ServerRuleNotFound(f"Server {server} has no rule of its own.")
        response.headers["ETag"] = etag(active.version)
        return ServerRuleBody.of(split, config.server_pools.get(server))

    @router.put("/server-rules/{server}", dependencies=[Depends(auth)], responses=WRITE_ERRORS)
    async def put_server_rule(
        server: Server,
        body: ServerRulePut,
        set_rule: FromDishka[SetServerRule],
        response: Response,
        if_match: IfMatch = None,
    ) -> ConfigBody:
        """Add or replace one server's rule, leaving every other setting and rule as the
        active version has them: admins writing rules of different servers at once all keep
        theirs. Answers the new version, which reaches every worker within a second."""
        saved = await set_rule(
            server, body.to_rule(), if_match=if_match_version(if_match), comment=body.comment
        )
        response.headers["ETag"] = etag(saved.version)
        return ConfigBody.of(saved)

    @router.delete(
        "/server-rules/{server}",
        dependencies=[Depends(auth)],
        responses={404: PROBLEM_RESPONSE, **WRITE_ERRORS},
    )
    async def delete_server_rule(
        server: Server,
        remove: FromDishka[RemoveServerRule],
        response: Response,
        if_match: IfMatch = None,
    ) -> ConfigBody:
        """Remove one server's rule: the server follows the global split again. 404 when it
        has no rule. Answers the new version."""
        saved = await remove(server, if_match=if_match_version(if_match), comment=None)
        response.headers["ETag"] = etag(saved.version)
        return ConfigBody.of(saved)

    return router
