import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

_USER_AGENT = "video-balancer-health-check/1"


class HttpProbe:
    """A minimal HTTP/1.1 health check: one request on a fresh connection, the status line
    read, the connection closed. Nothing else of the answer is needed, so no client library.

    Every step runs under one deadline: a host that accepts and never answers costs this
    coroutine `timeout` seconds and nothing else (the event loop keeps serving).
    """

    def __init__(self) -> None:
        self._tls = ssl.create_default_context()

    async def __call__(self, url: str, *, method: str, timeout: float) -> str | None:
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
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._tls if https else None
                )
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except (OSError, ssl.SSLError) as error:
            return f"connection failed: {error.strerror or type(error).__name__}"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 0.1)
        return _verdict(status_line)


def _verdict(status_line: bytes) -> str | None:
    version, _, rest = status_line.decode("latin-1").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/") or not code.isdigit():
        return "not an HTTP answer"
    if 200 <= int(code) < 400:
        return None
    return f"status {code}"
