"""JSON of the largest configuration (1.6 MB) read and written in pieces, off the event loop.

`json.loads` and `to_json` hold the interpreter lock for the whole document: 8 ms for the
largest one on an idle host, several times that on a loaded one, during which no worker
thread hands it back to the event loop. In pieces (one server rule, one region, one down
server), no call holds it longer than the largest piece takes, a fraction of a millisecond.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from dishka.integrations.fastapi import DishkaRoute
from fastapi import Request, Response
from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from app.application.offload import off_loop
from app.domain.pacing import pace, paced

# What goes out in one write: a write of the largest configuration in one piece (1.6 MB)
# held a worker's loop for 50 to 70 ms on a loaded host.
PIECE_BYTES = 256 * 1024
_DECODER = json.JSONDecoder()
T = TypeVar("T")
_SPACE = re.compile(r"[ \t\n\r]*")


def loads_in_pieces(text: str, depth: int = 2) -> Any:
    """`json.loads(text)`, the entries of objects and arrays down to `depth` levels decoded
    one at a time; the same errors, at the same positions."""
    value, end = _value(text, _skip(text, 0), depth)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def dumps_in_pieces(value: Any, depth: int = 2) -> bytes:
    """`to_json(value)`, the same bytes, written entry by entry down to `depth` levels."""
    if depth and isinstance(value, dict):
        entries = (
            to_json(key) + b":" + dumps_in_pieces(item, depth - 1)
            for key, item in paced(value.items())
        )
        return b"{" + b",".join(entries) + b"}"
    if depth and isinstance(value, list):
        return b"[" + b",".join(dumps_in_pieces(item, depth - 1) for item in paced(value)) + b"]"
    return to_json(value)


def _skip(text: str, index: int) -> int:
    return _SPACE.match(text, index).end()  # type: ignore[union-attr] # `*` always matches


def _value(text: str, index: int, depth: int) -> tuple[Any, int]:
    if depth and text.startswith("{", index):
        return _object(text, _skip(text, index + 1), depth - 1)
    if depth and text.startswith("[", index):
        return _array(text, _skip(text, index + 1), depth - 1)
    value, end = _DECODER.raw_decode(text, index)
    return value, end


def _object(text: str, index: int, depth: int) -> tuple[dict[str, Any], int]:
    pairs, end = _entries(text, index, depth, "}", _pair)
    return dict(pairs), end


def _array(text: str, index: int, depth: int) -> tuple[list[Any], int]:
    return _entries(text, index, depth, "]", _value)


def _entries(
    text: str,
    index: int,
    depth: int,
    close: str,
    entry: Callable[[str, int, int], tuple[T, int]],
) -> tuple[list[T], int]:
    """The comma-separated entries up to `close`, each read by `entry`, a step each."""
    found: list[T] = []
    if text.startswith(close, index):
        return found, index + 1
    while True:
        pace()
        value, index = entry(text, index, depth)
        found.append(value)
        index = _skip(text, index)
        if text.startswith(close, index):
            return found, index + 1
        if not text.startswith(",", index):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, index)
        index = _skip(text, index + 1)


def _pair(text: str, index: int, depth: int) -> tuple[tuple[str, Any], int]:
    if not text.startswith('"', index):
        raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
    key, index = _DECODER.raw_decode(text, index)
    index = _skip(text, index)
    if not text.startswith(":", index):
        raise json.JSONDecodeError("Expecting ':' delimiter", text, index)
    value, index = _value(text, _skip(text, index + 1), depth)
    return (key, value), index


class _PiecewiseRequest(Request):
    async def json(self) -> Any:
        body = await self.body()
        return await off_loop(
            loads_in_pieces, body.decode(json.detect_encoding(body), "surrogatepass")
        )


class PiecewiseJsonRoute(DishkaRoute):
    """A route whose JSON body is decoded in pieces, off the event loop (FastAPI's way to
    read a body differently: a route class that hands the endpoint another Request)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def piecewise(request: Request) -> Response:
            return await handle(_PiecewiseRequest(request.scope, request.receive))

        return piecewise


async def pieces(body: bytes | memoryview) -> AsyncIterator[memoryview]:
    """`body` in pieces of PIECE_BYTES, a turn of the event loop before each but the first."""
    view = memoryview(body)
    for start in range(0, len(view), PIECE_BYTES):
        if start:
            await asyncio.sleep(0)
        yield view[start : start + PIECE_BYTES]


class PiecewiseResponse(Response):
    """A response sent in pieces (`pieces`), with its Content-Length as any other; or, made
    with `parts` instead of a body, the parts in pieces as they come, without one."""

    def __init__(
        self,
        body: bytes = b"",
        *,
        parts: AsyncIterator[bytes | memoryview] | None = None,
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self._parts = parts
        if parts is not None:  # a length unknown until the end: chunked
            self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Not StreamingResponse: its task group (anyio) is one more thing to run per answer,
        # and its first use in a worker imported anyio's backend: 100 ms of the event loop.
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for part in self._parts or _one(self.body):
            async for piece in pieces(part):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _one(body: bytes | memoryview) -> AsyncIterator[bytes | memoryview]:
    yield body
