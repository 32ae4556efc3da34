from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from app.application.redirect import RedirectVideo
from app.domain.errors import BalancerError, InvalidVideoUrl
from app.domain.video import MAX_VIDEO_URL_LENGTH
from app.presentation.http.problem import PROBLEM_JSON, encode, error_problem, problem

_NO_STORE = (b"cache-control", b"no-store")
_NO_BODY = (b"content-length", b"0")
_EMPTY_BODY = {"type": "http.response.body", "body": b""}
_MAX_QUERY = 3 * MAX_VIDEO_URL_LENGTH + 64  # a fully percent-encoded URL of the maximum length


def video_param(query: bytes) -> str:
    """The `video` query parameter, percent-decoded once.

    A player that does not encode the video URL sends its query string raw
    (`?video=http://s1.origin-cluster/v.m3u8?token=a&exp=1`); when the value holds a raw
    `?`, everything after `video=` is the video URL, so `&exp=1` stays with it. `+` is kept
    as it is: in a URL it is a plus, not a space.
    """
    if len(query) > _MAX_QUERY:
        raise InvalidVideoUrl(
            "video-too-long", f"The video URL is longer than {MAX_VIDEO_URL_LENGTH} characters."
        )
    try:
        text = query.decode()
        if text.startswith("video="):
            value = text[6:]
        else:
            start = text.find("&video=")
            if start == -1:
                return ""
            value = text[start + 7 :]
        if "?" not in value:
            value = value.partition("&")[0]
        if "%" in value:  # unquote() on str is twice as slow as this
            value = unquote_to_bytes(value).decode()
    except UnicodeDecodeError:
        raise InvalidVideoUrl(
            "invalid-characters", "The video URL is not valid percent-encoded UTF-8."
        ) from None
    return value


class RedirectFront:
    """The ASGI entry point: `GET /` and `HEAD /` go straight to the redirect use case.

    Everything else goes to the FastAPI app. The redirect path skips FastAPI's routing,
    dependency solving and middleware on purpose: it runs per viewer request and costs a
    few microseconds this way instead of a hundred.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._redirect: RedirectVideo | None = None

    def bind(self, redirect: RedirectVideo) -> None:
        self._redirect = redirect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/" or self._redirect is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            document = problem(405, "Method not allowed", "Use GET or HEAD.", "method-not-allowed")
            await _send_problem(send, document, extra=((b"allow", b"GET, HEAD"),))
            return
        try:
            redirect = self._redirect(video_param(scope["query_string"]))
        except BalancerError as error:
            await _send_problem(send, error_problem(error))
            return
        await send(
            {
                "type": "http.response.start",
                "status": redirect.status,
                "headers": [(b"location", redirect.location.encode()), _NO_STORE, _NO_BODY],
            }
        )
        await send(_EMPTY_BODY)


async def _send_problem(
    send: Send, document: dict[str, object], extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = encode(document)
    await send(
        {
            "type": "http.response.start",
            "status": document["status"],
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                _NO_STORE,
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
