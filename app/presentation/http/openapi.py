from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.presentation.http.schemas import PROBLEM_RESPONSE, Problem

_EXAMPLE = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"

_REDIRECT_OPERATION: dict[str, Any] = {
    "tags": ["redirect"],
    "summary": "Redirect a player to the CDN or the origin",
    "description": (
        "Answers the configured redirect status (301 by default) with `Location` on the CDN "
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
        "301": {
            "description": "Redirect (the status is configurable: 301, 302, 307 or 308).",
            "headers": {
                "Location": {
                    "schema": {"type": "string"},
                    "example": "http://cdn.example.com/s1/video/1488/xcg2djHckad.m3u8",
                },
                "Cache-Control": {"schema": {"type": "string", "example": "no-store"}},
            },
        },
        "400": {"description": "The video URL is missing or not ours.", **PROBLEM_RESPONSE},
        "431": {
            "description": "The request line and headers are larger than "
            "`BALANCER_MAX_HEADER_BYTES` (`headers-too-large`).",
            **PROBLEM_RESPONSE,
        },
        "503": {"description": "No configuration loaded yet.", **PROBLEM_RESPONSE},
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
    """Every operation that takes a body can answer 400, 413 and 415 (RequestLimits and the
    JSON decoder), and every 422 is our problem document, not FastAPI's default shape."""
    for operations in paths.values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                for status, response in _BODY_REFUSALS.items():
                    responses.setdefault(status, response)
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
