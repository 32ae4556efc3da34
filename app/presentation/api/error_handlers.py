from collections.abc import Mapping
from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.domain.errors import BalancerError
from app.presentation.problem import PROBLEM_JSON, error_problem, problem, retry_after

log = structlog.get_logger(__name__)

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _response(
    document: dict[str, object], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    status = document["status"]
    assert isinstance(status, int)
    return JSONResponse(document, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _balancer_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BalancerError)
    document = error_problem(error)
    if document["status"] == 500:  # ours to fix: the cause goes to the log, not the client
        log.error("request_failed", code=error.code, exc_info=error)
    seconds = retry_after(error)
    return _response(document, {"Retry-After": seconds} if seconds else None)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    for item in error.errors():
        if item["type"] == "json_invalid":
            reason = item.get("ctx", {}).get("error", "JSON decode error")
            position = item["loc"][-1]
            detail = f"The body is not valid JSON: {reason} (at character {position})."
            return _response(problem(400, "Malformed JSON", detail, "malformed-json"))
    errors = [
        {
            "field": ".".join(str(part) for part in item["loc"] if part != "body"),
            "message": item["msg"],
        }
        for item in error.errors()
    ]
    first = errors[0]["field"] if errors else ""
    detail = "; ".join(f"{item['field']}: {item['message']}" for item in errors)
    return _response(
        problem(422, "Invalid request", detail, "invalid-request", field=first, errors=errors)
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    headers = error.headers
    if error.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    if isinstance(error.detail, dict):
        return _response(error.detail, headers)
    if error.status_code == 400 and isinstance(error.__cause__, ValueError):
        # FastAPI's answer to a body that is not even text (not UTF-8)
        detail = "The body is not valid JSON: it is not UTF-8 text."
        return _response(problem(400, "Malformed JSON", detail, "malformed-json"), headers)
    phrase = HTTPStatus(error.status_code).phrase
    code = phrase.lower().replace(" ", "-")
    return _response(problem(error.status_code, phrase, str(error.detail), code), headers)


def _allowed_methods(request: Request) -> str:
    """Every method of the path: Starlette names only those of the first route matching it."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


async def _unexpected_error(_: Request, __: Exception) -> JSONResponse:
    # Starlette re-raises after this answer and uvicorn logs the traceback once, with the
    # request id and path that RequestContext bound.
    return _response(problem(500, "Internal error", "Something went wrong.", "internal-error"))


def install_error_handlers(app: FastAPI) -> None:
    """Every error answers application/problem+json, with no internals in it."""
    app.add_exception_handler(BalancerError, _balancer_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
