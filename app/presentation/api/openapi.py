from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.domain.config import REDIRECT_STATUSES
from app.presentation.api.schemas import PROBLEM_RESPONSE, Problem
from app.presentation.edge.redirect import needs_start

_EXAMPLE = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"

_REDIRECT_HEADERS: dict[str, Any] = {
    "Location": {
        "required": True,
        "schema": {"type": "string"},
        "example": "http://cdn.example.com/s1/video/1488/xcg2djHckad.m3u8",
    },
    "Cache-Control": {"required": True, "schema": {"type": "string", "example": "no-store"}},
}
_RETRY_AFTER: dict[str, Any] = {
    "description": "Seconds to wait before asking again.",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
RATE_LIMITED: dict[str, Any] = {
    "description": "This client is over its rate limit (`rate-limited`).",
    "headers": {"Retry-After": {"required": True, **_RETRY_AFTER}},
    **PROBLEM_RESPONSE,
}
_UNAVAILABLE: dict[str, Any] = {
    "description": "This worker has not loaded its configuration yet (`starting`), or no CDN "
    "host of the pool is healthy and origin fallback is off.",
    "headers": {"Retry-After": _RETRY_AFTER},
    **PROBLEM_RESPONSE,
}
_HEADERS_TOO_LARGE: dict[str, Any] = {
    "description": "The request line and headers are larger than `BALANCER_MAX_HEADER_BYTES` "
    "(`headers-too-large`).",
    **PROBLEM_RESPONSE,
}

_REDIRECT_OPERATION: dict[str, Any] = {
    "tags": ["redirect"],
    "summary": "Redirect a player to the CDN or the origin",
    "description": (
        "Answers the configured redirect status (301 by default; 302, 307 or 308 if so "
        "configured) with `Location` on the CDN "
        "(`http://<cdn_host>/<server>/<path>?<query>`) or, for the origin share of the "
        "traffic, the video URL itself. Out of every `cdn_weight + origin_weight` "
        "consecutive requests (counted across all workers and instances) exactly "
        "`origin_weight` go to the origin. `Cache-Control: no-store` keeps browsers from "
        "pinning one target. The video URL must be `http(s)://<server>.<allowed domain>/<path>`; "
        "anything else answers 400 with a problem document and no `Location`."
    ),
    "parameters": [
        {
            "name": "video",
            "in": "query",
            "required": True,
            "description": "The video URL on an origin server, percent-encoded (or raw).",
            "schema": {"type": "string", "maxLength": 8192, "example": _EXAMPLE},
        }
    ],
    "responses": {
        **{
            str(status): {
                "description": f"Redirect: the configured `redirect_status` is {status}.",
                "headers": _REDIRECT_HEADERS,
            }
            for status in REDIRECT_STATUSES
        },
        "400": {"description": "The video URL is missing or not ours.", **PROBLEM_RESPONSE},
        "429": RATE_LIMITED,
        "431": _HEADERS_TOO_LARGE,
        "503": _UNAVAILABLE,
    },
}


_BODY_REFUSALS: dict[str, dict[str, Any]] = {
    "400": {"description": "The body is not valid JSON (`malformed-json`).", **PROBLEM_RESPONSE},
    "413": {
        "description": "The body is larger than `BALANCER_MAX_BODY_BYTES` (`body-too-large`).",
        **PROBLEM_RESPONSE,
    },
    "415": {
        "description": "The body is not `application/json` (`unsupported-media-type`).",
        **PROBLEM_RESPONSE,
    },
}


def _document_refusals(paths: dict[str, Any]) -> None:
    """Every operation can answer 431 (the edge refuses a request line and headers over
    `BALANCER_MAX_HEADER_BYTES`: a long query, say); every one that takes a body can answer
    400, 413 and 415 (RequestLimits and the JSON decoder); every one but health and docs
    answers 503 until the worker has started; every 422 is our problem document, not
    FastAPI's default shape."""
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("431", _HEADERS_TOO_LARGE)
            if "requestBody" in operation:
                for status, response in _BODY_REFUSALS.items():
                    responses.setdefault(status, response)
            if needs_start(path):
                responses.setdefault("503", _UNAVAILABLE)
            if "422" in responses:
                responses["422"] = {
                    "description": "Invalid request or configuration; `field` names it.",
                    **PROBLEM_RESPONSE,
                }


def document_redirect(app: FastAPI) -> None:
    """Add `GET /` and `HEAD /` (served by RedirectFront, outside FastAPI) to the OpenAPI."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema["paths"] = {
                "/": {
                    "get": {**_REDIRECT_OPERATION, "operationId": "redirect_video"},
                    "head": {**_REDIRECT_OPERATION, "operationId": "redirect_video_head"},
                },
                **schema["paths"],
            }
            _document_refusals(schema["paths"])
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schemas["Problem"] = Problem.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
