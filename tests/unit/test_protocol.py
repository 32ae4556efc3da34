import asyncio
import re
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.domain.config import BalancerConfig
from app.domain.ratelimit import ClientLimiter, RateLimit
from app.domain.router import Redirect
from app.domain.split import Split
from app.presentation.edge.protocol import BoundedHttpToolsProtocol
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


def connect() -> tuple[BoundedHttpToolsProtocol, Transport]:
    config = Config(_redirect, http="httptools", lifespan="off", log_config=None)
    config.load()
    loop = asyncio.get_running_loop()
    protocol = BoundedHttpToolsProtocol(
        config, ServerState(), {}, loop, max_head_bytes=1024, read_timeout=10.0
    )
    transport = Transport()
    protocol.connection_made(transport)
    return protocol, transport


def test_a_malformed_request_is_answered_400_and_closed() -> None:
    async def drive() -> Transport:
        protocol, transport = connect()
        protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
        return transport

    transport = asyncio.run(drive())
    assert transport.written.startswith(b"HTTP/1.1 400 ")
    assert transport.closed


def test_a_request_on_a_kept_alive_connection_stops_its_idle_timer() -> None:
    async def drive() -> tuple[BoundedHttpToolsProtocol, Transport, bool]:
        protocol, transport = connect()
        protocol.data_received(b"GET /?video=x HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0)
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


def test_a_head_over_the_limit_is_refused_with_431() -> None:
    async def drive() -> Transport:
        protocol, transport = connect()
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
    app: Any, state: ServerState | None = None, peer: str = "127.0.0.1"
) -> tuple[BoundedHttpToolsProtocol, Transport]:
    config = Config(app, http="httptools", lifespan="off", log_config=None)
    config.load()  # wraps the app in uvicorn's proxy-headers middleware (127.0.0.1 trusted)
    state = state or ServerState()
    protocol = BoundedHttpToolsProtocol(
        config, state, {}, asyncio.get_running_loop(), max_head_bytes=4096, read_timeout=10.0
    )
    protocol.access_log = False  # as served (pytest's log capture would turn it on)
    transport = Transport(peer)
    protocol.connection_made(transport)
    return protocol, transport


def through_asgi(front: RedirectFront) -> Any:
    """The same front as a plain ASGI app, which the protocol cannot answer for."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await front(scope, receive, send)

    return app


def get(query: str, method: str = "GET", version: str = "1.1", headers: str = "") -> bytes:
    return f"{method} /?{query} HTTP/{version}\r\nHost: a\r\n{headers}\r\n".encode()


@pytest.mark.parametrize(
    ("head", "defaults"),
    [
        (get(f"video={VIDEO}"), [DATE]),
        (get(f"video={VIDEO}", "HEAD"), [DATE]),
        (get(f"video={VIDEO}", version="1.0"), [DATE]),
        (get(f"video={VIDEO}", headers="Connection: close\r\n"), [DATE]),
        (get(f"video={VIDEO}"), [DATE, (b"connection", b"close")]),  # draining
        (get("video=http://elsewhere.example/v.m3u8"), [DATE]),  # a 400 problem
        (get("video=http://elsewhere.example/v.m3u8", "HEAD"), [DATE]),
        (get(f"video={VIDEO}&video=%ZZ"), [DATE]),
    ],
    ids=["get", "head", "http-1.0", "close", "draining", "refused", "refused-head", "extra"],
)
async def test_the_parser_answers_a_redirect_with_the_bytes_the_asgi_path_sends(
    head: bytes, defaults: list[tuple[bytes, bytes]]
) -> None:
    answers = []
    for app in (bound_front(), through_asgi(bound_front())):
        state = ServerState()
        state.default_headers = defaults
        protocol, transport = serve(app, state)
        for _ in range(2):  # the second request: the split's other target
            if not transport.closed:  # (a closed connection reads nothing more)
                protocol.data_received(head)
                await asyncio.sleep(0.001)
        answers.append((transport.written, transport.closed, state.total_requests))
        if protocol.timeout_keep_alive_task is not None:
            protocol.timeout_keep_alive_task.cancel()
    assert answers[0] == answers[1]
    assert answers[0][0].startswith(b"HTTP/1.1 ")


async def test_a_redirect_takes_no_task_and_is_written_before_the_read_returns() -> None:
    protocol, transport = serve(bound_front())
    protocol.data_received(get(f"video={VIDEO}") * 3)  # three pipelined in one read
    assert transport.written.count(b"HTTP/1.1 301 ") == 3
    assert not protocol.tasks
    assert protocol.timeout_keep_alive_task is not None  # armed once, for the last answer
    protocol.timeout_keep_alive_task.cancel()


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
    protocol.timeout_keep_alive = 0.2  # type: ignore[assignment]  # seconds, int in uvicorn
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
    if protocol.timeout_keep_alive_task is not None:
        protocol.timeout_keep_alive_task.cancel()


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
    assert protocol.timeout_keep_alive_task is not None
    protocol.timeout_keep_alive_task.cancel()


async def test_a_request_without_forwarded_for_is_its_peer_not_the_last_forwarded_client() -> None:
    limiter = ClientLimiter(lambda: 1000.0)
    limiter.set_default(RateLimit(1, 0.001))
    protocol, transport = serve(bound_front(limiter))
    protocol.data_received(get(f"video={VIDEO}", headers="X-Forwarded-For: 203.0.113.7\r\n"))
    protocol.data_received(get(f"video={VIDEO}"))  # the proxy itself: a client of its own
    protocol.data_received(get(f"video={VIDEO}", headers="X-Forwarded-For: 203.0.113.7\r\n"))
    answered = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", transport.written)]
    assert answered == [301, 301, 429]
    assert protocol.timeout_keep_alive_task is not None
    protocol.timeout_keep_alive_task.cancel()
