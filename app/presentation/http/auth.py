import hashlib
import hmac
from typing import Annotated

import structlog
from fastapi import Header, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.presentation.http.problem import problem

log = structlog.get_logger(__name__)

# Declared on the operations that need a token, so /docs has an Authorize button that
# "Try it out" sends, and ReDoc names the operations that need one. Only declared: the header
# is read and judged by AdminAuth itself (401/403 as problem documents).
ADMIN_TOKEN = HTTPBearer(
    scheme_name="adminToken",
    description="One of `BALANCER_ADMIN_TOKEN`; `make run` generates one and keeps it in "
    "`.data/admin-token`.",
    auto_error=False,
)
METRICS_TOKEN = HTTPBearer(
    scheme_name="metricsToken",
    description="One of `BALANCER_METRICS_TOKEN` (an admin token is not one).",
    auto_error=False,
)


def fingerprint(token: bytes) -> str:
    """Names a token in the logs without revealing it (which admin, which rotation)."""
    return hashlib.sha256(token).hexdigest()[:12]


class AdminAuth:
    """FastAPI dependency: `Authorization: Bearer <token>` must be one of the admin tokens.

    Every configured token is compared, in constant time, whatever matched before.
    """

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)

    async def __call__(
        self,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        declared: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_TOKEN)] = None,
    ) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                detail=problem(
                    401, "Unauthorized", "Send Authorization: Bearer <admin token>.", "unauthorized"
                ),
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = token.strip().encode()
        matched = False
        for expected in self._tokens:
            matched |= hmac.compare_digest(presented, expected)
        if not matched:
            log.warning("admin_token_rejected")
            raise HTTPException(
                403, detail=problem(403, "Forbidden", "The admin token is not valid.", "forbidden")
            )
        structlog.contextvars.bind_contextvars(admin=fingerprint(presented))


class MetricsAuth(AdminAuth):
    """`/metrics` with `BALANCER_METRICS_TOKEN` set: the same check, its own scheme."""

    async def __call__(
        self,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        declared: Annotated[HTTPAuthorizationCredentials | None, Security(METRICS_TOKEN)] = None,
    ) -> None:
        await super().__call__(authorization)
