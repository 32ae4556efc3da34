import asyncio
import logging
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.application.metrics import Tally
from app.domain.config import BalancerConfig
from app.domain.errors import NoHealthyTarget
from app.domain.ratelimit import ClientLimiter, RateLimit
from app.domain.router import Redirect
from app.domain.split import Split
from app.presentation.edge.protocol import BoundedHttpToolsProtocol, EdgeProtocol
from app.presentation.edge.redirect import RedirectFront
from tests.support.fakes import redirect_for

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
DATE = (b"date", b"Mon, 23 Nov 2026 16:00:00 GMT")


class Transport(asyncio.Transport):
    def __init__(self, peer: str = "127.0.0.1") -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closed = False
        self.protocol: Any = None  # the protocol it reads for

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _redirect(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"location", b"http://cdn.example.com/"), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 301, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


PROTOCOLS = [EdgeProtocol, BoundedHttpToolsProtocol]


def connect(kind: Any = EdgeProtocol) -> tuple[Any, Transport]:
    """A connection to an app without a redirect front: the edge hands every request over."""
    config = Config(_redirect, http="httptools", lifespan="off", log_config=None)
    config.load()
    loop = asyncio.get_running_loop()
    protocol = kind(config, ServerState(), {}, loop, max_head_bytes=1024, read_timeout=10.0)
    transport = Transport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol, transport


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_a_malformed_request_is_answered_400_and_closed(kind: Any) -> None:
    async def drive() -> Transport:
        protocol, transport = connect(kind)
        protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
        return transport

    transport = asyncio.run(drive())
    assert transport.written.startswith(b"HTTP/1.1 400 ")
    assert transport.closed


def test_a_request_on_a_kept_alive_connection_stops_its_idle_timer() -> None:
    async def drive() -> tuple[Any, Transport, bool]:
        _, transport = connect()
        transport.protocol.data_received(b"GET /?video=x HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0)
        protocol = transport.protocol  # uvicorn's, handed the connection
        idle = protocol.timeout_keep_alive_task
        assert idle is not None
        protocol.data_received(b"GET /?video=y HTTP/1.1\r\nHost: a\r\n\r\n")
        cancelled = idle.cancelled()
        await asyncio.sleep(0)
        if protocol.timeout_keep_alive_task is not None:
            protocol.timeout_keep_alive_task.cancel()
        return protocol, transport, cancelled

    _, transport, cancelled = asyncio.run(drive())
    assert cancelled
    assert transport.written.count(b"HTTP/1.1 301 ") == 2
    assert not transport.closed


@pytest.mark.parametrize("kind", PROTOCOLS)
def test_a_head_over_the_limit_is_refused_with_431(kind: Any) -> None:
    async def drive() -> Transport:
        protocol, transport = connect(kind)
        protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000)
        return transport

    transport = asyncio.run(drive())
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert transport.closed


# --- the redirect path without ASGI ------------------------------------------------------


async def _slow_app(scope: Scope, receive: Receive, send: Send) -> None:
    """What the front passes on: answers 200 after a while."""
    await asyncio.sleep(0.01)
    headers = [(b"content-length", b"4")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"slow"})


def bound_front(limiter: ClientLimiter | None = None) -> RedirectFront:
    front = RedirectFront(_slow_app)
    config = BalancerConfig(cdn_host="cdn.example.com", split=Split(1, 1))
    front.bind(redirect_for(config)[0], limiter=limiter)
    return front


def serve(
    app: Any,
    state: ServerState | None = None,
    peer: str = "127.0.0.1",
    kind: Any = EdgeProtocol,
    transport: Transport | None = None,
) -> tuple[Any, Transport]:
    config = Config(app, http="httptools", lifespan="off", log_config=None)
    config.load()  # wraps the app in uvicorn's proxy-headers middleware (127.0.0.1 trusted)
    state = state or ServerState()
    protocol = kind(
        config, state, {}, asyncio.get_running_loop(), max_head_bytes=4096, read_timeout=10.0
    )
    protocol.access_log = False  # as served (pytest's log capture would turn it on)
    transport = transport or Transport(peer)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    return protocol, transport


def stop_timers(transport: Transport) -> None:
    protocol = transport.protocol
    for name in ("idle_timer", "timeout_keep_alive_task"):
        timer = getattr(protocol, name, None)
        if timer is not None:
            timer.cancel()


