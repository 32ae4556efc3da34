import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.application.errors import StorageUnavailable, VersionConflict
from app.domain.config import BalancerConfig
from app.domain.split import Split
from app.infrastructure.postgres.config_repository import PostgresConfigRepository
from app.infrastructure.postgres.listener import CHANNEL
from app.infrastructure.postgres.pool import create_pool
from tests.proxy import CuttableProxy

pytestmark = pytest.mark.usefixtures("initial_config")

CONFIG = BalancerConfig(
    cdn_host="https://cdn2.example.com",
    split=Split(3, 2),
    redirect_status=307,
    origin_domains=("origin-cluster", "origin.example.net"),
    server_rules={"s7": Split(0, 1)},
)


@pytest.fixture
async def repository(database_url: str) -> AsyncIterator[PostgresConfigRepository]:
    pool = await create_pool(database_url, timeout=2)
    yield PostgresConfigRepository(pool)
    await pool.close()


async def test_migration_seeds_cdn_example_com_at_9_to_1(
    repository: PostgresConfigRepository,
) -> None:
    active = await repository.get_active()
    assert active.version == 1
    assert (active.config.cdn_host, active.config.split) == ("cdn.example.com", Split(9, 1))


async def test_appended_version_round_trips_every_setting(
    repository: PostgresConfigRepository,
) -> None:
    saved = await repository.append(CONFIG, after=1, comment="new CDN")
    assert saved.version == 2
    active = await repository.get_active()
    assert active.config == CONFIG
    assert active.comment == "new CDN"
    assert active.created_at.tzinfo is not None


async def test_second_write_on_the_same_base_version_conflicts_and_writes_nothing(
    repository: PostgresConfigRepository,
) -> None:
    await repository.append(CONFIG, after=1, comment=None)
    with pytest.raises(VersionConflict):
        await repository.append(CONFIG, after=1, comment="late")
    assert [v.version for v in await repository.history(limit=10, before=None)] == [2, 1]


async def test_history_pages_newest_first(repository: PostgresConfigRepository) -> None:
    for after in range(1, 5):
        await repository.append(CONFIG, after=after, comment=str(after))
    page = await repository.history(limit=2, before=None)
    assert [v.version for v in page] == [5, 4]
    page = await repository.history(limit=2, before=4)
    assert [v.version for v in page] == [3, 2]
    assert await repository.get(42) is None


async def test_every_append_is_announced_on_the_config_channel(
    repository: PostgresConfigRepository, database_url: str
) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(CHANNEL, lambda *args: received.put_nowait(args[3]))
    try:
        await repository.append(CONFIG, after=1, comment=None)
        assert await asyncio.wait_for(received.get(), 2) == "2"
    finally:
        await listener.close()


async def test_unreachable_database_is_reported_as_storage_unavailable(
    database_url: str,
) -> None:
    proxy = CuttableProxy.for_url(database_url)
    await proxy.start()
    pool = await create_pool(proxy.proxied(database_url), timeout=1)
    try:
        await proxy.cut()
        with pytest.raises(StorageUnavailable):
            await PostgresConfigRepository(pool).get_active()
    finally:
        pool.terminate()
        await proxy.close()
