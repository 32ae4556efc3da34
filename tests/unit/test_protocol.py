import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from app.presentation.http.protocol import BoundedHttpToolsProtocol


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)


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
