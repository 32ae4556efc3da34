from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.app import ADMIN_TOKEN, SECOND_ADMIN_TOKEN, app_client, app_settings


@pytest.fixture
async def client(
    database_url: str, redis_url: str, sequence_key: str, initial_config: None
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app in process (lifespan included) on real PostgreSQL and Redis."""
    settings = app_settings(
        database_url,
        redis_url,
        sequence_key,
        admin_token=(ADMIN_TOKEN, SECOND_ADMIN_TOKEN),
        cdn_prober_lease_seconds=1.5,
    )
    async with app_client(settings) as client:
        yield client
