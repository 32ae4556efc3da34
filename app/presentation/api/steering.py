"""Content steering for HLS and DASH players: the steering manifests players reload every
TTL seconds, and the tag that makes the balancer a playlist's or an MPD's steering server."""

from typing import Annotated, Any
from urllib.parse import quote

from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from app.application.snapshot import ConfigSnapshot
from app.application.steering import DescribeSteering, SteeringAnswer, SteerPlayer
from app.domain.syntax import is_server_label
from app.domain.video import parse_video_url
from app.presentation.api.openapi import RATE_LIMITED
from app.presentation.api.schemas import PROBLEM_RESPONSE
from app.presentation.client import client_address
from app.presentation.problem import encode

router = APIRouter(prefix="/steering", tags=["steering"], route_class=DishkaRoute)

# Players on any origin reload the manifest with XHR/fetch; it holds nothing private.
_HEADERS = {"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"}
_MAX_PARAMETER = 600  # longer values are garbage: ignored, never an error


def _manifest_response(example: dict[str, Any], description: str) -> dict[int | str, Any]:
    return {
        200: {
            "description": description,
            "content": {"application/json": {"example": example}},
            "headers": {
                "Cache-Control": {"schema": {"type": "string", "example": "no-store"}},
                "Access-Control-Allow-Origin": {"schema": {"type": "string", "example": "*"}},
            },
        },
        404: {"description": "Content steering is off for the viewer's pool.", **PROBLEM_RESPONSE},
        429: RATE_LIMITED,
        503: {"description": "The configuration is not loaded yet.", **PROBLEM_RESPONSE},
    }


_HLS_EXAMPLE = {
    "VERSION": 1,
    "TTL": 10,
    "RELOAD-URI": "hls?session=czE...&server=s1",
    "PATHWAY-PRIORITY": ["cdn-a", "cdn-b"],
}
_DASH_EXAMPLE = {
    "VERSION": 1,
    "TTL": 10,
    "RELOAD-URI": "dash?session=czE...&server=s1",
    "SERVICE-LOCATION-PRIORITY": ["cdn-a", "cdn-b"],
    "PATHWAY-PRIORITY": ["cdn-a", "cdn-b"],
}

Session = Annotated[
    str | None,
    Query(description="The session token of the previous manifest's RELOAD-URI (opaque)."),
]
ServerLabel = Annotated[
    str | None,
    Query(
        description="The origin server label (`s1`) whose rule may give it a pool of its own.",
        examples=["s1"],
    ),
]


def _clean(value: str | None) -> str:
    if value is None or len(value) > _MAX_PARAMETER:
        return ""
    return value


def _answer(
    answer: SteeringAnswer, *, kind: str, server: str, priority: str, also: str = ""
) -> Response:
    reload = f"{kind}?session={answer.token}"
    if server:
        reload += f"&server={server}"
    body: dict[str, object] = {
        "VERSION": 1,
        "TTL": answer.ttl,
        "RELOAD-URI": reload,
        priority: list(answer.plan.pathways),
    }
    if also:
        body[also] = body[priority]
    return Response(encode(body), media_type="application/json", headers=_HEADERS)


def _steer(
    steer: SteerPlayer,
    request: Request,
    *,
    session: str | None,
    server: str | None,
    pathway: str | None,
    throughput: str | None,
) -> tuple[SteeringAnswer, str]:
    label = _clean(server)
    label = label if is_server_label(label) else ""
    answer = steer(
        server=label,
        client=client_address(request.scope),
        token=_clean(session),
        pathway=_clean(pathway),
        throughput=_clean(throughput),
    )
    return answer, label


@router.get(
    "/hls",
    response_class=Response,
    responses=_manifest_response(_HLS_EXAMPLE, "An HLS steering manifest."),
)
async def hls_manifest(
    *,
    steer: FromDishka[SteerPlayer],
    request: Request,
    session: Session = None,
    server: ServerLabel = None,
    hls_pathway: Annotated[
        str | None, Query(alias="_HLS_pathway", description="The pathway the player is on.")
    ] = None,
    hls_throughput: Annotated[
        str | None,
        Query(alias="_HLS_throughput", description="The player's throughput, bits per second."),
    ] = None,
) -> Response:
    """The HLS Content Steering manifest for this viewer: `PATHWAY-PRIORITY` lists the
    healthy pathways of its pool (its region's, its server rule's or the global one, as
    for redirects) first, then those that are down. A new viewer's first pathway follows
    the pool's weighted round robin; the session token in `RELOAD-URI` keeps it while it
    stays healthy. `_HLS_pathway` and `_HLS_throughput` feed /metrics; values that are not
    a pathway of the pool or not a number are ignored."""
    answer, label = _steer(
        steer,
        request,
        session=session,
        server=server,
        pathway=hls_pathway,
        throughput=hls_throughput,
    )
    return _answer(answer, kind="hls", server=label, priority="PATHWAY-PRIORITY")


