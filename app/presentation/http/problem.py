import json
from typing import Any

from app.application.errors import (
    ConfigNotLoaded,
    PreconditionFailed,
    StorageUnavailable,
    TooManyConflicts,
    VersionConflict,
    VersionNotFound,
)
from app.domain.errors import BalancerError, InvalidConfig, InvalidVideoUrl

PROBLEM_JSON = "application/problem+json"

# The one table that maps application errors to HTTP. First match wins (subclasses first).
STATUS_BY_ERROR: tuple[tuple[type[BalancerError], int, str], ...] = (
    (InvalidVideoUrl, 400, "Invalid video URL"),
    (InvalidConfig, 422, "Invalid configuration"),
    (VersionNotFound, 404, "Configuration version not found"),
    (PreconditionFailed, 412, "Precondition failed"),
    (VersionConflict, 409, "Version conflict"),
    (TooManyConflicts, 409, "Concurrent configuration changes"),
    (StorageUnavailable, 503, "Storage unavailable"),
    (ConfigNotLoaded, 503, "Configuration not loaded"),
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


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()
