"""A TCP proxy in front of a real server, so tests can take the server away and back."""

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class CuttableProxy:
    """Listens on 127.0.0.1; `cut()` drops every connection and refuses new ones.

    A cut proxy keeps its port and closes each new connection at once: were the port freed,
    another process could take it (its own proxy, or an outgoing connection's ephemeral
    port) and a client cut off here would quietly reach something else. `close()` frees it.
    """

    def __init__(self, *, unix_path: str | None = None, host: str = "", port: int = 0) -> None:
        self._unix_path = unix_path
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = True
        self.listen_port = 0

    @classmethod
    def for_url(cls, url: str) -> "CuttableProxy":
        """A proxy to the PostgreSQL or Redis server behind `url` (TCP or Unix socket)."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return cls(unix_path=parts.path)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        if socket_dir.startswith("/"):
            return cls(unix_path=f"{socket_dir}/.s.PGSQL.{parts.port or 5432}")
        default_port = 6379 if parts.scheme.startswith("redis") else 5432
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or default_port)

    def proxied(self, url: str) -> str:
        """`url` with its server replaced by this proxy."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"redis://127.0.0.1:{self.listen_port}/0"
        user = f"{parts.username}@" if parts.username else ""
        query = "&".join(
            f"{key}={value[0]}" for key, value in parse_qs(parts.query).items() if key != "host"
        )
        netloc = f"{user}127.0.0.1:{self.listen_port}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    async def start(self) -> None:
        self._open = True
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
            self.listen_port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self._open = False
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.close()
            return
        try:
            if self._unix_path:
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(
                    self._unix_path
                )
            else:
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    self._host, self._port
                )
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
        self._writers.discard(writer)
