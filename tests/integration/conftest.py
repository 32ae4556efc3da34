import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_TOKEN

SECOND_ADMIN_TOKEN = "Jm4tWq8ZrNx2KbV6pYc9LfD3hSg7TeA5"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"


class YieldingTransport(httpx.ASGITransport):
    """In process a request never waits for I/O, so the worker's background tasks (the
    sequence's next lease, the config watcher) would starve; a real server's event loop runs
    them between requests, so let it run once per request here too."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        return await super().handle_async_request(request)


@pytest.fixture
async def client(
    database_url: str, redis_url: str, sequence_key: str, initial_config: None
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app in process (lifespan included) on real PostgreSQL and Redis."""
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_token=(ADMIN_TOKEN, SECOND_ADMIN_TOKEN),
        sequence_key=sequence_key,
        cdn_health_key=f"{sequence_key}.cdn-health",
        stats_key=f"{sequence_key}.stats",
        cdn_prober_lease_seconds=1.5,
        log_format="console",
    )
    front = create_app(settings)
    async with front.app.router.lifespan_context(front.app):  # type: ignore[attr-defined]
        transport = YieldingTransport(app=front)
        async with httpx.AsyncClient(transport=transport, base_url="http://balancer") as client:
            yield client
