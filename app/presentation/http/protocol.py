"""uvicorn's httptools protocol with the two bounds it lacks, and the redirect path built in.

The redirect: a plain `GET /?...` (or `HEAD`) is answered from the parser's callback by
`RedirectFront.answer()`, written straight to the transport: no ASGI scope, request cycle,
task or `send` messages per viewer request. Everything else (another path, a body to read,
a request pipelined behind one the app still answers, `Expect`, an upgrade, the access log
on, the worker not started) goes through uvicorn's ASGI cycle as before. The bytes are what
uvicorn would send for the same answer: its status line, its default headers (`date`, and
`connection: close` while draining) and `connection: close` when the request did not keep
the connection alive. The client address is uvicorn's proxy-headers rule (the rightmost
untrusted `X-Forwarded-For` address when the peer is trusted), read only while limits or
regions need it and remembered per header value.

The bounds:
httptools (llhttp) puts no limit on a request's head: a 100 MB header is buffered whole and
parsed for seconds while the worker serves nobody else. And uvicorn times out only idle
keep-alive connections, so a client that sends half a request and stalls keeps its
connection (and, mid-body, a request task) forever. This protocol refuses a head larger
than `max_head_bytes` with 431 while it arrives, and closes a connection whose request
(head, or body the app is waiting for) has not arrived within `read_timeout` seconds.

The redirect path pays a few comparisons per read for the first and nothing
for the second: one sweep per worker goes over its connections twice per timeout.
"""

import asyncio
import functools
import time
import weakref
from collections.abc import Iterable
from typing import Any, ClassVar, cast

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.domain.config import Redirect
from app.presentation.http.problem import PROBLEM_JSON, encode, problem
from app.presentation.http.redirect import REDIRECT_HEADERS, RedirectFront

log = structlog.get_logger(__name__)

_HEAD, _BODY, _APP = "head", "body", "app"


def _header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % header for header in headers)


# What follows a redirect's `location` value, up to the line that ends the head.
_REDIRECT_TAIL = b"\r\n" + _header_lines(REDIRECT_HEADERS)
_END, _CLOSE_END = b"\r\n", b"connection: close\r\n\r\n"
_CLOSE = (b"connection", b"close")
_FRAMING = (b"content-length", b"transfer-encoding")
# Client addresses by X-Forwarded-For value, for limits and regions: emptied when full, and
# long values not kept, so the memo stays small whatever is sent; a miss costs what uvicorn's
# proxy-headers middleware pays on every request.
_FORWARDED_MEMO_SIZE = 8192
_FORWARDED_MEMO_KEY_BYTES = 256


class _NoWaiter:
    def set(self) -> None:
        pass


class _Served:
    """`cycle` of a connection whose last request was answered without one: complete."""

    response_complete = True
    more_body = False
    keep_alive = True
    disconnected = False
    message_event = _NoWaiter()  # uvicorn sets it when the connection is lost


_SERVED = cast("Any", _Served())


class _Worker:
    """What the protocol needs of the worker's app, found once in uvicorn's wrappers."""

    found: ClassVar[weakref.WeakKeyDictionary[Any, "_Worker"]] = weakref.WeakKeyDictionary()

    def __init__(self, app: Any) -> None:
        self.front: RedirectFront | None = None
        self.proxy: ProxyHeadersMiddleware | None = None
        while app is not None:
            if isinstance(app, RedirectFront):
                self.front = app
            elif isinstance(app, ProxyHeadersMiddleware):
                self.proxy = app
            app = getattr(app, "app", None)
        self.forwarded: dict[bytes, str] = {}
        self.defaults: object = None
        self.default_lines = b""
        self.default_close = False

    @classmethod
    def of(cls, app: Any) -> "_Worker":
        worker = cls.found.get(app)
        if worker is None:
            worker = cls.found[app] = cls(app)
        return worker

    def trusts(self, peer: str) -> bool:
        """Whether `X-Forwarded-For` from `peer` names the client (uvicorn's rule)."""
        return self.proxy is not None and peer in self.proxy.trusted_hosts

    def default_head(self, defaults: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
        """uvicorn's default headers as lines, and whether they close the connection.
        uvicorn replaces the list each second (a new `date`): rebuilt then only."""
        if defaults is not self.defaults:
            self.defaults = defaults
            self.default_lines = _header_lines(defaults)
            self.default_close = _CLOSE in defaults
        return self.default_lines, self.default_close

    def forwarded_client(self, forwarded: bytes) -> str:
        """The client a trusted peer's `X-Forwarded-For` (its values joined by ", ") names
        ("" if none), remembered in `forwarded`, which the protocol reads first."""
        assert self.proxy is not None
        trusted = self.proxy.trusted_hosts
        address: str = trusted.get_trusted_client_address(forwarded.decode("latin-1"))[0]
        if len(forwarded) <= _FORWARDED_MEMO_KEY_BYTES:
            if len(self.forwarded) >= _FORWARDED_MEMO_SIZE:
                self.forwarded.clear()
            self.forwarded[forwarded] = address
        return address


def _head_too_large(limit: int) -> bytes:
    body = encode(
        problem(
            431,
            "Request header fields too large",
            f"The request line and headers are larger than {limit} bytes.",
            "headers-too-large",
        )
    )
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
    ) % (PROBLEM_JSON.encode(), len(body), body)


