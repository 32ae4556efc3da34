from ipaddress import ip_address
from typing import Annotated

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Depends, HTTPException, Query

from app.application.redirect import ExplainRoute
from app.application.snapshot import ConfigSnapshot
from app.presentation.api.auth import Access
from app.presentation.api.schemas import PROBLEM_RESPONSE, RouteBody
from app.presentation.problem import problem


def route_router(auth: Access) -> APIRouter:
    router = APIRouter(prefix="/config", tags=["config"], route_class=DishkaRoute)

    @router.get(
        "/route",
        dependencies=[Depends(auth.reader)],
        responses={
            **dict.fromkeys((400, 401, 403, 422, 503), PROBLEM_RESPONSE),
        },
    )
    async def explain_route(
        explain: FromDishka[ExplainRoute],
        snapshot: FromDishka[ConfigSnapshot],
        ip: Annotated[str, Query(max_length=64, examples=["203.0.113.7"])],
        video: Annotated[
            str, Query(max_length=8192, examples=["http://s1.origin-cluster/video/1.m3u8"])
        ],
    ) -> RouteBody:
        """Which region, pool and target a client at `ip` would get for `video` from this
        worker, for checking a region setup. It takes no sequence number: viewers' splits
        are unchanged."""
        try:
            address = str(ip_address(ip))
        except ValueError:
            raise HTTPException(
                422,
                problem(
                    422,
                    "Invalid request",
                    f"{ip!r} is not an IP address.",
                    "invalid-address",
                    field="ip",
                ),
            ) from None
        route = await explain(address, video)
        return RouteBody(
            ip=route.address,
            country=route.country,
            region=route.region,
            matched_by=route.matched_by,
            pool=list(route.pool),
            target=route.target,
            location=route.location or None,
            country_source=snapshot.countries.source,
        )

    return router
