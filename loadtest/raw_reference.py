"""The raw-protocol redirect `make bench` measures the balancer against: what Python itself
reaches on this path.

A bare asyncio Protocol on uvloop + httptools answering from the parser's callbacks: no ASGI,
no uvicorn, no validation, no configuration, no shared sequence. It does the work the bare
ASGI reference (loadtest/reference_app.py) does, and nothing else: find `video`, rewrite the
URL onto the CDN, send every tenth request to the origin, and take the client from a trusted
peer's `X-Forwarded-For` (the rightmost untrusted address, uvicorn's rule).

`python -m loadtest.raw_reference --port 8001`
"""

import argparse
import asyncio
import time
from email.utils import formatdate

import httptools
import uvloop

_CDN = b"http://cdn.example.com/"
_TAIL = b"\r\ncache-control: no-store\r\ncontent-length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Redirects:
    """What the connections of one process share: the count, the trusted peers, the date."""

    def __init__(self, trusted: frozenset[str]) -> None:
        self.count = 0
        self.trusted = trusted
        self._second = 0
        self._head = b""

    def head(self) -> bytes:
        """The status line and `date` (rebuilt once a second, as servers do)."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            date = formatdate(now, usegmt=True).encode()
            self._head = b"HTTP/1.1 301 Moved Permanently\r\ndate: %s\r\nlocation: " % date
        return self._head

    def client(self, forwarded: bytes) -> str:
        for host in reversed(forwarded.decode("latin-1").split(",")):
            if host.strip() not in self.trusted:
                return host.strip()
        return forwarded.decode("latin-1").split(",")[0].strip()


class RawRedirect(asyncio.Protocol):
    def __init__(self, redirects: Redirects) -> None:
        self.redirects = redirects
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.trusted_peer = False
        self.peer = self.client = ""
        self.url = b""
        self.forwarded: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.peer = (transport.get_extra_info("peername") or ("",))[0]
        self.trusted_peer = self.peer in self.redirects.trusted

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_BAD)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.forwarded = b"", None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.trusted_peer and name.lower() == b"x-forwarded-for":
            self.forwarded = value if self.forwarded is None else self.forwarded + b", " + value

    def on_message_complete(self) -> None:
        redirects, transport = self.redirects, self.transport
        assert transport is not None
        forwarded = self.forwarded
        self.client = self.peer if forwarded is None else redirects.client(forwarded)
        video = self.url.partition(b"video=")[2]
        redirects.count += 1
        if redirects.count % 10:
            host, _, path = video.partition(b"://")[2].partition(b"/")
            location = b"%s%s/%s" % (_CDN, host.partition(b".")[0], path)
        else:
            location = video
        transport.write(redirects.head() + location + _TAIL)
        if not self.parser.should_keep_alive():
            transport.close()


async def serve(host: str, port: int, trusted: frozenset[str]) -> None:
    redirects = Redirects(trusted)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawRedirect(redirects), host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.raw_reference", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--forwarded-allow-ips", default="127.0.0.1", help="comma-separated trusted peers"
    )
    args = parser.parse_args(argv)
    trusted = frozenset(ip.strip() for ip in args.forwarded_allow_ips.split(","))
    uvloop.run(serve(args.host, args.port, trusted))


if __name__ == "__main__":
    main()