_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol plus `max_head_bytes` and `read_timeout` (see the module)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_head_bytes: int,
        read_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = max_head_bytes
        self.read_timeout = read_timeout
        self.head_bytes = 0
        self.heads = 0  # request heads parsed on this connection
        self.waiting_since = 0.0
        self.waiting_for: tuple[int, str] | None = None
        self.worker = _Worker.of(self.app)
        self.peer = ""  # the connection's client address
        self.forwarded_for: bytes | None = None  # this request's X-Forwarded-For values
        self.framed = False  # this request has Content-Length or Transfer-Encoding
        self.trusted_peer = False
        # Requests handed to the app and not answered yet (the one running and the pipelined
        # ones behind it), and a 400 held until they are answered.
        self.open_cycles: list[Any] = []
        self.held_400: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else ""
        self.trusted_peer = self.worker.trusts(self.peer)
        _Sweeper.ensure(self.loop, self.connections, self.read_timeout)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            HttpToolsProtocol.data_received(self, data)  # a body: RequestLimits bounds it
            return
        heads = self.heads
        size = self.head_bytes + len(data)
        # Refused before parsing: httptools would buffer it all and fail on its own terms
        # (a URL over 64 KiB is a plain-text 400). A read that ends the head within the
        # limit (a small request with its body, or pipelined ones) is fine.
        if size > self.max_head_bytes and (
            data.find(b"\r\n\r\n", 0, max(self.max_head_bytes - self.head_bytes, 0) + 4) == -1
        ):
            self._refuse_head()
            return
        # HttpToolsProtocol.data_received() (uvicorn 0.54) inlined with its keep-alive
        # reset: two Python frames fewer a read (measured: 0.9k instructions a request).
        keep_alive = self.timeout_keep_alive_task
        if keep_alive is not None:
            keep_alive.cancel()
            self.timeout_keep_alive_task = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        self.head_bytes = size if self.heads == heads else 0  # 0: a head ended in this read

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"x-forwarded-for":
            forwarded = self.forwarded_for
            self.forwarded_for = value if forwarded is None else forwarded + b", " + value
        elif name in _FRAMING:
            self.framed = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads += 1
        forwarded, self.forwarded_for = self.forwarded_for, None
        framed, self.framed = self.framed, False
        front = self.worker.front
        url = self.url
        cycle = self.cycle
        if (
            front is None
            or not front.serving
            or url[:2] != b"/?"
            or not (cycle is None or cycle.response_complete)  # pipelined behind the app
            # llhttp checks a body's framing (Transfer-Encoding values, both headers, two
            # lengths) after this callback: answered here, a request it then refuses would
            # get this answer and its 400. The app's path answers only after the check.
            or framed
            or self.expect_100_continue
            or self.access_log
            or self.flow.write_paused
        ):
            self._to_app()
            return
        parser = self.parser
        method = parser.get_method()
        if method not in (b"GET", b"HEAD") or parser.should_upgrade() or b"#" in url:
            self._to_app()
            return
        if self.transport.is_closing():
            return  # an earlier answer in this read closed the connection (draining)
        self._answer(front, "GET" if method == b"GET" else "HEAD", url[2:], forwarded)

    def _to_app(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not _SERVED:
            self.open_cycles = [c for c in self.open_cycles if not c.response_complete]
            self.open_cycles.append(cycle)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request llhttp refused, written once the requests before it
        (pipelined, still with the app) are answered, as the redirect path answers them."""
        refused = self.cycle
        if refused is not None and refused.more_body and not refused.response_complete:
            # its head reached the app before llhttp checked the framing (or the body broke
            # off): the 400 is its answer, and nothing the app writes for it
            refused.disconnected = True
            refused.message_event.set()
        if not self._answered_before_400():
            self.held_400 = msg
            self.flow.pause_reading()
            return
        super().send_400_response(msg)

    def _answered_before_400(self) -> bool:
        return all(cycle.response_complete or cycle.disconnected for cycle in self.open_cycles)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        held = self.held_400
        if held is not None and not self.transport.is_closing() and self._answered_before_400():
            self.held_400 = None
            super().send_400_response(held)

    def connection_lost(self, exc: Exception | None) -> None:
        """A client that goes away with requests unanswered is not an error of the app:
        uvicorn marks only the newest request disconnected, so a pipelined one still running
        would write to the closed transport ("handler is closed", logged as an error)."""
        gone = [c for c in self.open_cycles if not (c.response_complete or c.disconnected)]
        for cycle in gone:
            cycle.disconnected = True
            cycle.message_event.set()
        if gone:
            log.debug("client_gone", client=self.client, unanswered=len(gone))
            front = self.worker.front
            if front is not None:
                front.client_gone()
        self.open_cycles = []
        super().connection_lost(exc)

    def _answer(
        self, front: RedirectFront, method: str, query: bytes, forwarded: bytes | None
    ) -> None:
        """Answer a `GET /?query` (or `HEAD`) without an ASGI cycle (see the module)."""
        address = ""
        if front.wants_client:
            address = self.peer
            if forwarded is not None and self.trusted_peer:
                worker = self.worker
                address = (
                    worker.forwarded.get(forwarded) or worker.forwarded_client(forwarded) or address
                )
        result = front.answer(method, query, address)
        parser = self.parser
        keep_alive = parser.should_keep_alive() and parser.get_http_version() != "1.0"
        defaults, closing = self.worker.default_head(self.server_state.default_headers)
        end = _END if keep_alive or closing else _CLOSE_END
        if isinstance(result, Redirect):
            location = result.location
            if not location.isprintable():
                # uvicorn refuses control characters in a header value with a 500; so do we
                log.error("unprintable_location", location=location)
                self.transport.write(_INTERNAL_ERROR)
                self.transport.close()
                return
            self.transport.write(
                b"".join(
                    (
                        STATUS_LINE[result.status],
                        defaults,
                        b"location: ",
                        location.encode(),
                        _REDIRECT_TAIL,
                        end,
                    )
                )
            )
        else:
            body = b"" if method == "HEAD" else result.body
            lines = _header_lines(result.headers)
            self.transport.write(b"".join((STATUS_LINE[result.status], defaults, lines, end, body)))
        self.cycle = _SERVED
        self.server_state.total_requests += 1
        if not keep_alive or closing:
            self.transport.close()
            return
        # uvicorn's on_response_complete(): the idle timer runs from the answer
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        log.warning("request_headers_too_large", client=self.client, limit=self.max_head_bytes)
        if self.cycle is None or self.cycle.response_complete:
            # (behind a pipelined request still being answered it would answer that one)
            self.transport.write(_head_too_large(self.max_head_bytes))
        for cycle in self.open_cycles:  # nothing more to write for them
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self.transport.close()

    def waiting(self) -> tuple[int, str]:
        """What the connection waits for: the head of request `heads + 1`, or the body of
        request `heads`, or the app's answer to it."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return self.heads, _HEAD
        return self.heads, _BODY if cycle.more_body else _APP


class _Sweeper:
    """Closes, once per worker loop, the connections that wait too long for their client."""

    running: ClassVar[dict[asyncio.AbstractEventLoop, "_Sweeper"]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any], timeout: float):
        self.loop = loop
        self.connections = connections
        self.timeout = timeout

    @classmethod
    def ensure(cls, loop: asyncio.AbstractEventLoop, connections: set[Any], timeout: float) -> None:
        if loop not in cls.running:
            cls.running[loop] = sweeper = cls(loop, connections, timeout)
            loop.call_later(timeout / 2, sweeper.sweep)

    def sweep(self) -> None:
        if self.loop.is_closed():
            return
        now = time.monotonic()
        for protocol in list(self.connections):
            if not isinstance(protocol, BoundedHttpToolsProtocol):
                continue
            state = protocol.waiting()
            if state != protocol.waiting_for:
                protocol.waiting_for, protocol.waiting_since = state, now
            elif (
                state[1] != _APP
                and now - protocol.waiting_since >= self.timeout
                and not protocol.transport.is_closing()
            ):
                log.info("slow_client_closed", client=protocol.client, waiting_for=state[1])
                protocol.transport.close()
        self.loop.call_later(self.timeout / 2, self.sweep)


def bounded_httptools(*, max_head_bytes: int, read_timeout: float) -> type[asyncio.Protocol]:
    """The `http` protocol for uvicorn. A partial of a module-level class pickles into
    uvicorn's spawned workers; uvicorn only ever calls it, so it serves as the class."""
    factory = functools.partial(
        BoundedHttpToolsProtocol, max_head_bytes=max_head_bytes, read_timeout=read_timeout
    )
    return cast("type[asyncio.Protocol]", factory)
