from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"


@pytest.fixture
async def client(
    database_url: str, redis_url: str, sequence_key: str, initial_config: None
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app in process (lifespan included) on real PostgreSQL and Redis."""
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_token=(ADMIN_TOKEN, "second-admin-token-abcdef"),
        sequence_key=sequence_key,
        log_format="console",
    )
    front = create_app(settings)
    async with front.app.router.lifespan_context(front.app):  # type: ignore[attr-defined]
        transport = httpx.ASGITransport(app=front)
        async with httpx.AsyncClient(transport=transport, base_url="http://balancer") as client:
            yield client
