import base64
import hashlib
import re

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from app.presentation.edge.redirect import DOCS_ASSETS

# Swagger UI's page starts the bundle with an inline script, allowed by its hash (built per
# page: it names the OpenAPI URL under the root path), as is the OAuth2 page's; no other
# inline script runs. Both bundles style themselves inline. Nothing is fetched from another
# host (ReDoc would load its logo from a CDN) and the pages cannot be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
# HEAD as well as GET, as the console's files answer it: `curl -I` sees the same headers.
_METHODS = ["GET", "HEAD"]


def _secured(page: HTMLResponse) -> HTMLResponse:
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page.body)
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY.format(scripts=hashes)
    page.headers.update(SECURITY_HEADERS)
    return page


def mount_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Swagger UI and ReDoc served from the service's own copies, so they work offline.

    The app must be built by `FastAPIOffline(..., docs_url=None, redoc_url=None)`, which
    mounts the assets at DOCS_ASSETS and leaves these two pages to us.
    """
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"

    @app.api_route(docs_url, methods=_METHODS, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _secured(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=oauth2_redirect_url,
                swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                # The default validator badge asks validator.swagger.io about every page.
                swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
            )
        )

    @app.api_route(oauth2_redirect_url, methods=_METHODS, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _secured(get_swagger_ui_oauth2_redirect_html())

    @app.api_route(redoc_url, methods=_METHODS, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _secured(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
                with_google_fonts=False,
            )
        )
