import hashlib
import hmac
from collections.abc import Iterable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.application.errors import InvalidToken
from app.application.ports import TokenVerifier
from app.domain.access import Actor, Identity, Role, StaticToken
from app.presentation.api.schemas import PROBLEM_RESPONSE
from app.presentation.client import client_address
from app.presentation.problem import problem, send_problem

log = structlog.get_logger(__name__)


def fingerprint(token: bytes) -> str:
    """Names a token in the logs without revealing it (which one, which rotation)."""
    return hashlib.sha256(token).hexdigest()[:12]


# Declared on the operations that need a token, so /docs has an Authorize button that
# "Try it out" sends, and ReDoc names the operations that need one. Only declared: the header
# is read and judged by RoleAuth itself (401/403 as problem documents).
ADMIN_TOKEN = HTTPBearer(
    scheme_name="adminToken",
    description="A token of `BALANCER_ADMIN_TOKEN` or `BALANCER_ADMIN_TOKENS` (`make run` "
    "generates one and keeps it in `.data/admin-token`), or a JWT from the identity provider "
    "of `BALANCER_JWT_JWKS`. Each operation names the role it needs (`x-required-role`): "
    "`reader`, `operator` or `admin`, each allowed what the ones before it are.",
    auto_error=False,
)
METRICS_TOKEN = HTTPBearer(
    scheme_name="metricsToken",
    description="One of `BALANCER_METRICS_TOKEN` (an admin token is not one).",
    auto_error=False,
)
# Where AdminGate leaves the actor it judged, for the route's dependency: a key of the
# request's own scope (`state` may be shared by a server that does not copy it).
_SCOPE_KEY = "balancer.admin_actor"


def _unauthorized(detail: str, code: str) -> HTTPException:
    return HTTPException(
        401,
        detail=problem(401, "Unauthorized", detail, code),
        headers={"WWW-Authenticate": "Bearer"},
    )


