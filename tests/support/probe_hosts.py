"""Stand-in CDN hosts for the prober's tests: small asyncio servers on loopback ports that
answer each connection as a test says (garbage, a drip, nothing at all)."""

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

TIMEOUT = 0.5
# What a probe may take beyond its timeout on a loaded 2-core machine (closing, scheduling:
# 0.55 s seen with two CPU hogs running). A deadline per read would take 3.4 s for the
# answer that drips a byte every 0.2 s.
SLACK = 1.0


def says(*chunks: bytes, every: float = 0.0, listen: bool = True) -> Answer:
    """An answer: read the request (unless `listen` is off), send `chunks` (`every` seconds
    apart), hang up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if listen:
            await reader.readuntil(b"\r\n\r\n")
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(every)

    return answer


async def hangs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, and never answer."""
    await asyncio.sleep(3600)


@contextlib.asynccontextmanager
async def fake_host(answer: Answer, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A CDN host on a loopback port that answers every connection with `answer`; its port."""
    handlers: set[asyncio.Task[None]] = set()
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await answer(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the prober hung up first, as it should
        except asyncio.CancelledError:
            pass  # the host stops; a cancelled handler upsets Python 3.11's stream callback
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