def get(query: str, method: str = "GET", version: str = "1.1", headers: str = "") -> bytes:
    return f"{method} /?{query} HTTP/{version}\r\nHost: a\r\n{headers}\r\n".encode()


@pytest.mark.parametrize(
    ("headers", "answered_here"),
    [
        ("Connection: Upgrade\r\nUpgrade: websocket\r\n", False),
        ("Connection: keep-alive, upgrade\r\nUpgrade: h2c\r\n", False),
        ("Upgrade: websocket\r\n", True),  # no `Connection: upgrade`: not an upgrade
        ("Connection: keep-alive\r\n", True),
    ],
)
async def test_an_upgrade_is_handed_over_and_an_upgrade_header_alone_is_not_one(
    headers: str, answered_here: bool
) -> None:
    protocol, transport = serve(bound_front())
    protocol.data_received(get(f"video={VIDEO}", headers=headers))
    assert (transport.protocol is protocol) is answered_here
    stop_timers(transport)


async def test_a_redirect_takes_no_task_and_is_written_before_the_read_returns() -> None:
    protocol, transport = serve(bound_front())
    protocol.data_received(get(f"video={VIDEO}") * 3)  # three pipelined in one read
    assert transport.written.count(b"HTTP/1.1 301 ") == 3
    assert not protocol.server_state.tasks
    assert protocol.idle_timer is not None  # armed once, for the last answer
    protocol.idle_timer.cancel()


async def test_nothing_is_answered_after_an_answer_that_closes_the_connection() -> None:
    draining = ServerState()
    draining.default_headers = [DATE, (b"connection", b"close")]
    protocol, transport = serve(bound_front(), draining)
    protocol.data_received(get(f"video={VIDEO}") * 2)  # pipelined: the second is not read
    assert transport.written.count(b"HTTP/1.1 ") == 1
    assert transport.closed
    assert protocol.server_state.total_requests == 1


async def test_a_location_with_a_control_character_is_a_500_not_a_header() -> None:
    front = RedirectFront(_slow_app)
    front.bind(lambda video, client: Redirect("cdn", "http://cdn/\r\nx: y", 301, "s1", 1))  # type: ignore[arg-type]
    protocol, transport = serve(front)
    protocol.data_received(get(f"video={VIDEO}"))
    assert transport.written.startswith(b"HTTP/1.1 500 ")
    assert b"x: y" not in transport.written
    assert transport.closed


async def test_the_idle_timer_runs_from_the_last_answer_only() -> None:
    protocol, transport = serve(bound_front())
    protocol.keep_alive_seconds = 0.2
    protocol.data_received(get(f"video={VIDEO}") * 3)
    await asyncio.sleep(0.1)
    protocol.data_received(get(f"video={VIDEO}"))
    await asyncio.sleep(0.15)  # past the timers of the first three answers (at 0.2 s)
    assert not transport.closed
    await asyncio.sleep(0.1)
    assert transport.closed  # idle for the timeout after the fourth (at 0.3 s)


async def test_a_redirect_pipelined_behind_a_request_of_the_app_is_answered_after_it() -> None:
    protocol, transport = serve(bound_front())
    protocol.data_received(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n" + get(f"video={VIDEO}"))
    assert transport.written == b""
    for _ in range(50):
        await asyncio.sleep(0.005)
        if transport.written.count(b"HTTP/1.1 ") == 2:
            break
    assert transport.written.index(b"HTTP/1.1 200 ") < transport.written.index(b"HTTP/1.1 301 ")
    stop_timers(transport)


async def test_redirects_before_a_request_of_the_app_are_answered_then_it_is_handed_over() -> None:
    protocol, transport = serve(bound_front())
    protocol.data_received(get(f"video={VIDEO}") * 2 + b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    assert transport.written.count(b"HTTP/1.1 301 ") == 2
    assert isinstance(transport.protocol, BoundedHttpToolsProtocol)
    assert protocol not in protocol.server_state.connections
    assert transport.protocol in protocol.server_state.connections
    transport.protocol.data_received(get(f"video={VIDEO}"))  # pipelined behind it
    for _ in range(50):
        await asyncio.sleep(0.005)
        if transport.written.count(b"HTTP/1.1 ") == 4:
            break
    assert [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written)] == [
        301,
        301,
        200,
        301,
    ]
    stop_timers(transport)


async def test_a_request_split_over_reads_is_handed_over_whole() -> None:
    _, transport = serve(bound_front())
    request = get(f"video={VIDEO}") + b"\r\nGET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
    for byte in range(len(request)):
        transport.protocol.data_received(request[byte : byte + 1])
    for _ in range(50):
        await asyncio.sleep(0.005)
        if transport.written.count(b"HTTP/1.1 ") == 2:
            break
    assert [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written)] == [
        301,
        200,
    ]
    stop_timers(transport)


