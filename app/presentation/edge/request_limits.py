from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.presentation.problem import problem, send_problem

_CLOSE = {"Connection": "close"}


def body_too_large(limit: int) -> HTTPException:
    """413 problem; the connection closes, so the rest of the body is never read."""
    detail = problem(
        413,
        "Content too large",
        f"The request body is larger than {limit} bytes.",
        "body-too-large",
    )
    return HTTPException(413, detail=detail, headers=_CLOSE)


def unsupported_media_type(content_type: str) -> HTTPException:
    sent = f"as {content_type}" if content_type else "without a Content-Type"
    detail = problem(
        415,
        "Unsupported media type",
        f"Send the body as application/json; it came {sent}.",
        "unsupported-media-type",
    )
    return HTTPException(415, detail=detail, headers=_CLOSE)


def _is_json(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class RequestLimits:
    """Pure ASGI middleware for the FastAPI app: request bodies are small JSON documents.

    A body announced (`Content-Length`) larger than `max_body_bytes` answers 413 before a
    byte of it is read; a chunked one is counted as it arrives and refused as soon as it
    passes the limit, so little more than the limit is ever held. A body that is not
    `application/json` (or `+json`) answers 415, on every endpoint and method. Both close the
    connection. `GET /` never comes here: the redirect front reads no body at all.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        chunked = False
        content_type = ""
        for name, value in scope["headers"]:
            if name == b"content-length":
                # not digits: too large (uvicorn refuses such a request before it gets here)
                length = int(value) if value.isdigit() else self.max_body_bytes + 1
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"content-type":
                content_type = value.decode("latin-1")
        if not chunked and not length:
            await self.app(scope, receive, send)
            return
        if length is not None and length > self.max_body_bytes:
            await _refuse(send, body_too_large(self.max_body_bytes))
            return
        if not _is_json(content_type):
            await _refuse(send, unsupported_media_type(content_type))
            return

        limit = self.max_body_bytes
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes an HTTPException from reading the body on to the
                    # app's handler, which answers the problem document.
                    raise body_too_large(limit)
            return message

        await self.app(scope, receive_limited, send)


async def _refuse(send: Send, error: HTTPException) -> None:
    assert isinstance(error.detail, dict)
    await send_problem(send, error.detail)
