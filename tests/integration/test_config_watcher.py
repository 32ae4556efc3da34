import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from app.application.config_versions import ReloadConfig
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig
from app.domain.split import Split
from app.infrastructure.postgres.config_repository import PostgresConfigRepository
from app.infrastructure.postgres.listener import ConfigWatcher, reconnect_delays
from app.infrastructure.postgres.pool import create_pool
from tests.support.proxy import CuttableProxy

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


async def wait_for(condition: Callable[[], bool], limit: float) -> None:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            raise AssertionError(f"not true within {limit}s")
        await asyncio.sleep(0.01)


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


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[CuttableProxy]:
    """A cuttable TCP proxy in front of this session's PostgreSQL."""
    proxy = CuttableProxy.for_url(database_url)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def cut_off(
    proxy: CuttableProxy, database_url: str
) -> AsyncIterator[tuple[ConfigSnapshot, ConfigWatcher]]:
    """A watcher whose connections all go through the proxy, with a resync too slow to help."""
    proxied = proxy.proxied(database_url)
    pool = await create_pool(proxied, timeout=1)
    snapshot, watcher = await watching(PostgresConfigRepository(pool), proxied, resync_seconds=30)
    yield snapshot, watcher
    await watcher.stop()
    pool.terminate()


async def test_a_change_made_while_postgresql_was_away_is_served_within_a_second_of_its_return(
    repository: PostgresConfigRepository,
    proxy: CuttableProxy,
    cut_off: tuple[ConfigSnapshot, ConfigWatcher],
) -> None:
    snapshot, watcher = cut_off
    await proxy.cut()
    await repository.append(NEW, after=1, comment=None)  # its NOTIFY cannot reach the watcher
    await asyncio.sleep(2)  # long enough for the reconnection backoff to reach its cap
    assert not watcher.healthy
    await proxy.restore()
    assert await wait_for_version(snapshot, 2, 1.0) < 1.0
    assert watcher.listening


async def test_a_change_made_right_after_postgresql_returns_is_served_within_a_second(
    repository: PostgresConfigRepository,
    proxy: CuttableProxy,
    cut_off: tuple[ConfigSnapshot, ConfigWatcher],
) -> None:
    snapshot, watcher = cut_off
    await proxy.cut()
    await asyncio.sleep(2)
    assert not watcher.healthy
    await proxy.restore()
    await repository.append(NEW, after=1, comment=None)
    assert await wait_for_version(snapshot, 2, 1.0) < 1.0
    await wait_for(lambda: watcher.listening and watcher.healthy, 1.0)


async def test_stop_returns_when_a_notification_arrives_as_it_stops(
    repository: PostgresConfigRepository, database_url: str
) -> None:
    _, watcher = await watching(repository, database_url, resync_seconds=30)
    watcher._wake.set()  # what a NOTIFY does, in the same step as stop() cancels the watcher
    async with asyncio.timeout(3):
        await watcher.stop()


async def test_reconnection_waits_start_near_100_ms_and_stay_under_half_a_second() -> None:
    waits = list(itertools.islice(reconnect_delays(), 12))
    assert 0.05 <= waits[0] <= 0.1
    assert all(0.025 <= wait <= 0.5 for wait in waits)
    assert max(waits[4:]) > 0.25  # grown to the cap
    assert len(set(waits)) == len(waits)  # jittered, so workers cut off together spread out


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