@pytest.mark.parametrize(
    ("peer", "statuses"),
    [
        ("127.0.0.1", [301, 301, 429, 301]),  # trusted: each forwarded address is a client
        ("198.51.100.1", [301, 429, 429, 429]),  # not trusted: the header is ignored
    ],
)
async def test_limits_take_the_client_from_forwarded_for_only_from_a_trusted_peer(
    peer: str, statuses: list[int]
) -> None:
    limiter = ClientLimiter(lambda: 1000.0)
    limiter.set_default(RateLimit(1, 0.001))
    protocol, transport = serve(bound_front(limiter), peer=peer)
    forwarded = [
        "X-Forwarded-For: 203.0.113.7\r\n",
        "X-Forwarded-For: 203.0.113.8\r\n",
        "X-Forwarded-For: 203.0.113.7\r\n",
        # two headers are one list, as uvicorn reads them: the rightmost untrusted address
        "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n",
    ]
    for headers in forwarded:
        protocol.data_received(get(f"video={VIDEO}", headers=headers))
    answered = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written)]
    assert answered == statuses
    assert protocol.idle_timer is not None
    protocol.idle_timer.cancel()


async def test_a_request_without_forwarded_for_is_its_peer_not_the_last_forwarded_client() -> None:
    limiter = ClientLimiter(lambda: 1000.0)
    limiter.set_default(RateLimit(1, 0.001))
    protocol, transport = serve(bound_front(limiter))
    protocol.data_received(get(f"video={VIDEO}", headers="X-Forwarded-For: 203.0.113.7\r\n"))
    protocol.data_received(get(f"video={VIDEO}"))  # the proxy itself: a client of its own
    protocol.data_received(get(f"video={VIDEO}", headers="X-Forwarded-For: 203.0.113.7\r\n"))
    answered = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written)]
    assert answered == [301, 301, 429]
    assert protocol.idle_timer is not None
    protocol.idle_timer.cancel()


# --- both paths, every request: the same bytes ------------------------------------------


class StrictTransport(Transport):
    """A transport that refuses writes once closed, as uvloop's does ("handler is closed")."""

    def __init__(self, peer: str = "127.0.0.1") -> None:
        super().__init__(peer)
        self.late_writes = 0

    def write(self, data: Any) -> None:
        if self.closed:
            self.late_writes += 1
            raise RuntimeError(
                "unable to perform operation on <TCPTransport>; the handler is closed"
            )
        super().write(data)


