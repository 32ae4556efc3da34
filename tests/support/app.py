"""The app for tests: the admin tokens, the PostgreSQL and Redis it runs on, its settings,
and the whole app in process on a client of its own."""

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from app.main.asgi import create_app
from app.main.settings import Settings
from loadtest.support import redis_keys

ADMIN_TOKEN = "Vq7rYk2LmXw9PbT4nZc6HdJ3sGf8EaR5"
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


def app_settings(database_url: str, redis_url: str, prefix: str, **changes: Any) -> Settings:
    """Settings for the app in a test: the test admin token, console logs, every Redis key
    under `prefix` (a test's own: concurrent sessions never share a key), then `changes`."""
    keys: dict[str, Any] = {
        name.removeprefix("BALANCER_").lower(): value for name, value in redis_keys(prefix).items()
    }
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_token=(ADMIN_TOKEN,),
        log_format="console",
    )
    return dataclasses.replace(settings, **keys, **changes)


@asynccontextmanager
async def app_client(
    settings: Settings, transport: type[httpx.ASGITransport] = YieldingTransport
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app in process (lifespan included), on a client of its own."""
    front = create_app(settings)
    async with front.app.router.lifespan_context(front.app):  # type: ignore[attr-defined]
        asgi = transport(app=front)
        async with httpx.AsyncClient(transport=asgi, base_url="http://balancer") as client:
            yield client


@dataclass(frozen=True)
class Servers:
    database_url: str
    redis_url: str
