from collections.abc import Mapping
from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app.domain.errors import BalancerError
from app.presentation.http.problem import PROBLEM_JSON, error_problem, problem

log = structlog.get_logger(__name__)


def _response(
    document: dict[str, object], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    status = document["status"]
    assert isinstance(status, int)
    return JSONResponse(document, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _balancer_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BalancerError)
    return _response(error_problem(error))


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
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


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    if isinstance(error.detail, dict):
        return _response(error.detail, error.headers)
    phrase = HTTPStatus(error.status_code).phrase
    code = phrase.lower().replace(" ", "-")
    return _response(problem(error.status_code, phrase, str(error.detail), code), error.headers)


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
