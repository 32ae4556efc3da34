import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from app.application.ports import ProbeAnswer
from app.domain.load import MAX_REPORT_BYTES, ORCA_HEADER, LoadReport, read_report
from app.domain.syntax import is_link_local

_USER_AGENT = "video-balancer-health-check/1"
# The most of an answer ever read: its status line, line end included. Nothing after it is.
MAX_STATUS_LINE = 1024
# RFC 9112 `HTTP-version SP 3DIGIT SP [reason]`, read leniently where clients are lenient:
# the reason (which clients ignore) and the space before it may be missing, the line may
# end in a bare LF. Strict where it matters: HTTP/1.0 or 1.1, three ASCII digits.
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r?\n")
_EXCERPT = 40  # bytes of an answer that is not a status line shown in the error
# With load reports on, the most of the header section read after the status line; the
# body's first line is read too (MAX_REPORT_BYTES at most). Nothing else is.
MAX_HEADER_BYTES = 8192
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,8})(?:;[^\r\n]*)?\r?\n")

Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, each once, in the resolver's order."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class HttpProbe:
    """A minimal HTTP/1.1 health check: one request on a fresh connection, the status line
    read (at most MAX_STATUS_LINE bytes), the connection closed. With load reports on, the
    header section (MAX_HEADER_BYTES at most) and the body's first line (MAX_REPORT_BYTES
    at most) of a 2xx/3xx answer too. Nothing else of the answer is needed, so no client
    library.

    Whatever the host sends or does, the answer is None (up) or what went wrong, never an
    exception. The name is resolved first and the connection made to the address found:
    a host that resolves to a link-local address is refused without connecting. Every
    step runs under one deadline: a host that accepts and never answers (or sends a byte a
    second) costs this coroutine `timeout` seconds and nothing else.
    """

    def __init__(self) -> None:
        self._tls = ssl.create_default_context()
        self.resolve: Resolve = resolve

    async def __call__(self, url: str, *, method: str, timeout: float) -> str | None:
        """None when `url` answered 2xx or 3xx within `timeout`, else what went wrong."""
        return (await self.answer(url, method=method, timeout=timeout, load="off")).error

    async def answer(  # noqa: PLR0911
        self, url: str, *, method: str, timeout: float, load: str
    ) -> ProbeAnswer:
        """The verdict, and with `load` on the answer's load report. A report that is late,
        cut or unreadable is that report's error, never the host's: the verdict stands."""
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if https else 80)
        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        request = (
            f"{method} {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"User-Agent: {_USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode()
        stage = "resolve"
        line = bytearray()  # of the status line, what came so far
        writer: asyncio.StreamWriter | None = None
        report: LoadReport | None = None
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._addresses(host, port)
                stage = "connect"
                reader, writer = await self._connect(addresses, port, host if https else None)
                stage = "answer"
                writer.write(request)
                await writer.drain()
                status_line = await _read_status_line(reader, line)
                verdict = _verdict(status_line)
                if load != "off" and verdict is None:
                    stage = "report"
                    report = await _read_load_report(
                        reader, bytes(line[len(status_line) :]), load, body=method != "HEAD"
                    )
        except _Failed as failed:
            return ProbeAnswer(str(failed))
        except TimeoutError:
            if stage == "report":
                late = LoadReport(error=f"report not complete within {timeout:g} s")
                return ProbeAnswer(None, late)
            return ProbeAnswer(_late(stage, timeout, len(line)))
        except socket.gaierror as error:
            return ProbeAnswer(f"DNS lookup failed: {error.strerror or type(error).__name__}")
        except ssl.SSLError as error:
            if stage == "report":
                return ProbeAnswer(None, LoadReport(error=f"TLS failed: {_tls_problem(error)}"))
            return ProbeAnswer(f"TLS failed: {_tls_problem(error)}")
        except OSError as error:
            closed = f"connection failed: {error.strerror or type(error).__name__}"
            if stage == "report":
                return ProbeAnswer(None, LoadReport(error=closed))
            return ProbeAnswer(closed)
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 0.1)
        return ProbeAnswer(verdict, report)

    async def _addresses(self, host: str, port: int) -> list[str]:
        addresses = await self.resolve(host, port)
        if not addresses:
            raise _Failed("DNS lookup failed: no address")
        refused = next((address for address in addresses if is_link_local(address)), None)
        if refused is not None:
            named = "" if refused == host else f" for {host}"
            raise _Failed(
                f"refused: link-local address {refused}{named} (cloud metadata services "
                "answer there, no CDN does)"
            )
        return addresses

    async def _connect(
        self, addresses: list[str], port: int, tls_name: str | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first address that takes one: to the address itself, so the
        name is not resolved again (to something else) on the way."""
        failure: OSError = OSError("no address")
        for address in addresses:
            try:
                return await asyncio.open_connection(
                    address,
                    port,
                    ssl=self._tls if tls_name is not None else None,
                    server_hostname=tls_name,
                )
            except ssl.SSLError:
                raise  # the host answered: another address of it would not do better
            except OSError as error:
                failure = error
        raise failure


class _Failed(Exception):
    """The host's answer (or its address) is not one a healthy CDN host gives: why."""


async def _read_status_line(reader: asyncio.StreamReader, line: bytearray) -> bytes:
    """Up to and including the first LF, reading MAX_STATUS_LINE bytes at most into `line`."""
    while (end := line.find(b"\n")) < 0:
        if len(line) >= MAX_STATUS_LINE:
            raise _Failed(f"status line longer than {MAX_STATUS_LINE} bytes")
        chunk = await reader.read(MAX_STATUS_LINE - len(line))
        if not chunk:
            if line:
                raise _Failed(f"connection closed mid status line ({len(line)} bytes received)")
            raise _Failed("connection closed without an answer")
        line += chunk
    return bytes(line[: end + 1])


async def _read_load_report(
    reader: asyncio.StreamReader, received: bytes, load: str, *, body: bool
) -> LoadReport | None:
    """The report of an answer whose status line is read: `received` is what came after
    it. The header section up to MAX_HEADER_BYTES, then (for GET) the body's first line up
    to MAX_REPORT_BYTES, through one chunk when the body is chunked."""
    data = bytearray(received)
    while (end := _header_end(data)) < 0:
        if len(data) >= MAX_HEADER_BYTES:
            return LoadReport(error=f"header section longer than {MAX_HEADER_BYTES} bytes")
        chunk = await reader.read(MAX_HEADER_BYTES - len(data))
        if not chunk:
            return LoadReport(error="connection closed mid header section")
        data += chunk
    headers = _headers(bytes(data[:end]))
    rest = bytes(data[end:])
    orca = headers.get(ORCA_HEADER.encode())
    if (load == "utilization" and orca is not None) or not body:
        return read_report(load, orca, None)
    if headers.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
        first = await _first_chunk(reader, bytearray(rest))
    else:
        length = headers.get(b"content-length")
        limit = MAX_REPORT_BYTES + 1
        if length is not None and length.strip().isdigit():
            limit = min(limit, int(length))
        first = await _read_up_to(reader, bytearray(rest), limit)
    line, newline, _ = first.partition(b"\n")
    if not newline and len(line) > MAX_REPORT_BYTES:
        return LoadReport(error=f"first body line longer than {MAX_REPORT_BYTES} bytes")
    return read_report(load, orca, line.rstrip(b"\r"))


def _header_end(data: bytearray) -> int:
    """Where the body starts (after the blank line), or -1 while the headers go on."""
    if data[:2] == b"\r\n":
        return 2
    if data[:1] == b"\n":
        return 1
    for blank in (b"\r\n\r\n", b"\n\n"):
        found = data.find(blank)
        if found >= 0:
            return found + len(blank)
    return -1


def _headers(section: bytes) -> dict[bytes, bytes]:
    """Header names (lower case) and values; the first of a name repeated counts."""
    headers: dict[bytes, bytes] = {}
    for raw in section.split(b"\n"):
        name, colon, value = raw.partition(b":")
        if colon and name and name == name.strip():
            headers.setdefault(name.lower(), value.strip(b" \t\r"))
    return headers


async def _read_up_to(reader: asyncio.StreamReader, data: bytearray, limit: int) -> bytes:
    """Until a line end, the end of the answer or `limit` bytes, whichever comes first."""
    while b"\n" not in data and len(data) < limit:
        chunk = await reader.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data[:limit])


async def _first_chunk(reader: asyncio.StreamReader, data: bytearray) -> bytes:
    """The data of a chunked body's first chunk (MAX_REPORT_BYTES + 1 of it at most)."""
    size_line = await _read_up_to(reader, data, 64)
    match = _CHUNK_SIZE.match(size_line)
    if match is None:
        return b""
    limit = min(int(match[1], 16), MAX_REPORT_BYTES + 1)
    return await _read_up_to(reader, bytearray(data[match.end() :]), limit)


def _late(stage: str, timeout: float, received: int) -> str:
    if stage == "resolve":
        return f"no DNS answer within {timeout:g} s"
    if stage == "connect":
        return f"no connection within {timeout:g} s"
    if received:
        return f"status line not complete within {timeout:g} s ({received} bytes received)"
    return f"no answer within {timeout:g} s"


def _tls_problem(error: ssl.SSLError) -> str:
    verify = getattr(error, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"
    if error.reason:
        return str(error.reason).lower().replace("_", " ")
    return type(error).__name__


def _verdict(status_line: bytes) -> str | None:
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        shown = status_line.rstrip(b"\r\n")
        cut = "..." if len(shown) > _EXCERPT else ""
        return f"not an HTTP/1.x status line: {shown[:_EXCERPT]!r}{cut}"
    if 200 <= int(match[1]) < 400:  # three ASCII digits, by the pattern
        return None
    return f"status {match[1].decode()}"