async def _quick_app(scope: Scope, receive: Receive, send: Send) -> None:
    """What the front passes on: reads the body, answers 200 with what it read."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _unavailable(video: str, client: str) -> Redirect:
    raise NoHealthyTarget("no-healthy-cdn", "No CDN host is up.", 5)


def property_front(answers: str) -> RedirectFront:
    front = RedirectFront(_quick_app)
    if answers == "503":
        front.bind(_unavailable)  # type: ignore[arg-type]
        return front
    limiter = None
    if answers == "429":
        limiter = ClientLimiter(lambda: 1000.0)
        limiter.set_default(RateLimit(1, 0.001))  # one request, then 429
    config = BalancerConfig(cdn_host="cdn.example.com", split=Split(1, 1))
    front.bind(redirect_for(config)[0], limiter=limiter)
    return front


_BODIES = {
    "": b"",
    "Content-Length: 0\r\n": b"",
    "Content-Length: 5\r\n": b"hello",
    "Content-Length: 5\r\nContent-Length: 5\r\n": b"hello",
    "Content-Length: 5\r\nContent-Length: 4\r\n": b"hello",
    "Content-Length: -1\r\n": b"",
    "Transfer-Encoding: chunked\r\n": b"5\r\nhello\r\n0\r\n\r\n",
    "Transfer-Encoding: identity\r\n": b"",
    "Transfer-Encoding: xchunked\r\n": b"",
    "Transfer-Encoding: gzip\r\n": b"",
    "Transfer-Encoding: gzip, chunked\r\n": b"0\r\n\r\n",
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n": b"0\r\n\r\n",
    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n": b"0\r\n\r\n",
    "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n": b"0\r\n\r\n",
}


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "get"]))
    version = draw(st.sampled_from(["1.1", "1.0", "2.0", "1.x"]))
    target = draw(
        st.sampled_from(
            [
                f"/?video={VIDEO}",
                "/?video=http://elsewhere.example/v.m3u8",
                f"/?video={VIDEO}#fragment",
                f"/?video={VIDEO}&video=%ZZ",
                "/?",
                "/other",
            ]
        )
    )
    framing = draw(st.sampled_from(sorted(_BODIES)))
    connection = draw(st.sampled_from(["", "Connection: close\r\n", "Connection: keep-alive\r\n"]))
    expect = draw(st.sampled_from(["", "Expect: 100-continue\r\n"]))
    head = f"{method} {target} HTTP/{version}\r\nHost: a\r\n{connection}{expect}{framing}\r\n"
    line_end = draw(st.sampled_from(["\r\n", "\n", "\r"]))  # llhttp wants CRLF
    if line_end != "\r\n" and draw(st.booleans()):
        head = head.replace("\r\n", line_end, draw(st.integers(1, 4)))
    leading = draw(st.sampled_from(["", "\r\n", "\n\r\n"]))  # skipped before a request
    return (leading + head).encode() + _BODIES[framing]


async def answer_both(reads: list[bytes], answers: str, defaults: list[Any]) -> list[Any]:
    outcomes = []
    for kind in (EdgeProtocol, BoundedHttpToolsProtocol):
        state = ServerState()
        state.default_headers = defaults
        transport = StrictTransport()
        serve(property_front(answers), state, kind=kind, transport=transport)
        for data in reads:
            if not transport.closed:
                transport.protocol.data_received(data)
            for _ in range(20):  # until the app has answered what it could
                await asyncio.sleep(0)
        stop_timers(transport)
        outcomes.append((transport.written, transport.closed, transport.late_writes))
    return outcomes


@given(
    sequence=st.lists(requests(), min_size=1, max_size=3),
    reads=st.sampled_from(["one", "each"]),
    answers=st.sampled_from(["redirect", "429", "503"]),
    draining=st.booleans(),
)
@example(  # a valid request, then one llhttp refuses once its head is read
    sequence=[
        get(f"video={VIDEO}"),
        get(f"video={VIDEO}", headers="Transfer-Encoding: identity\r\n"),
    ],
    reads="one",
    answers="redirect",
    draining=False,
)
def test_both_paths_answer_the_same_bytes_to_every_request_and_pipelined_sequence(
    sequence: list[bytes], reads: str, answers: str, draining: bool
) -> None:
    defaults = [DATE, (b"connection", b"close")] if draining else [DATE]
    chunks = [b"".join(sequence)] if reads == "one" else sequence
    fast, app = asyncio.run(answer_both(chunks, answers, defaults))
    assert fast == app
    assert fast[2] == 0  # nothing written after the connection closed


@pytest.mark.parametrize(
    "framing",
    [
        "Transfer-Encoding: identity",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: gzip",
        "Content-Length: 1\r\nTransfer-Encoding: chunked",
        "Content-Length: 1\r\nContent-Length: 2",
    ],
)
async def test_nothing_is_answered_to_a_request_whose_framing_llhttp_refuses(framing: str) -> None:
    protocol, transport = serve(bound_front())
    protocol.data_received(get(f"video={VIDEO}", headers=f"{framing}\r\n"))
    assert transport.written.startswith(b"HTTP/1.1 400 ")
    assert transport.written.count(b"HTTP/1.1 ") == 1


async def test_a_client_gone_with_pipelined_requests_unanswered_is_counted_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tally = Tally()
    front = RedirectFront(_slow_app)
    config = BalancerConfig(cdn_host="cdn.example.com", split=Split(1, 1))
    front.bind(redirect_for(config)[0], tally=tally)
    transport = StrictTransport()
    protocol, _ = serve(front, transport=transport)
    protocol.data_received(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
    await asyncio.sleep(0)
    transport.closed = True
    transport.protocol.connection_lost(ConnectionResetError())
    await asyncio.sleep(0.05)
    assert transport.late_writes == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tally.clients_gone == 1
