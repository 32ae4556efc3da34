from datetime import datetime
from typing import Annotated, Any, Literal

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.config import JsonDict

from app.application.limits import (
    MAX_PAGE,
    CountLimits,
    CreateLimit,
    DeleteLimit,
    GetLimit,
    ListLimitHistory,
    ListLimits,
    ReplaceLimit,
)
from app.application.ports import LimitEvent
from app.domain.access import Actor
from app.domain.ratelimit import ClientLimit, InvalidLimit, client_id_text, parse_client_id
from app.presentation.api.auth import Access
from app.presentation.api.schemas import PROBLEM_RESPONSE, ActorBody, RateLimitBody
from app.presentation.problem import PROBLEM_JSON, encode, problem

MAX_CHANGE_ID = 2**63 - 1  # rate_limit_history.id is a bigint

# What a client id looks like, for the document (and the clients it generates): an IPv4 or
# IPv6 address, or a CIDR block. The check itself is parse_client_id's.
CLIENT_ID_SCHEMA: JsonDict = {
    "maxLength": 64,
    "anyOf": [
        {"format": "ipv4"},
        {"format": "ipv6"},
        {"pattern": "^[0-9A-Fa-f:.]+/[0-9]{1,3}$"},
    ],
}
ClientIdPath = Annotated[
    str,
    Path(
        description="An address or a CIDR block; its `/` raw or as `%2F`.",
        examples=["10.0.0.0/8"],
        json_schema_extra=CLIENT_ID_SCHEMA,
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = dict.fromkeys((401, 403, 404, 422, 503), PROBLEM_RESPONSE)


class LimitWrite(RateLimitBody):
    comment: str | None = Field(None, max_length=1000, description="Why; shown in listings.")


class LimitCreate(LimitWrite):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"client_id": "203.0.113.7", "capacity": 10, "refill_per_second": 1},
                {"client_id": "198.51.100.0/24", "capacity": 0, "refill_per_second": 1},
            ]
        },
    )

    client_id: str = Field(
        description="An IPv4/IPv6 address or CIDR block.", json_schema_extra=CLIENT_ID_SCHEMA
    )


def _timestamp_text(value: object) -> object:
    """A timestamp as the document declares it, an RFC 3339 string: lax parsing would also
    take a number of seconds, which the schema does not allow."""
    if value is not None and not isinstance(value, str):
        raise ValueError("a timestamp is an RFC 3339 string")
    return value


ReadOnlyTimestamp = Annotated[
    Annotated[datetime, Field(strict=False)] | None,
    BeforeValidator(_timestamp_text),
    Field(description="Read-only; ignored."),
]


class LimitPut(LimitWrite):
    """The whole override; what `GET` answers is accepted as it is (its `client_id` must be
    the one of the path, its timestamps are ignored)."""

    client_id: str | None = Field(None, description="Optional; the client id of the path.")
    created_at: ReadOnlyTimestamp = None
    updated_at: ReadOnlyTimestamp = None
    actor: Annotated[
        dict[str, str | None] | None, Field(strict=False, description="Read-only; ignored.")
    ] = None


class LimitBody(BaseModel):
    client_id: str
    capacity: int
    refill_per_second: float
    comment: str | None
    created_at: datetime | None
    updated_at: datetime | None
    actor: ActorBody | None = Field(
        description="Who created or last replaced it; null when not recorded."
    )

    @classmethod
    def of(cls, stored: ClientLimit) -> "LimitBody":
        return cls(
            client_id=client_id_text(stored.client_id),
            capacity=stored.limit.capacity,
            refill_per_second=stored.limit.refill_per_second,
            comment=stored.comment,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            actor=ActorBody.of(stored.actor),
        )


class LimitPage(BaseModel):
    items: list[LimitBody]
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )
    total: int = Field(description="Overrides stored, on every page.")


class LimitEventBody(BaseModel):
    id: int = Field(description="Pass as `before` for older changes.")
    changed_at: datetime
    action: Literal["created", "replaced", "deleted"]
    client_id: str
    capacity: int | None = Field(description="As the change left it; null for a deletion.")
    refill_per_second: float | None
    comment: str | None
    actor: ActorBody | None = Field(description="Who made the change; null when not recorded.")

    @classmethod
    def of(cls, event: LimitEvent) -> "LimitEventBody":
        return cls(
            id=event.id,
            changed_at=event.changed_at,
            action=event.action,  # type: ignore[arg-type]
            client_id=client_id_text(event.client_id),
            capacity=None if event.limit is None else event.limit.capacity,
            refill_per_second=None if event.limit is None else event.limit.refill_per_second,
            comment=event.comment,
            actor=ActorBody.of(event.actor),
        )


