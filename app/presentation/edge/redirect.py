from collections.abc import Callable
from time import perf_counter
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from app.application.lifecycle import Lifecycle
from app.application.metrics import Tally
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.config import ConfigVersion
from app.domain.errors import BalancerError, InvalidVideoUrl
from app.domain.ratelimit import ClientLimiter, retry_after_seconds
from app.domain.router import Redirect
from app.domain.video import MAX_VIDEO_URL_LENGTH
from app.presentation.client import client_address
from app.presentation.problem import (
    PROBLEM_JSON,
    encode,
    error_problem,
    problem,
    retry_after,
)

_NO_STORE = (b"cache-control", b"no-store")
# A redirect's headers after its `location`.
REDIRECT_HEADERS = (_NO_STORE, (b"content-length", b"0"))
_EMPTY_BODY = {"type": "http.response.body", "body": b""}
_MAX_QUERY = 3 * MAX_VIDEO_URL_LENGTH + 64  # a fully percent-encoded URL of the maximum length
# Query strings -> their `video` value, for queries asked for again: emptied when full, and
# long queries not kept, so the memo stays small whatever is sent.
QUERY_MEMO_SIZE = 4096
QUERY_MEMO_KEY_BYTES = 512
# Before start-up completes only these answer; everything else needs the configuration.
_OPEN_WHILE_STARTING = ("/health", "/ready", "/docs", "/redoc", "/openapi.json")
# Where FastAPIOffline (fastapi-offline) mounts its copies of Swagger UI and ReDoc.
DOCS_ASSETS = "/static-offline-docs"
_OPEN_PREFIXES_WHILE_STARTING = (f"{DOCS_ASSETS}/", "/admin")


