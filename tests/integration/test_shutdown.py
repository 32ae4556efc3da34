"""A worker's shutdown is bounded: the database pool waits for its connections at most the
database timeout, then closes them (a connection never given back held the worker, and a
test session, forever)."""

import asyncio
import time

import asyncpg
from dishka import make_async_container

from app.application.lifecycle import Lifecycle
from app.main.ioc import providers
from app.main.settings import Settings
from tests.support.app import app_settings


async def test_a_connection_never_released_holds_the_pool_close_no_longer_than_the_timeout(
    database_url: str, redis_url: str
) -> None:
    settings = app_settings(database_url, redis_url, "shutdown", db_timeout_seconds=0.5)
    container = make_async_container(
        *providers(settings), context={Settings: settings, Lifecycle: Lifecycle(drain_seconds=0)}
    )
    pool = await container.get(asyncpg.Pool)
    held = await pool.acquire()  # never released
    started = time.monotonic()
    await asyncio.wait_for(container.close(), 10)  # without the bound: forever
    assert time.monotonic() - started < 3.0
    assert pool.is_closing()
    del held