class LimitHistoryPage(BaseModel):
    items: list[LimitEventBody]
    next_before: int | None = Field(
        description="Pass as `before` for the next page; null on the last page."
    )


def limits_router(auth: Access) -> APIRouter:
    router = APIRouter(prefix="/limits", tags=["limits"], route_class=DishkaRoute)

    @router.post(
        "",
        status_code=201,
        dependencies=[Depends(auth.operator)],
        responses={409: PROBLEM_RESPONSE, **ERRORS},
    )
    async def create_limit(
        body: LimitCreate,
        create: FromDishka[CreateLimit],
        actor: Annotated[Actor, Depends(auth.operator)],
    ) -> LimitBody:
        """Limit one address or a block. Every worker applies it within a second; 409 if
        the client id has a limit already."""
        network = parse_client_id(body.client_id)
        limit = ClientLimit(network, body.to_limit(), body.comment, actor=actor)
        return LimitBody.of(await create(limit))

    @router.get("", dependencies=[Depends(auth.reader)], responses=ERRORS)
    async def list_limits(
        list_limits: FromDishka[ListLimits],
        count: FromDishka[CountLimits],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        after: Annotated[str | None, Query(description="The last client id seen.")] = None,
    ) -> LimitPage:
        """Overrides in address order (IPv4 first), `limit` at a time."""
        found = await list_limits(limit=limit, after=after)
        last = client_id_text(found[-1].client_id) if len(found) == limit else None
        return LimitPage(
            items=[LimitBody.of(item) for item in found], next_after=last, total=await count()
        )

    @router.api_route(
        "/history",
        methods=["PUT", "DELETE", "POST", "PATCH", "OPTIONS"],
        dependencies=[Depends(auth.reader)],
        include_in_schema=False,
    )
    async def limit_history_is_read_only() -> Response:
        """Without it `PUT /limits/history` would reach the override routes as a client id
        named "history" and answer 422 instead of 405 (and `OPTIONS` would answer 405 with
        the override routes' methods in `Allow`)."""
        document = problem(
            405, "Method Not Allowed", "The limits history is read only.", "method-not-allowed"
        )
        return Response(encode(document), 405, headers={"Allow": "GET"}, media_type=PROBLEM_JSON)

    @router.get("/history", dependencies=[Depends(auth.reader)], responses=ERRORS)
    async def limit_history(
        history: FromDishka[ListLimitHistory],
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_CHANGE_ID, description="Changes below this id.")
        ] = None,
    ) -> LimitHistoryPage:
        """Who created, replaced or deleted which override, and from where, newest first."""
        events = await history(limit=limit, before=before)
        last = events[-1].id if len(events) == limit else None
        return LimitHistoryPage(items=[LimitEventBody.of(e) for e in events], next_before=last)

    @router.get("/{client_id:path}", dependencies=[Depends(auth.reader)], responses=ERRORS)
    async def get_limit(client_id: ClientIdPath, get: FromDishka[GetLimit]) -> LimitBody:
        return LimitBody.of(await get(client_id))

    @router.put("/{client_id:path}", dependencies=[Depends(auth.operator)], responses=ERRORS)
    async def replace_limit(
        client_id: ClientIdPath,
        body: LimitPut,
        replace: FromDishka[ReplaceLimit],
        actor: Annotated[Actor, Depends(auth.operator)],
    ) -> LimitBody:
        """Replace the whole override (a missing `comment` clears it). The body `GET`
        answers, edited, is a valid one."""
        network = parse_client_id(client_id)
        if body.client_id is not None and parse_client_id(body.client_id) != network:
            raise InvalidLimit(
                "client_id", f"must be {client_id_text(network)}, the client id of the path"
            )
        limit = ClientLimit(network, body.to_limit(), body.comment, actor=actor)
        return LimitBody.of(await replace(limit))

    @router.delete(
        "/{client_id:path}",
        status_code=204,
        dependencies=[Depends(auth.operator)],
        responses=ERRORS,
    )
    async def delete_limit(
        client_id: ClientIdPath,
        delete: FromDishka[DeleteLimit],
        actor: Annotated[Actor, Depends(auth.operator)],
    ) -> Response:
        await delete(client_id, actor)
        return Response(status_code=204)

    return router
