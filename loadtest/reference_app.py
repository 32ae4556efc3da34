"""The bare ASGI redirect that `make bench` measures the balancer against.

It does the least the job needs (find `video`, rewrite the URL onto the CDN, count in
process) with no validation, no configuration and no shared sequence: the ceiling for a
Python ASGI app on this server stack.
"""

from starlette.types import Receive, Scope, Send

_CDN = "http://cdn.example.com/"
_NO_STORE = (b"cache-control", b"no-store")
_NO_BODY = (b"content-length", b"0")
_EMPTY_BODY = {"type": "http.response.body", "body": b""}


class ReferenceRedirect:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        video = scope["query_string"].decode().partition("video=")[2]
        host, _, path = video.partition("://")[2].partition("/")
        self.count += 1
        location = f"{_CDN}{host.partition('.')[0]}/{path}" if self.count % 10 else video
        await send(
            {
                "type": "http.response.start",
                "status": 301,
                "headers": [(b"location", location.encode()), _NO_STORE, _NO_BODY],
            }
        )
        await send(_EMPTY_BODY)


app = ReferenceRedirect()
