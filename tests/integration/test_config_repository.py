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
from tests.support.proxy import CuttableProxy

pytestmark = pytest.mark.usefixtures("initial_config")

CONFIG = BalancerConfig(
    cdn_host="https://cdn2.example.com",
    split=Split(3, 2),
    redirect_status=307,
    origin_domains=("origin-cluster", "origin.example.net"),
    server_rules={"s7": Split(0, 1)},
)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, timeout=2)
    yield pool
    await pool.close()


@pytest.fixture
def repository(pool: asyncpg.Pool) -> PostgresConfigRepository:
    return PostgresConfigRepository(pool)


async def test_migration_seeds_cdn_example_com_at_9_to_1(
    repository: PostgresConfigRepository,
) -> None:
    active = await repository.get_active()
    assert active.version == 1
    assert (active.config.cdn_host, active.config.split) == ("cdn.example.com", Split(9, 1))


async def test_appended_version_round_trips_every_setting(
    repository: PostgresConfigRepository, pool: asyncpg.Pool
) -> None:
    saved = await repository.append(CONFIG, after=1, comment="new CDN")
    assert saved.version == 2
    active = await PostgresConfigRepository(pool).get_active()  # another worker's reading
    assert active.config == CONFIG
    assert active.comment == "new CDN"
    assert active.created_at.tzinfo is not None


async def test_second_write_on_the_same_base_version_conflicts_and_writes_nothing(
    repository: PostgresConfigRepository,
) -> None:
    await repository.append(CONFIG, after=1, comment=None)
    with pytest.raises(VersionConflict):
        await repository.append(CONFIG, after=1, comment="late")
    assert [v.version async for v in repository.history(limit=10, before=None)] == [2, 1]


async def test_history_pages_newest_first(repository: PostgresConfigRepository) -> None:
    for after in range(1, 5):
        await repository.append(CONFIG, after=after, comment=str(after))
    page = repository.history(limit=2, before=None)
    assert [v.version async for v in page] == [5, 4]
    page = repository.history(limit=2, before=4)
    assert [v.version async for v in page] == [3, 2]
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


async def test_the_active_version_is_read_again_only_once_a_newer_one_is_stored(
    repository: PostgresConfigRepository, pool: asyncpg.Pool
) -> None:
    """Each worker asks for the active version every few seconds: while it is the one it
    has, it is not read and checked again (the largest took 180 ms of the event loop)."""
    first = await repository.get_active()
    assert await repository.get_active() is first
    await PostgresConfigRepository(pool).append(CONFIG, after=1, comment="another worker's")
    newer = await repository.get_active()
    assert (newer.version, newer.config, newer.comment) == (2, CONFIG, "another worker's")
    assert await repository.get_active() is newer


async def test_history_reads_a_long_page_in_parts_and_lists_it_whole(
    repository: PostgresConfigRepository,
) -> None:
    for after in range(1, 24):
        await repository.append(CONFIG, after=after, comment=str(after))
    page = [v.version async for v in repository.history(limit=21, before=None)]
    assert page == list(range(24, 3, -1))
    rest = [v.version async for v in repository.history(limit=21, before=4)]
    assert rest == [3, 2, 1]
