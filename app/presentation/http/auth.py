import hashlib
import hmac
from typing import Annotated

import structlog
from fastapi import Header, HTTPException

from app.presentation.http.problem import problem

log = structlog.get_logger(__name__)


def fingerprint(token: bytes) -> str:
    """Names a token in the logs without revealing it (which admin, which rotation)."""
    return hashlib.sha256(token).hexdigest()[:12]


class AdminAuth:
    """FastAPI dependency: `Authorization: Bearer <token>` must be one of the admin tokens.

    Every configured token is compared, in constant time, whatever matched before.
    """

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)

    async def __call__(self, authorization: Annotated[str | None, Header()] = None) -> None:
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