def video_param(query: bytes) -> str:
    """The `video` query parameter, percent-decoded once.

    The first non-empty `video` parameter is the one; later ones are ignored. Its value ends
    at the next `&`, unless that part holds a raw `?`: a player that does not encode the
    video URL sends its query raw (`?video=http://s1.origin-cluster/v.m3u8?token=a&exp=1`),
    and then everything after `video=` is the video URL, so `&exp=1` stays with it. An
    encoded URL has no raw `?` of its own, so parameters after it stay out of it whatever
    they hold. `+` is kept as it is: in a URL it is a plus, not a space.
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
        if "&" in value:
            head = value.partition("&")[0]
            if "?" not in head:
                value = head or _later_video(text, len(text) - len(value) + len(head))
        if "%" in value:  # unquote() on str is twice as slow as this
            value = unquote_to_bytes(value).decode()
    except UnicodeDecodeError:
        raise InvalidVideoUrl(
            "invalid-characters", "The video URL is not valid percent-encoded UTF-8."
        ) from None
    return value


def _later_video(text: str, end: int) -> str:
    """The first non-empty `video` value after an empty one that ended at `end`."""
    while True:
        start = text.find("&video=", end) + 7
        if start == 6:
            return ""
        end = text.find("&", start)
        if end == -1:
            return text[start:]
        value = text[start:end]
        if "?" in value:
            return text[start:]
        if value:
            return value


class Refusal(NamedTuple):
    """A problem answer of the redirect path: its status, `code`, headers and document."""

    status: int
    code: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def retry_in(self, seconds: int | str) -> "Refusal":
        return self._replace(headers=(*self.headers, (b"retry-after", str(seconds).encode())))


def refusal(document: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()) -> Refusal:
    body = encode(document)
    headers = (
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        _NO_STORE,
        *extra,
    )
    return Refusal(document["status"], document["code"], headers, body)


_RATE_LIMITED = refusal(
    problem(429, "Too many requests", "This client is over its rate limit.", "rate-limited")
)
_METHOD_NOT_ALLOWED = refusal(
    problem(405, "Method not allowed", "Use GET or HEAD.", "method-not-allowed"),
    extra=((b"allow", b"GET, HEAD"),),
)
_STARTING = refusal(
    problem(503, "Starting", "This worker has not loaded its configuration yet; retry.", "starting")
).retry_in(1)


class RedirectFront:
    """The ASGI entry point: `GET /` and `HEAD /` go straight to the redirect use case.

    Everything else goes to the FastAPI app. The redirect path skips FastAPI's routing,
    dependency solving and middleware on purpose: it runs per viewer request and costs a
    few microseconds this way instead of a hundred. `answer()` is that path without ASGI:
    the HTTP protocol (`protocol.py`) calls it straight from the parser for a plain
    `GET /?...`, and `__call__` for everything else that reaches `/`.
    """

    def __init__(self, app: ASGIApp, lifecycle: Lifecycle | None = None) -> None:
        self.app = app
        self.lifecycle = lifecycle or Lifecycle()
        # The use case's bound `__call__`: called through an instance, a class with
        # `__call__` takes CPython's slow call path (slot_tp_call), 0.4k instructions more.
        self._redirect: Callable[[str, str], Redirect] | None = None
        # The limiter's check while any limit is configured, else None: with limits off the
        # redirect path pays one attribute test.
        self._limit: Callable[[str], float] | None = None
        # True while the served configuration has regions: the router needs the address.
        self._regional = False
        # Whether `answer()` needs the client's address: limits or regions are on.
        self.wants_client = False
        # This worker's counts, None while counting is off (BALANCER_METRICS=false).
        self._tally: Tally | None = None
        # Query string -> `video_param(query)`, which depends on nothing else: no version
        # or setting changes it. Valid values only, each under its query's exact bytes.
        self._videos: dict[bytes, str] = {}

    @property
    def serving(self) -> bool:
        """Whether the redirect path is bound (the worker has started)."""
        return self._redirect is not None

    def bind(
        self,
        redirect: RedirectVideo,
        limiter: ClientLimiter | None = None,
        snapshot: ConfigSnapshot | None = None,
        tally: Tally | None = None,
    ) -> None:
        self._redirect = redirect.__call__
        self._tally = tally
        if snapshot is not None:

            def regional(version: ConfigVersion) -> None:
                self._regional = bool(version.config.regions)
                self.wants_client = self._regional or self._limit is not None

            snapshot.watch(regional)
        if limiter is not None:
            check = limiter.check

            def switch(enabled: bool) -> None:
                self._limit = check if enabled else None
                self.wants_client = self._regional or enabled

            limiter.watch(switch)

    def answer(self, method: str, query: bytes, address: str) -> Redirect | Refusal:
        """The answer to `method /?query` from `address` (used only while `wants_client`),
        counted. Only for a bound front (`serving`)."""
        tally = self._tally
        start = 0.0
        if tally is not None and tally.sample:
            tally.sample = False
            start = perf_counter()
        if method not in ("GET", "HEAD"):
            return self._refused(_METHOD_NOT_ALLOWED)
        limit = self._limit
        if limit is not None:
            wait = limit(address)
            if wait:
                return self._refused(_RATE_LIMITED.retry_in(retry_after_seconds(wait)))
        try:
            video = self._videos.get(query)
            if video is None:
                video = video_param(query)
                if len(query) <= QUERY_MEMO_KEY_BYTES:
                    videos = self._videos
                    if len(videos) >= QUERY_MEMO_SIZE:
                        videos.clear()
                    videos[query] = video
            redirect = self._redirect(video, address)  # type: ignore[misc]
        except BalancerError as error:
            refused = refusal(error_problem(error))
            seconds = retry_after(error)
            return self._refused(refused.retry_in(seconds) if seconds else refused)
        if tally is not None:
            tally.pending.append(redirect)  # Tally.redirect(), inlined: a call costs more
            if start:
                tally.observe(perf_counter() - start)
        return redirect

    def client_gone(self) -> None:
        """Count a connection its client closed with requests unanswered."""
        if self._tally is not None:
            self._tally.clients_gone += 1

    def _refused(self, answer: Refusal) -> Refusal:
        if self._tally is not None:
            self._tally.reject(answer.code)
        return answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/" or self._redirect is None:
            await self._elsewhere(scope, receive, send)
            return
        address = ""
        if self.wants_client:
            client = scope.get("client")
            address = client[0] if client else ""  # client_address(), inlined
        result = self.answer(scope["method"], scope["query_string"], address)
        if isinstance(result, Refusal):
            await _send_refusal(send, result)
            return
        headers = [(b"location", result.location.encode()), *REDIRECT_HEADERS]
        await send({"type": "http.response.start", "status": result.status, "headers": headers})
        await send(_EMPTY_BODY)

    async def _elsewhere(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Not the redirect path: the FastAPI app, after the rate limit for `POST /balance`.

        Until the worker has started, only health, docs and the console are served.
        """
        if self._redirect is None and scope["type"] == "http" and needs_start(scope["path"]):
            await _send_refusal(send, _STARTING)
            return
        limit = self._limit
        if limit is not None and scope["type"] == "http" and _limited(scope):
            wait = limit(client_address(scope))
            if wait:
                refused = _RATE_LIMITED.retry_in(retry_after_seconds(wait))
                await _send_refusal(send, self._refused(refused))
                return
        await self.app(scope, receive, send)


def _limited(scope: Scope) -> bool:
    """Whether a request other than `GET /` counts against the viewer's rate limit:
    `POST /balance` and the content steering paths, which players reach as they reach `/`."""
    path: str = scope["path"]
    if path.startswith("/steering/"):
        return True
    return path == "/balance" and scope["method"] == "POST"


def needs_start(path: str) -> bool:
    """Whether `path` answers 503 `starting` until the worker has started."""
    return path not in _OPEN_WHILE_STARTING and not path.startswith(_OPEN_PREFIXES_WHILE_STARTING)


async def _send_refusal(send: Send, answer: Refusal) -> None:
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": list(answer.headers)}
    )
    await send({"type": "http.response.body", "body": answer.body})
