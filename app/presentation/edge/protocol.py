"""The viewer edge: the service's own HTTP/1.1 protocol, and uvicorn's for everything else.

`EdgeProtocol` (asyncio Protocol + httptools) accepts every connection. A plain `GET /?...`
or `HEAD /?...` (no body framing, no `Expect`, no upgrade, no fragment) is answered from the
parser's callback by `RedirectFront.answer()`: no ASGI scope, header list, cycle, task or
`send` messages per viewer request, and one write per read (answers to pipelined requests
go out together once llhttp has checked every byte of the read, so a request refused for
its framing never gets an answer before its 400). The bytes are what uvicorn's ASGI path
sends for the same answer: its status lines, its default headers (`date`, and `connection:
close` while draining), `connection: close` when the request did not keep the connection
alive, the same 400 for a request llhttp refuses, the same keep-alive timer. The client
address is the `X-Forwarded-For` rule of `forwarded.py`, read only while limits or regions
need it and remembered per header value.

The first request it does not answer (another path, a body, `Expect`, an upgrade, the
access log on, the worker not started) hands the connection over to uvicorn: the transport
is switched to a `BoundedHttpToolsProtocol` fed the bytes of that request onward, which
serves the rest of the connection through the ASGI app (the admin API, console, docs and
metrics are FastAPI on the same port). With BALANCER_FAST_PATH off every connection starts
there. uvicorn's names used on that path are pinned and checked by
tests/unit/test_uvicorn_contract.py.

The bounds (both protocols): httptools (llhttp) puts no limit on a request's head (a 100 MB
header is buffered whole and parsed for seconds while the worker serves nobody else), and
uvicorn times out only idle keep-alive connections, so a client that sends half a request
and stalls keeps its connection (and, mid-body, a request task) forever. A head larger than
`max_head_bytes` is refused with 431 while it arrives, and a connection whose request
(head, or body the app is waiting for) has not arrived within `read_timeout` seconds is
closed: one sweep per worker goes over its connections twice per timeout.
"""

import asyncio
import functools
import logging
import re
import time
import weakref
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, ClassVar, cast

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.domain.router import Redirect
from app.presentation.edge.forwarded import TrustedProxies
from app.presentation.edge.redirect import REDIRECT_HEADERS, RedirectFront
from app.presentation.problem import PROBLEM_JSON, encode, problem

log = structlog.get_logger(__name__)

_HEAD, _BODY, _APP = "head", "body", "app"


def _header_lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(b"%s: %s\r\n" % header for header in headers)


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
# What follows a redirect's `location` value, up to the line that ends the head.
_REDIRECT_TAIL = b"\r\n" + _header_lines(REDIRECT_HEADERS)
_END, _CLOSE_END = b"\r\n", b"connection: close\r\n\r\n"
_CLOSE = (b"connection", b"close")
_FRAMING = (b"content-length", b"transfer-encoding")
# Headers that send a request to the app: a body to read, an expectation to meet.
_NOT_PLAIN = (b"content-length", b"transfer-encoding", b"expect")
_WATCHED_LENGTHS = frozenset(len(name) for name in (*_NOT_PLAIN, b"x-forwarded-for", b"connection"))
_INVALID = "Invalid HTTP request received."
_BAD_REQUEST_TAIL = (
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
) % (len(_INVALID), _INVALID.encode())
# llhttp skips line ends before a request line.
_LINE_ENDS = re.compile(rb"[\r\n]*")
# Client addresses by X-Forwarded-For value, for limits and regions: emptied when full, and
# long values not kept, so the memo stays small whatever is sent.
_FORWARDED_MEMO_SIZE = 8192
_FORWARDED_MEMO_KEY_BYTES = 256
# Redirect locations -> their header lines (`location` to the end of the redirect's own
# headers), checked printable once: the router hands out the same string for the same
# video and host, so a repeated redirect is looked up, not checked and encoded again.
LOCATION_MEMO_SIZE = 8192
_LOCATION_MEMO_KEY_LENGTH = 512


