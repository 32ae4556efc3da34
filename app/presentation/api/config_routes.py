from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from dishka.integrations.fastapi import FromDishka
from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic_core import to_json

from app.application.config_versions import (
    GetConfig,
    ListConfigHistory,
    RemoveServerRule,
    RollbackConfig,
    SetServerRule,
    UpdateConfig,
)
from app.application.errors import ServerRuleNotFound
from app.application.offload import off_loop
from app.application.ports import StoredVersion
from app.domain.access import Actor
from app.domain.config import ConfigVersion
from app.domain.syntax import LABEL
from app.presentation.api.auth import Access
from app.presentation.api.etag import MAX_VERSION, etag, if_match_version
from app.presentation.api.json_pieces import (
    PiecewiseJsonRoute,
    PiecewiseResponse,
    dumps_in_pieces,
)
from app.presentation.api.schemas import (
    PROBLEM_RESPONSE,
    ActorBody,
    ConfigBody,
    ConfigHistoryPage,
    ConfigPatch,
    RollbackBody,
    ServerRuleBody,
    ServerRulePut,
    config_document,
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
JSON = "application/json"


def _json(stored: ConfigVersion) -> bytes:
    return dumps_in_pieces(config_document(stored))


class ConfigJson:
    """Versions as `ConfigBody` JSON, written in a thread (8 ms for the largest, which the
    event loop should not spend between two redirects); the last one is kept, as
    `GET /config` asks for the served version again and again."""

    def __init__(self) -> None:
        self._last: tuple[ConfigVersion, bytes] | None = None

    async def __call__(self, stored: ConfigVersion) -> Response:
        last = self._last
        if last is not None and last[0] is stored:
            body = last[1]
        else:
            body = await off_loop(_json, stored)
            self._last = (stored, body)
        return PiecewiseResponse(body, media_type=JSON, headers={"ETag": etag(stored.version)})

    async def page(self, versions: AsyncIterator[StoredVersion], limit: int) -> Response:
        """A history page, sent version by version: 100 versions of the largest
        configuration are 160 MB of JSON. Each is written from the text it is stored as,
        not decoded; the first is read before the answer starts, so that PostgreSQL being
        down is still a 503."""
        first = await anext(versions, None)

        async def chunks() -> AsyncIterator[bytes | memoryview]:
            yield b'{"items":['
            stored, count, last = first, 0, None
            while stored is not None:
                for part in _stored_json(stored, first=not count):
                    yield part
                count, last = count + 1, stored.version
                stored = await anext(versions, None)
            more = count == limit and last is not None and last > 1
            yield b'],"next_before":' + to_json(last if more else None) + b"}"

        return PiecewiseResponse(parts=chunks(), media_type=JSON)


# ConfigBody's fields that a stored version has as JSON text, in ConfigBody's order.
_STORED_FIELDS = tuple(
    name for name in ConfigBody.model_fields if name not in ("version", "comment", "created_at")
)


def _stored_json(stored: StoredVersion, *, first: bool) -> Iterator[bytes]:
    """`stored` as ConfigBody JSON, in parts: its fields as stored, never joined (the
    server rules of the largest configuration are 1 MB on their own)."""
    fields = stored.fields
    yield b'%s{"version":%d' % (b"" if first else b",", stored.version)
    for name in _STORED_FIELDS:
        yield b',"%s":' % name.encode()
        yield fields[name].encode()
    yield b',"comment":%s,"created_at":%s,"actor":%s}' % (
        to_json(stored.comment),
        to_json(stored.created_at),
        to_json(ActorBody.of(stored.actor)),
    )


def config_router(auth: Access) -> APIRouter:
    router = APIRouter(prefix="/config", tags=["config"], route_class=PiecewiseJsonRoute)
    as_json = ConfigJson()

    @router.get("", response_model=ConfigBody, responses={503: PROBLEM_RESPONSE})
    async def get_config(get: FromDishka[GetConfig]) -> Response:
        """The configuration this worker serves. `ETag` is its version, for `If-Match`."""
        return await as_json(await get())

    @router.patch(
        "", response_model=ConfigBody, dependencies=[Depends(auth.operator)], responses=WRITE_ERRORS
    )
    async def patch_config(
        body: ConfigPatch,
        update: FromDishka[UpdateConfig],
        actor: Annotated[Actor, Depends(auth.operator)],
        if_match: IfMatch = None,
    ) -> Response:
        """Change some settings. The result is stored as a new version and reaches every
        worker within a second. `origin_every: N` is shorthand for `N-1:1`."""
        change = await off_loop(body.to_change)  # validates every region and pool
        return await as_json(await update(change, if_match=if_match_version(if_match), actor=actor))

    @router.get(
        "/history",
        response_model=ConfigHistoryPage,
        dependencies=[Depends(auth.reader)],
        responses=ADMIN_ERRORS,
    )
    async def config_history(
        history: FromDishka[ListConfigHistory],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_VERSION, description="Versions below this.")
        ] = None,
    ) -> Response:
        """Stored versions, newest first."""
        return await as_json.page(history(limit=limit, before=before), limit)

    @router.post(
        "/rollback/{version}",
        response_model=ConfigBody,
        dependencies=[Depends(auth.operator)],
        responses={404: PROBLEM_RESPONSE, **WRITE_ERRORS},
    )
    async def rollback_config(
        version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
        rollback: FromDishka[RollbackConfig],
        actor: Annotated[Actor, Depends(auth.operator)],
        if_match: IfMatch = None,
        body: RollbackBody | None = None,
    ) -> Response:
        """Make an earlier version's values active again, as a new version (the history
        stays linear). It reaches every worker like any change."""
        saved = await rollback(
            version,
            if_match=if_match_version(if_match),
            comment=body.comment if body is not None else None,
            actor=actor,
        )
        return await as_json(saved)

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
        return ServerRuleBody.of(
            split, config.server_pools.get(server), config.server_steering.get(server)
        )

    @router.put(
        "/server-rules/{server}",
        response_model=ConfigBody,
        dependencies=[Depends(auth.operator)],
        responses=WRITE_ERRORS,
    )
    async def put_server_rule(
        server: Server,
        body: ServerRulePut,
        set_rule: FromDishka[SetServerRule],
        actor: Annotated[Actor, Depends(auth.operator)],
        if_match: IfMatch = None,
    ) -> Response:
        """Add or replace one server's rule, leaving every other setting and rule as the
        active version has them: admins writing rules of different servers at once all keep
        theirs. Answers the new version, which reaches every worker within a second."""
        saved = await set_rule(
            server,
            body.to_rule(),
            if_match=if_match_version(if_match),
            comment=body.comment,
            actor=actor,
        )
        return await as_json(saved)

    @router.delete(
        "/server-rules/{server}",
        response_model=ConfigBody,
        dependencies=[Depends(auth.operator)],
        responses={404: PROBLEM_RESPONSE, **WRITE_ERRORS},
    )
    async def delete_server_rule(
        server: Server,
        remove: FromDishka[RemoveServerRule],
        actor: Annotated[Actor, Depends(auth.operator)],
        if_match: IfMatch = None,
    ) -> Response:
        """Remove one server's rule: the server follows the global split again. 404 when it
        has no rule. Answers the new version."""
        saved = await remove(server, if_match=if_match_version(if_match), comment=None, actor=actor)
        return await as_json(saved)

    return router
