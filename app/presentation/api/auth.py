import hashlib
import hmac
from collections.abc import Iterable
from typing import Annotated

import structlog
from fastapi import HTTPException, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.presentation.problem import problem, send_problem

log = structlog.get_logger(__name__)


def fingerprint(token: bytes) -> str:
    """Names a token in the logs without revealing it (which admin, which rotation)."""
    return hashlib.sha256(token).hexdigest()[:12]


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


class AdminAuth:
    """FastAPI dependency: `Authorization: Bearer <token>` must be one of the admin tokens.

    Every configured token is compared, in constant time, whatever matched before.
    """

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)

    async def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_TOKEN)] = None,
    ) -> None:
        refused = self.refusal(request.headers.get("authorization"))
        if refused is not None:
            raise refused

    def refusal(self, authorization: str | None) -> HTTPException | None:
        """The 401 (no bearer token) or 403 (not one of ours) problem; None for an admin,
        whose token's fingerprint is then bound to the request's log lines."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return HTTPException(
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
            return HTTPException(
                403, detail=problem(403, "Forbidden", "The admin token is not valid.", "forbidden")
            )
        structlog.contextvars.bind_contextvars(admin=fingerprint(presented))
        return None


class AdminGate:
    """Pure ASGI middleware: a request for an operation that depends on an AdminAuth is
    checked from its headers alone, so a missing or wrong token answers 401 or 403 before
    RequestLimits or FastAPI read a byte of the body (and the connection closes, unread).

    `routes` are the routes as included (no include prefix); the dependency still runs in
    FastAPI after this, so a route missed here is refused there, after its body.
    """

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        # method -> (route, its AdminAuth); a request off every guarded path's first
        # segment (`/balance`, `/health`) is let through at one startswith().
        self._guarded: dict[str, list[tuple[APIRoute, AdminAuth]]] = {}
        prefixes = set()
        for route in routes:
            auth = _admin_auth(route)
            if auth is not None and isinstance(route, APIRoute):
                prefixes.add("/" + route.path_format.split("/")[1])
                for method in route.methods or ():
                    self._guarded.setdefault(method, []).append((route, auth))
        self._prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = self._auth_for(scope)
            refused = auth.refusal(_authorization(scope)) if auth is not None else None
            if refused is not None:
                assert isinstance(refused.detail, dict)
                await send_problem(send, refused.detail, refused.headers)
                return
        await self.app(scope, receive, send)

    def _auth_for(self, scope: Scope) -> AdminAuth | None:
        root = scope.get("root_path", "")
        path: str = scope["path"]
        if root and path.startswith(root):
            path = path[len(root) :]
        if not path.startswith(self._prefixes):
            return None
        for route, auth in self._guarded.get(scope["method"], ()):
            if route.matches(scope)[0] is Match.FULL:
                return auth
        return None


def _admin_auth(route: BaseRoute) -> AdminAuth | None:
    for depends in getattr(route, "dependencies", ()):
        if isinstance(depends.dependency, AdminAuth):
            return depends.dependency
    return None


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None


class MetricsAuth(AdminAuth):
    """`/metrics` with `BALANCER_METRICS_TOKEN` set: the same check, its own scheme."""

    async def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(METRICS_TOKEN)] = None,
    ) -> None:
        await super().__call__(request)
