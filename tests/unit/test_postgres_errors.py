"""Which PostgreSQL driver errors mean "unavailable", and which mean something else."""

import asyncpg
import pytest

from app.application.errors import (
    StorageConflict,
    StorageFailed,
    StorageRejected,
    StorageUnavailable,
)
from app.infrastructure.postgres.errors import storage_error, storage_errors


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        OSError("network is unreachable"),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.PostgresConnectionError("connection failure"),
        asyncpg.ConnectionFailureError("could not receive data"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_connection_class_errors_are_unavailable(error: Exception) -> None:
    assert isinstance(storage_error(error), StorageUnavailable)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.CheckViolationError('violates check constraint "config_versions_check"'),
        asyncpg.NotNullViolationError('null value in column "cdn_host"'),
        asyncpg.ForeignKeyViolationError("violates foreign key constraint"),
        asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        asyncpg.NumericValueOutOfRangeError("smallint out of range"),
        asyncpg.StringDataRightTruncationError("value too long for type character varying(8)"),
        asyncpg.DataError("invalid input for query argument $1: 99999 (out of int16 range)"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_data_and_constraint_errors_are_rejections_that_say_what_was_refused(
    error: Exception,
) -> None:
    translated = storage_error(error)
    assert isinstance(translated, StorageRejected)
    assert str(error) in translated.detail


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.ExclusionViolationError("conflicting key value violates exclusion constraint"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_caused_by_a_concurrent_change_are_conflicts(error: Exception) -> None:
    assert isinstance(storage_error(error), StorageConflict)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UndefinedTableError('relation "config_versions" does not exist'),
        asyncpg.InsufficientPrivilegeError("permission denied for table config_versions"),
        asyncpg.PostgresSyntaxError('syntax error at or near "SELEC"'),
        asyncpg.DiskFullError("could not extend file: No space left on device"),
        asyncpg.ClientConfigurationError("invalid connection parameter"),
        asyncpg.InternalClientError("unexpected state"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_anything_else_is_a_failure_that_keeps_its_internals_out_of_the_answer(
    error: Exception,
) -> None:
    translated = storage_error(error)
    assert isinstance(translated, StorageFailed)
    assert str(error) not in translated.detail
    assert type(error).__name__ not in translated.detail


async def test_the_repository_boundary_raises_the_application_error_with_the_cause_kept() -> None:
    cause = asyncpg.CheckViolationError("violates check constraint")
    with pytest.raises(StorageRejected) as raised:
        async with storage_errors():
            raise cause
    assert raised.value.__cause__ is cause


async def test_errors_that_are_not_the_drivers_pass_through_untouched() -> None:
    with pytest.raises(KeyError):
        async with storage_errors():
            raise KeyError("a bug of ours")