@router.get(
    "/dash",
    response_class=Response,
    responses=_manifest_response(_DASH_EXAMPLE, "A DASH content steering manifest."),
)
async def dash_manifest(
    *,
    steer: FromDishka[SteerPlayer],
    request: Request,
    session: Session = None,
    server: ServerLabel = None,
    dash_pathway: Annotated[
        str | None, Query(alias="_DASH_pathway", description="The service location in use.")
    ] = None,
    dash_throughput: Annotated[
        str | None,
        Query(alias="_DASH_throughput", description="The player's throughput, bits per second."),
    ] = None,
) -> Response:
    """The DASH-IF Content Steering manifest for this viewer: as `/steering/hls`, with
    `SERVICE-LOCATION-PRIORITY` (the pathway ids are the MPD's `serviceLocation`s), and the
    same list as `PATHWAY-PRIORITY`, the key ETSI TS 103 998 and dash.js 5 read.
    `_DASH_pathway` lists the MPD's service locations (`"cdn-a,cdn-b"`) and
    `_DASH_throughput` a throughput for each that the player measured."""
    answer, label = _steer(
        steer,
        request,
        session=session,
        server=server,
        pathway=dash_pathway,
        throughput=dash_throughput,
    )
    return _answer(
        answer,
        kind="dash",
        server=label,
        priority="SERVICE-LOCATION-PRIORITY",
        also="PATHWAY-PRIORITY",
    )


class SteeringTagBody(BaseModel):
    server_uri_hls: str = Field(description="The HLS steering server URI for this video.")
    server_uri_dash: str = Field(description="The DASH steering server URI for this video.")
    pathway: str | None = Field(description="The pathway a new viewer starts on; null: none.")
    ttl_seconds: int
    hls: str = Field(
        description="The line for the multivariant playlist.",
        examples=[
            '#EXT-X-CONTENT-STEERING:SERVER-URI="http://balancer/steering/hls?server=s1",'
            'PATHWAY-ID="cdn-a"'
        ],
    )
    dash: str = Field(
        description="The element for the MPD (a child of `MPD`).",
        examples=[
            '<ContentSteering defaultServiceLocation="cdn-a" queryBeforeStart="true">'
            "http://balancer/steering/dash?server=s1</ContentSteering>"
        ],
    )


@router.get(
    "/tag",
    responses={
        400: PROBLEM_RESPONSE,
        404: PROBLEM_RESPONSE,
        429: RATE_LIMITED,
        503: PROBLEM_RESPONSE,
    },
)
async def steering_tag(
    describe: FromDishka[DescribeSteering],
    snapshot: FromDishka[ConfigSnapshot],
    request: Request,
    video: Annotated[
        str,
        Query(
            max_length=8192,
            description="The multivariant playlist's (or MPD's) URL on an origin server.",
            examples=["http://s1.origin-cluster/video/1488/master.m3u8"],
        ),
    ],
) -> SteeringTagBody:
    """The `#EXT-X-CONTENT-STEERING` line and the `<ContentSteering>` element that make
    this balancer the steering server of a video, for origins that write their own
    playlists. Each variant (`#EXT-X-STREAM-INF`) then names its pathway with `PATHWAY-ID`,
    and each MPD `BaseURL` its `serviceLocation`. `PATHWAY-ID` here is the pathway a new
    viewer at this address would start on."""
    server = parse_video_url(video, frozenset(snapshot.router.version.config.origin_domains)).server
    tag = await describe(server, client_address(request.scope))
    base = str(request.base_url).rstrip("/")
    query = f"server={quote(server)}"
    hls_uri, dash_uri = f"{base}/steering/hls?{query}", f"{base}/steering/dash?{query}"
    hls = f'#EXT-X-CONTENT-STEERING:SERVER-URI="{hls_uri}"'
    dash = "<ContentSteering"
    if tag.pathway:
        hls += f',PATHWAY-ID="{tag.pathway}"'
        dash += f' defaultServiceLocation="{tag.pathway}"'
    dash += f' queryBeforeStart="true">{dash_uri.replace("&", "&amp;")}</ContentSteering>'
    return SteeringTagBody(
        server_uri_hls=hls_uri,
        server_uri_dash=dash_uri,
        pathway=tag.pathway or None,
        ttl_seconds=tag.ttl,
        hls=hls,
        dash=dash,
    )
