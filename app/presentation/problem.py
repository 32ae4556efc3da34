import json
from collections.abc import Mapping
from typing import Any

from starlette.types import Send

from app.application.errors import (
    ConfigNotLoaded,
    PreconditionFailed,
    ServerRuleNotFound,
    StorageConflict,
    StorageFailed,
    StorageRejected,
    StorageUnavailable,
    TooManyConflicts,
    VersionConflict,
    VersionNotFound,
)
from app.application.limits import LimitExists, LimitNotFound, TooManyLimits
from app.application.metrics import MetricsDisabled, StatsUnavailable
from app.application.steering import SteeringDisabled
from app.domain.errors import BalancerError, InvalidConfig, InvalidVideoUrl, NoHealthyTarget
from app.domain.ratelimit import InvalidLimit

PROBLEM_JSON = "application/problem+json"

# The one table that maps application errors to HTTP. First match wins (subclasses first).
STATUS_BY_ERROR: tuple[tuple[type[BalancerError], int, str], ...] = (
    (InvalidVideoUrl, 400, "Invalid video URL"),
    (InvalidLimit, 422, "Invalid rate limit"),
    (InvalidConfig, 422, "Invalid configuration"),
    (LimitNotFound, 404, "Rate limit not found"),
    (LimitExists, 409, "Rate limit exists"),
    (TooManyLimits, 422, "Too many rate limits"),
    (VersionNotFound, 404, "Configuration version not found"),
    (ServerRuleNotFound, 404, "Server rule not found"),
    (PreconditionFailed, 412, "Precondition failed"),
    (VersionConflict, 409, "Version conflict"),
    (TooManyConflicts, 409, "Concurrent configuration changes"),
    (StorageRejected, 422, "Rejected by storage"),
    (StorageConflict, 409, "Storage conflict"),
    (StorageUnavailable, 503, "Storage unavailable"),
    (StorageFailed, 500, "Storage error"),
    (ConfigNotLoaded, 503, "Configuration not loaded"),
    (NoHealthyTarget, 503, "No healthy target"),
    (MetricsDisabled, 404, "Counting is off"),
    (SteeringDisabled, 404, "Content steering is off"),
    (StatsUnavailable, 503, "Statistics store unavailable"),
)


def status_of(error: BalancerError) -> tuple[int, str]:
    for error_type, status, title in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status, title
    return 500, "Internal error"


def problem(status: int, title: str, detail: str, code: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem document; `code` is our stable machine-readable name."""
    return {
        "type": f"urn:balancer:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def error_problem(error: BalancerError) -> dict[str, Any]:
    status, title = status_of(error)
    extra = {"field": error.field} if isinstance(error, InvalidConfig) else {}
    return problem(status, title, error.detail, error.code, **extra)


def retry_after(error: BalancerError) -> str | None:
    """`Retry-After` seconds for errors that pass with time."""
    return str(error.retry_after) if isinstance(error, NoHealthyTarget) else None


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def send_problem(
    send: Send, document: dict[str, Any], headers: Mapping[str, str] | None = None
) -> None:
    """Answer `document` from ASGI middleware before the request's body is read. The
    connection closes, so whatever body the client still sends is never read."""
    body = encode(document)
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": document["status"],
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *extra,
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
