import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from app.application.errors import (
    StorageConflict,
    StorageFailed,
    StorageRejected,
    StorageUnavailable,
)
from app.domain.errors import BalancerError
from app.infrastructure.backend_errors import backend_errors

# PostgreSQL could not be reached, went away, or did not answer in time: retry later.
UNREACHABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,  # e.g. the connection closed under the query
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.QueryCanceledError,  # 57014: statement timeout or cancelled by an operator
)
# Errors in how we talk to PostgreSQL, not in its availability: a bug or a misconfiguration.
_MISCONFIGURED = (asyncpg.ClientConfigurationError, asyncpg.UnsupportedClientFeatureError)
DRIVER_ERRORS: tuple[type[Exception], ...] = (
    *UNREACHABLE,
    asyncpg.PostgresError,
    asyncpg.InternalClientError,
)


def storage_error(error: Exception) -> BalancerError:
    """The application error a driver error stands for.

    Only connection-class errors are "unavailable" (503): a value PostgreSQL refuses is the
    client's to fix (422), a constraint another writer got to first is a conflict (409), and
    anything else is our fault (500, logged where it is answered).
    """
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    if isinstance(error, _MISCONFIGURED):
        return StorageFailed("The configuration store failed; the error is logged.")
    if isinstance(error, UNREACHABLE):
        return StorageUnavailable(f"PostgreSQL is unavailable: {type(error).__name__}")
    if isinstance(
        error,
        asyncpg.UniqueViolationError
        | asyncpg.ExclusionViolationError
        | asyncpg.TransactionRollbackError,  # class 40: serialization failure, deadlock
    ):
        return StorageConflict(f"PostgreSQL refused the change, retry: {message}")
    if isinstance(error, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError):
        return StorageRejected(f"PostgreSQL refused a value: {message}")
    return StorageFailed("The configuration store failed; the error is logged.")


@asynccontextmanager
async def storage_errors() -> AsyncIterator[None]:
    """Turn driver errors into application errors at the repository boundary."""
    try:
        yield
    except DRIVER_ERRORS as error:
        backend_errors.record("postgres", error)
        raise storage_error(error) from error
