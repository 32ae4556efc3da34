from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parents[1] / "static" / "admin"

# The page's own files only: no inline script or style, no frames, no form posts, and
# fetch() may reach this origin alone (the admin token must never leave it).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    # Revalidate on every load (StaticFiles answers 304 by ETag), so a deploy is seen at once.
    (b"cache-control", b"no-cache"),
)


class ConsoleFiles:
    """The console's static files with the security headers on every answer.

    Only requests under /admin pass through here, so the headers cost nothing elsewhere.
    StaticFiles sends a directory named without its slash (`/admin/%2e`) to the same path
    with one, as an absolute URL on the request's Host; it is made relative here.
    """

    def __init__(self, directory: Path = STATIC) -> None:
        self._files: ASGIApp = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                kept = [
                    (name, value)
                    for name, value in headers
                    if name.lower() not in (b"cache-control", b"location")
                ]
                if any(name.lower() == b"location" for name, _ in headers):
                    kept.append((b"location", _directory_location(scope["path"])))
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self._files(scope, receive, send_with_headers)


def _directory_location(path: str) -> bytes:
    """`/admin/sub` -> `./sub/`: the directory with its slash, relative to the request."""
    return f"./{quote(path.rpartition('/')[2])}/".encode()


def mount_console(app: FastAPI) -> None:
    """`GET /admin`: the admin console, a static page that talks to the admin API."""

    @app.get("/admin", include_in_schema=False)
    async def console() -> RedirectResponse:
        # Relative, so the page and its relative API calls also work under a proxy prefix.
        return RedirectResponse("admin/", status_code=308)

    app.mount("/admin", ConsoleFiles(), name="admin-console")
