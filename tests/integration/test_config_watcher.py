import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.application.config import ReloadConfig
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig
from app.domain.split import Split
from app.infrastructure.postgres.config_repository import PostgresConfigRepository
from app.infrastructure.postgres.listener import ConfigWatcher
from app.infrastructure.postgres.pool import create_pool
from tests.proxy import CuttableProxy

pytestmark = pytest.mark.usefixtures("initial_config")

NEW = BalancerConfig(cdn_host="cdn2.example.com", split=Split(1, 1))


@pytest.fixture
async def repository(database_url: str) -> AsyncIterator[PostgresConfigRepository]:
    pool = await create_pool(database_url, timeout=2)
    yield PostgresConfigRepository(pool)
    await pool.close()


async def wait_for_version(snapshot: ConfigSnapshot, version: int, limit: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if snapshot.loaded and snapshot.version.version == version:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"version {version} not served within {limit}s")


async def watching(
    repository: PostgresConfigRepository, dsn: str, *, resync_seconds: float
) -> tuple[ConfigSnapshot, ConfigWatcher]:
    """A started watcher and the snapshot it keeps, once the first version is served."""
    snapshot = ConfigSnapshot()
    watcher = ConfigWatcher(
        dsn, ReloadConfig(repository, snapshot), resync_seconds=resync_seconds, timeout=1
    )
    await watcher.start()
    await wait_for_version(snapshot, 1, 5)
    return snapshot, watcher


async def test_a_stored_version_is_served_within_a_second_without_waiting_for_resync(
    repository: PostgresConfigRepository, database_url: str
) -> None:
    snapshot, watcher = await watching(repository, database_url, resync_seconds=60)
    await repository.append(NEW, after=1, comment=None)
    assert await wait_for_version(snapshot, 2, 1.0) < 1.0
    assert snapshot.version.config == NEW
    await watcher.stop()


async def test_a_change_made_while_the_listener_was_cut_off_arrives_by_resync(
    repository: PostgresConfigRepository, database_url: str
) -> None:
    proxy = CuttableProxy.for_url(database_url)
    await proxy.start()
    proxied = proxy.proxied(database_url)
    pool = await create_pool(proxied, timeout=1)
    snapshot, watcher = await watching(PostgresConfigRepository(pool), proxied, resync_seconds=0.2)
    await proxy.cut()
    await repository.append(NEW, after=1, comment=None)  # its NOTIFY cannot reach the watcher
    await asyncio.sleep(0.5)
    assert not watcher.healthy
    await proxy.restore()
    await wait_for_version(snapshot, 2, 5)
    assert watcher.listening
    await watcher.stop()
    pool.terminate()
    await proxy.cut()


async def test_a_direct_sql_insert_is_picked_up_too(
    repository: PostgresConfigRepository, database_url: str
) -> None:
    snapshot, watcher = await watching(repository, database_url, resync_seconds=60)
    connection = await asyncpg.connect(database_url)
    await connection.execute(
        "INSERT INTO config_versions (version, cdn_host, cdn_weight, origin_weight)"
        " VALUES (2, 'cdn3.example.com', 1, 0)"
    )
    await connection.close()
    await wait_for_version(snapshot, 2, 1.0)
    await watcher.stop()