class _Worker:
    """What the protocols need of the worker: its redirect front (found once in uvicorn's
    wrappers of the app) and its proxy settings."""

    found: ClassVar[weakref.WeakKeyDictionary[Any, "_Worker"]] = weakref.WeakKeyDictionary()

    def __init__(self, config: Config) -> None:
        self.front: RedirectFront | None = None
        app = config.loaded_app
        while app is not None:
            if isinstance(app, RedirectFront):
                self.front = app
            app = getattr(app, "app", None)
        self.proxies = TrustedProxies(config.forwarded_allow_ips or "127.0.0.1")
        self.proxy_headers = config.proxy_headers
        self.access_log = logging.getLogger("uvicorn.access").hasHandlers()
        self.forwarded: dict[bytes, str] = {}
        self.locations: dict[str, bytes] = {}
        self.defaults: object = None
        self.default_lines = b""
        self.default_close = False

    @classmethod
    def of(cls, config: Config) -> "_Worker":
        worker = cls.found.get(config)
        if worker is None:
            worker = cls.found[config] = cls(config)
        return worker

    def trusts(self, peer: str) -> bool:
        """Whether `X-Forwarded-For` from `peer` names the client."""
        return self.proxy_headers and peer in self.proxies

    def default_head(self, defaults: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
        """uvicorn's default headers as lines, and whether they close the connection.
        The server replaces the list each second (a new `date`): rebuilt then only."""
        if defaults is not self.defaults:
            self.defaults = defaults
            self.default_lines = _header_lines(defaults)
            self.default_close = _CLOSE in defaults
        return self.default_lines, self.default_close

    def location_lines(self, location: str) -> bytes | None:
        """A redirect's header lines from `location` on (None if `location` is not
        printable: uvicorn refuses control characters in a header value), remembered in
        `locations`, which the protocol reads first."""
        if not location.isprintable():
            return None
        lines = b"location: " + location.encode() + _REDIRECT_TAIL
        if len(location) <= _LOCATION_MEMO_KEY_LENGTH:
            locations = self.locations
            if len(locations) >= LOCATION_MEMO_SIZE:
                locations.clear()
            locations[location] = lines
        return lines

    def forwarded_client(self, forwarded: bytes) -> str:
        """The client a trusted peer's `X-Forwarded-For` (its values joined by ", ") names
        ("" if none), remembered in `forwarded`, which the protocol reads first."""
        address = self.proxies.client(forwarded.decode("latin-1"))
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


class _Stop(Exception):
    """Raised from a parser callback: read no further in this read's bytes."""


class EdgeProtocol(asyncio.Protocol):
    """The connection's own protocol until its first request that is not a plain redirect
    (see the module)."""

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
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.max_head_bytes = max_head_bytes
        self.read_timeout = read_timeout
        self.worker = _Worker.of(config)
        self.access_log = self.worker.access_log
        self.front: RedirectFront | None = None  # the worker's, once it serves
        self.keep_alive_seconds = config.timeout_keep_alive
        self.parser = httptools.HttpRequestParser(self)
        # as uvicorn's: a request after one that closes the connection is read, not refused
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = cast("asyncio.Transport", None)
        self.peer = ""  # the connection's client address
        self.trusted_peer = False
        # The keep-alive timer: one per connection, not one per answer. It closes the
        # connection once `keep_alive_seconds` passed since the last answer (`idle_since`)
        # with nothing received; a read puts it off (None) until its answers are out.
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None
        # the request being read
        self.url = b""
        self.forwarded_for: bytes | None = None  # its X-Forwarded-For values
        self.plain = True  # no header that sends it to the app
        self.connection_header = False
        self.in_request = False
        # the connection
        self.heads = 0  # request heads parsed
        self.head_bytes = 0  # bytes of the head being read, before this read
        self.received = b""  # bytes from the first request not answered before this read
        self.answered = 0  # requests answered from the start of `received`
        self.answers: list[bytes] = []  # written once the read is parsed
        self.closing = False
        self.handing_over = False
        self.waiting_since = 0.0
        self.waiting_for: tuple[int, str] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.server_state.connections.add(cast("Any", self))
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple | list) and peer else ""
        self.trusted_peer = self.worker.trusts(self.peer)
        _Sweeper.ensure(self.loop, self.server_state.connections, self.read_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def pause_writing(self) -> None:
        self.transport.pause_reading()  # a client that does not read its answers is not read

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        size = self.head_bytes + len(data)
        # Refused before parsing: httptools would buffer it all. A read that ends the head
        # within the limit (a small request with its body, or pipelined ones) is fine.
        if size > self.max_head_bytes and (
            data.find(b"\r\n\r\n", 0, max(self.max_head_bytes - self.head_bytes, 0) + 4) == -1
        ):
            self._refuse_head()
            return
        heads = self.heads
        self.received = self.received + data if self.received else data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self.handing_over:
                self._hand_over()
                return
            if not self.closing:
                raise
        except httptools.HttpParserError:
            if not self.closing:
                log.warning("invalid_request", client=self.peer)
                defaults = _header_lines(self.server_state.default_headers)
                self.answers.append(STATUS_LINES[400] + defaults + _BAD_REQUEST_TAIL)
                self.closing = True
        answers = self.answers
        if answers:
            self.transport.write(answers[0] if len(answers) == 1 else b"".join(answers))
            answers.clear()
        if self.closing:
            self.transport.close()
            return
        if self.in_request:
            if self.answered:
                self.received = self._unanswered()
                self.answered = 0
            self.head_bytes = size if self.heads == heads else len(self.received)
            return
        self.received = b""
        self.answered = 0
        self.head_bytes = 0
        if self.heads != heads:  # the idle time runs from the last answer
            self.idle_since = now = self.loop.time()
            if self.idle_timer is None:
                self.idle_timer = self.loop.call_at(now + self.keep_alive_seconds, self._idle)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.in_request = True
        self.url = b""
        self.forwarded_for = None
        self.plain = True
        self.connection_header = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) not in _WATCHED_LENGTHS:  # Host, User-Agent, Accept...: not lowered
            return
        name = name.lower()
        if name == b"x-forwarded-for":
            forwarded = self.forwarded_for
            self.forwarded_for = value if forwarded is None else forwarded + b", " + value
        elif name in _NOT_PLAIN:
            self.plain = False
        elif name == b"connection":
            self.connection_header = True

    def on_headers_complete(self) -> None:
        """Answer a plain `GET /?query` (or `HEAD`) or hand the connection over (see the
        module). One method: this runs for every viewer request."""
        self.heads += 1
        if self.closing:
            raise _Stop  # an earlier answer in this read closes the connection
        url = self.url
        parser = self.parser
        method = parser.get_method()
        front = self.front or self._serving_front()
        if (
            front is None
            or not self.plain
            or url[:2] != b"/?"
            or method not in (b"GET", b"HEAD")
            # (not `b"#" in url`: bytes first try the operand as an int, raising and
            # clearing a TypeError each time: 2.5% of a worker's CPU under wrk)
            or url.find(b"#") != -1
            # an upgrade needs `Connection: upgrade` (CONNECT is not GET or HEAD)
            or (self.connection_header and parser.should_upgrade())
        ):
            self.handing_over = True
            raise _Stop
        address = ""
        if front.wants_client:
            address = self.peer
            forwarded = self.forwarded_for
            if forwarded is not None and self.trusted_peer:
                worker = self.worker
                address = (
                    worker.forwarded.get(forwarded) or worker.forwarded_client(forwarded) or address
                )
        result = front.answer("GET" if method == b"GET" else "HEAD", url[2:], address)
        keep_alive = parser.should_keep_alive()
        if keep_alive and self.connection_header and parser.get_http_version() == "1.0":
            keep_alive = False  # uvicorn's rule: HTTP/1.0 closes, `keep-alive` or not
        worker = self.worker
        defaults = self.server_state.default_headers
        if defaults is not worker.defaults:
            worker.default_head(defaults)
        closing = worker.default_close
        end = _END if keep_alive or closing else _CLOSE_END
        if isinstance(result, Redirect):
            location = result.location
            lines = worker.locations.get(location) or worker.location_lines(location)
            if lines is None:
                log.error("unprintable_location", location=location)
                self.answers.append(_INTERNAL_ERROR)
                self.closing = True
                return
            self.answers.append(
                b"".join((STATUS_LINES[result.status], worker.default_lines, lines, end))
            )
        else:
            body = b"" if method == b"HEAD" else result.body
            lines = _header_lines(result.headers)
            self.answers.append(
                b"".join((STATUS_LINES[result.status], worker.default_lines, lines, end, body))
            )
        # Its message is complete: a request answered here has no body (no framing
        # header), so llhttp ends it with its head. No `on_message_complete` callback: it
        # would cost a Python call per request for these two lines.
        self.in_request = False
        self.answered += 1
        self.server_state.total_requests += 1
        if not keep_alive or closing:
            self.closing = True

    def _serving_front(self) -> RedirectFront | None:
        """The worker's redirect front once it serves, unless the access log is on (uvicorn
        writes it): kept for the connection."""
        front = self.worker.front
        if front is None or not front.serving or self.access_log:
            return None
        self.front = front
        return front

    # the connection

    def shutdown(self) -> None:
        """The server stops: no request is half-answered here, so close."""
        self.transport.close()

    def waiting(self) -> tuple[int, str]:
        """What the connection waits for: always the head of request `heads + 1`."""
        return self.heads, _HEAD

    def _unanswered(self) -> bytes:
        """The bytes of `received` after the requests answered from it. An answered request
        has no body: it ends with the first empty line after its request line (llhttp
        refuses a line end without its CR)."""
        received = self.received
        start = 0
        for _ in range(self.answered):
            start = _LINE_ENDS.match(received, start).end()  # type: ignore[union-attr]
            start = received.index(b"\r\n\r\n", start) + 4
        return received[start:]

    def _hand_over(self) -> None:
        """Switch the connection to uvicorn's protocol, fed the bytes of the request that
        is not ours and everything after it."""
        answers = self.answers
        if answers:
            self.transport.write(b"".join(answers))
            answers.clear()
        data = self._unanswered()
        self.received = b""
        self.server_state.connections.discard(self)
        protocol = BoundedHttpToolsProtocol(
            self.config,
            self.server_state,
            self.app_state,
            self.loop,
            max_head_bytes=self.max_head_bytes,
            read_timeout=self.read_timeout,
        )
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(data)

    def _idle(self) -> None:
        self.idle_timer = None
        since = self.idle_since
        if since is None:
            return  # a request is being read: the read timeout bounds it, the answer re-arms
        due = since + self.keep_alive_seconds
        if self.loop.time() < due:
            self.idle_timer = self.loop.call_at(due, self._idle)
        elif not self.transport.is_closing():
            self.transport.close()

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        log.warning("request_headers_too_large", client=self.peer, limit=self.max_head_bytes)
        answers = self.answers
        answers.append(_head_too_large(self.max_head_bytes))
        self.transport.write(b"".join(answers))
        answers.clear()
        self.transport.close()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol plus `max_head_bytes` and `read_timeout` (see the module), a 400
    that waits for the requests before it, and a client that goes away counted, not
    logged as an error of the app."""

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
        self.worker = _Worker.of(config)
        self.peer = ""
        # Requests handed to the app and not answered yet (the one running and the pipelined
        # ones behind it), and a 400 held until they are answered.
        self.open_cycles: list[Any] = []
        self.held_400: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else ""
        _Sweeper.ensure(self.loop, self.connections, self.read_timeout)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            super().data_received(data)  # a body: RequestLimits bounds it
            return
        heads = self.heads
        size = self.head_bytes + len(data)
        # Refused before parsing (see EdgeProtocol.data_received).
        if size > self.max_head_bytes and (
            data.find(b"\r\n\r\n", 0, max(self.max_head_bytes - self.head_bytes, 0) + 4) == -1
        ):
            self._refuse_head()
            return
        super().data_received(data)
        self.head_bytes = size if self.heads == heads else 0  # 0: a head ended in this read

    def on_headers_complete(self) -> None:
        self.heads += 1
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None:
            self.open_cycles = [c for c in self.open_cycles if not c.response_complete]
            self.open_cycles.append(cycle)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request llhttp refused, written once the requests before it
        (pipelined, still with the app) are answered, as the edge answers them."""
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
            log.debug("client_gone", client=self.peer, unanswered=len(gone))
            front = self.worker.front
            if front is not None:
                front.client_gone()
        self.open_cycles = []
        super().connection_lost(exc)

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        log.warning("request_headers_too_large", client=self.peer, limit=self.max_head_bytes)
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
            if not isinstance(protocol, EdgeProtocol | BoundedHttpToolsProtocol):
                continue
            state = protocol.waiting()
            if state != protocol.waiting_for:
                protocol.waiting_for, protocol.waiting_since = state, now
            elif (
                state[1] != _APP
                and now - protocol.waiting_since >= self.timeout
                and not protocol.transport.is_closing()
            ):
                log.info("slow_client_closed", client=protocol.peer, waiting_for=state[1])
                protocol.transport.close()
        self.loop.call_later(self.timeout / 2, self.sweep)


def edge_protocol(
    *, max_head_bytes: int, read_timeout: float, fast_path: bool = True
) -> type[asyncio.Protocol]:
    """The `http` protocol for uvicorn: `EdgeProtocol`, or with `fast_path` off uvicorn's
    (bounded) for every request. A partial of a module-level class pickles into uvicorn's
    spawned workers; uvicorn only ever calls it, so it serves as the class."""
    protocol = EdgeProtocol if fast_path else BoundedHttpToolsProtocol
    factory = functools.partial(protocol, max_head_bytes=max_head_bytes, read_timeout=read_timeout)
    return cast("type[asyncio.Protocol]", factory)
