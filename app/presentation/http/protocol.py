"""uvicorn's httptools protocol with the two bounds it lacks: header size and slow clients.

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
from typing import Any, ClassVar, cast

import httptools
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.presentation.http.problem import PROBLEM_JSON, encode, problem

log = structlog.get_logger(__name__)

_HEAD, _BODY, _APP = "head", "body", "app"


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
        self.waiting_since = 0.0
        self.waiting_for: tuple[object, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _Sweeper.ensure(self.loop, self.connections, self.read_timeout)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            HttpToolsProtocol.data_received(self, data)  # a body: RequestLimits bounds it
            return
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
        self.head_bytes = size if self.cycle is cycle else 0  # 0: a head ended in this read

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        log.warning("request_headers_too_large", client=self.client, limit=self.max_head_bytes)
        if self.cycle is None or self.cycle.response_complete:
            # (behind a pipelined request still being answered it would answer that one)
            self.transport.write(_head_too_large(self.max_head_bytes))
        self.transport.close()

    def waiting(self) -> tuple[object, str]:
        """What the connection waits for: a request's head, its body, or the app."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return cycle, _HEAD
        return cycle, _BODY if cycle.more_body else _APP


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