class Access:
    """Who sends an admin request: one of the static tokens (every one compared, in
    constant time, whatever matched before) or, with a verifier, a JWT."""

    def __init__(self, tokens: Iterable[StaticToken], verifier: TokenVerifier | None) -> None:
        self._tokens = tuple((token.secret.encode(), token) for token in tokens)
        self._verifier = verifier
        self.reader = RoleAuth(self, Role.READER)
        self.operator = RoleAuth(self, Role.OPERATOR)
        self.admin = RoleAuth(self, Role.ADMIN)

    async def identify(self, authorization: str | None) -> Identity | HTTPException:
        """The identity, or the 401 (no bearer token, a JWT that is not valid) or 403 (a
        token not ours) problem."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("Send Authorization: Bearer <admin token or JWT>.", "unauthorized")
        presented = token.encode()
        found: StaticToken | None = None
        for secret, static in self._tokens:
            if hmac.compare_digest(presented, secret):
                found = static
        if found is not None:
            return Identity(found.name, found.role)
        if self._verifier is not None and token.count(".") == 2:
            return await self._verified(token)
        log.warning("admin_token_rejected", token=fingerprint(presented))
        return HTTPException(
            403, detail=problem(403, "Forbidden", "The admin token is not valid.", "forbidden")
        )

    async def _verified(self, token: str) -> Identity | HTTPException:
        assert self._verifier is not None
        try:
            return await self._verifier(token)
        except InvalidToken as error:
            log.warning("jwt_rejected", reason=str(error))
        except Exception:  # the verifier's own failure must not answer 500 either
            log.exception("jwt_verification_failed")
        return _unauthorized(
            "The JWT is not valid (signature, key, issuer, audience or time).", "invalid-token"
        )


class RoleAuth:
    """FastAPI dependency: the request's identity must have `role` (or a stronger one).
    Answers the actor (name, issuer, address) for the history."""

    def __init__(self, access: Access, role: Role) -> None:
        self.access = access
        self.role = role

    async def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_TOKEN)] = None,
    ) -> Actor:
        judged = request.scope.get(_SCOPE_KEY)
        if not isinstance(judged, Actor):
            outcome = await self.judge(request.scope, request.headers.get("authorization"))
            if isinstance(outcome, HTTPException):
                raise outcome
            judged = outcome
        return judged

    async def judge(self, scope: Scope, authorization: str | None) -> Actor | HTTPException:
        """The actor, or the refusal: 401/403 from Access, or 403 `forbidden-role`."""
        identity = await self.access.identify(authorization)
        if isinstance(identity, HTTPException):
            return identity
        if not identity.may(self.role):
            held = f"the {identity.role} role" if identity.role is not None else "no role"
            log.warning("admin_role_refused", actor=identity.name, needed=str(self.role))
            return HTTPException(
                403,
                detail=problem(
                    403,
                    "Forbidden",
                    f"This needs the {self.role} role; {identity.name} has {held}.",
                    "forbidden-role",
                    role=str(self.role),
                ),
            )
        actor = Actor.of(identity, client_address(scope) or None)
        structlog.contextvars.bind_contextvars(actor=actor.label, role=str(identity.role))
        return actor


def required_role(route: BaseRoute) -> RoleAuth | None:
    """The RoleAuth a route depends on (on the route or as a parameter), if any."""
    if not isinstance(route, APIRoute):
        return None
    for depends in route.dependant.dependencies:
        if isinstance(depends.call, RoleAuth):
            return depends.call
    return None


def declare_roles(routes: Iterable[BaseRoute]) -> None:
    """Names in the OpenAPI document the role each operation needs: `x-required-role` and a
    sentence of its description."""
    for route in routes:
        auth = required_role(route)
        if auth is None or not isinstance(route, APIRoute):
            continue
        extra: dict[str, Any] = dict(route.openapi_extra or {})
        extra["x-required-role"] = str(auth.role)
        route.openapi_extra = extra
        sentence = f"Requires the `{auth.role}` role."
        if sentence not in (route.description or ""):
            route.description = f"{route.description}\n\n{sentence}".strip()


class AdminGate:
    """Pure ASGI middleware: a request for an operation that depends on a RoleAuth is
    judged from its headers alone, so a missing or wrong token, or one without the role,
    answers 401 or 403 before RequestLimits or FastAPI read a byte of the body (and the
    connection closes, unread). The actor judged is left in the request's scope for the
    route's dependency, so a JWT is verified once.

    `routes` are the routes as included (no include prefix); the dependency still runs in
    FastAPI after this, so a route missed here is refused there, after its body.
    """

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        # method -> (route, its RoleAuth); a request off every guarded path's first
        # segment (`/balance`, `/health`) is let through at one startswith().
        self._guarded: dict[str, list[tuple[APIRoute, RoleAuth | MetricsAuth]]] = {}
        prefixes = set()
        for route in routes:
            auth = _guard(route)
            if auth is not None and isinstance(route, APIRoute):
                prefixes.add("/" + route.path_format.split("/")[1])
                for method in route.methods or ():
                    self._guarded.setdefault(method, []).append((route, auth))
        self._prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = self._auth_for(scope)
            if auth is not None:
                judged = await auth.judge(scope, _authorization(scope))
                if isinstance(judged, HTTPException):
                    assert isinstance(judged.detail, dict)
                    await send_problem(send, judged.detail, judged.headers)
                    return
                if judged is not None:
                    scope[_SCOPE_KEY] = judged
        await self.app(scope, receive, send)

    def _auth_for(self, scope: Scope) -> "RoleAuth | MetricsAuth | None":
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


def _guard(route: BaseRoute) -> "RoleAuth | MetricsAuth | None":
    if not isinstance(route, APIRoute):
        return None
    for depends in route.dependant.dependencies:
        if isinstance(depends.call, RoleAuth | MetricsAuth):
            return depends.call
    return None


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value).decode("latin-1")
    return None


class WhoAmI(BaseModel):
    name: str = Field(description="The static token's name, or the JWT's `sub`.")
    issuer: str | None = Field(description="The JWT's `iss`; null for a static token.")
    role: Role = Field(description="`reader`, `operator` or `admin`.")
    address: str | None = Field(description="The client address the history records.")


def whoami_router(auth: Access) -> APIRouter:
    router = APIRouter(tags=["access"])

    @router.get("/whoami", responses=dict.fromkeys((401, 403), PROBLEM_RESPONSE))
    async def whoami(actor: Annotated[Actor, Depends(auth.reader)]) -> WhoAmI:
        """Who the bearer token names and the role it holds (the console asks, to show what
        its holder may do)."""
        assert actor.role is not None
        return WhoAmI(name=actor.name, issuer=actor.issuer, role=actor.role, address=actor.address)

    return router


class MetricsAuth:
    """`/metrics` with `BALANCER_METRICS_TOKEN` set: one of those tokens, compared in
    constant time; 401 without a bearer token, 403 with another."""

    def __init__(self, tokens: tuple[str, ...]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)

    async def __call__(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Security(METRICS_TOKEN)] = None,
    ) -> None:
        refused = await self.judge(request.scope, request.headers.get("authorization"))
        if isinstance(refused, HTTPException):
            raise refused

    async def judge(self, _: Scope, authorization: str | None) -> HTTPException | None:
        scheme, __, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _unauthorized("Send Authorization: Bearer <metrics token>.", "unauthorized")
        presented = given.strip().encode()
        matched = False
        for expected in self._tokens:
            matched |= hmac.compare_digest(presented, expected)
        if matched:
            return None
        log.warning("metrics_token_rejected")
        refused = problem(403, "Forbidden", "The metrics token is not valid.", "forbidden")
        return HTTPException(403, detail=refused)
