import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class RequestContext:
    """Pure ASGI middleware for the FastAPI app (the redirect path never passes here).

    Every request gets an id (the proxy's `X-Request-ID` when it is sane, a new one
    otherwise), bound to the log context with the method and path and echoed back, so an
    admin change or an error in the logs can be matched to the request that caused it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _ACCEPTED_ID.fullmatch(given) else uuid.uuid4().hex
        # Each request runs in a task of its own, so these bindings end with it.
        structlog.contextvars.bind_contextvars(
            request_id=request_id, method=scope["method"], path=scope["path"]
        )
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
