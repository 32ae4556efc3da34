from dishka.integrations.fastapi import DishkaRoute, FromDishka
from fastapi import APIRouter, Request

from app.application.redirect import RedirectVideo
from app.presentation.api.openapi import RATE_LIMITED
from app.presentation.api.schemas import PROBLEM_RESPONSE, BalanceDecision, BalanceRequest
from app.presentation.client import client_address

router = APIRouter(tags=["redirect"], route_class=DishkaRoute)


@router.post(
    "/balance", responses={400: PROBLEM_RESPONSE, 422: PROBLEM_RESPONSE, 429: RATE_LIMITED}
)
async def balance(
    body: BalanceRequest, redirect: FromDishka[RedirectVideo], request: Request
) -> BalanceDecision:
    """The decision `GET /` would make for this client, as JSON instead of a redirect. It
    counts as a request of the split (it takes a sequence number)."""
    decision = redirect(body.video, client_address(request.scope))
    return BalanceDecision(
        redirect_url=decision.location,
        target=decision.target,
        server=decision.server,
        config_version=decision.config_version,
        region=decision.region,
    )
