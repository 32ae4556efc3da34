import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from app.application.errors import StorageUnavailable

UNREACHABLE = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@asynccontextmanager
async def storage_errors() -> AsyncIterator[None]:
    """Turn driver failures into StorageUnavailable at the repository boundary."""
    try:
        yield
    except UNREACHABLE as error:
        raise StorageUnavailable(f"PostgreSQL is unavailable: {type(error).__name__}") from error
