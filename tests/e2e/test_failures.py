"""What viewers and admins get while PostgreSQL or Redis is away, and after it is back."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from loadtest.support import ServerProcess
from tests.conftest import ADMIN_TOKEN
from tests.proxy import CuttableProxy

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"


@dataclass
class Stack:
    client: httpx.AsyncClient
    postgres: CuttableProxy
    redis: CuttableProxy


@pytest.fixture
async def stack(database_url: str, redis_url: str, sequence_key: str) -> AsyncIterator[Stack]:
    postgres = CuttableProxy.for_url(database_url)
    redis = CuttableProxy.for_url(redis_url)
    await postgres.start()
    await redis.start()
    server = ServerProcess(
        {
            "BALANCER_DATABASE_URL": postgres.proxied(database_url),
            "BALANCER_REDIS_URL": redis.proxied(redis_url),
            "BALANCER_ADMIN_TOKEN": ADMIN_TOKEN,
            "BALANCER_SEQUENCE_KEY": sequence_key,
            "BALANCER_RESYNC_SECONDS": "0.5",
        },
        workers=1,
    )
    await asyncio.to_thread(server.start)  # the proxies run on this loop meanwhile
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield Stack(client, postgres, redis)
    await asyncio.to_thread(server.stop)
    await postgres.cut()
    await redis.cut()


async def ready_checks(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.get("/ready")
    assert response.status_code == 200
    checks: dict[str, str] = response.json()["checks"]
    return checks


async def eventually_ok(client: httpx.AsyncClient, name: str) -> None:
    for _ in range(100):
        if (await ready_checks(client))[name] == "ok":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} did not recover")


async def test_redirects_flow_while_redis_is_down_and_leases_resume_after(stack: Stack) -> None:
    await stack.redis.cut()
    for _ in range(50):
        response = await stack.client.get("/", params={"video": VIDEO})
        assert response.status_code == 301
    assert (await ready_checks(stack.client))["redis"] != "ok"
    body = (await stack.client.get("/ready")).json()
    assert body["status"] == "degraded"

    await stack.redis.restore()
    await eventually_ok(stack.client, "redis")
    assert (await stack.client.get("/", params={"video": VIDEO})).status_code == 301


async def test_postgres_down_keeps_redirects_and_reads_but_refuses_writes_clearly(
    stack: Stack,
) -> None:
    await stack.postgres.cut()
    assert (await stack.client.get("/", params={"video": VIDEO})).status_code == 301
    config = await stack.client.get("/config")
    assert config.status_code == 200
    write = await stack.client.patch("/config", json={"cdn_weight": 5}, headers=ADMIN)
    assert write.status_code == 503
    assert write.headers["content-type"] == "application/problem+json"
    assert write.json()["code"] == "storage-unavailable"
    invalid = await stack.client.patch("/config", json={"cdn_weight": -5}, headers=ADMIN)
    assert invalid.status_code == 422
    assert (await ready_checks(stack.client))["postgres"] != "ok"

    await stack.postgres.restore()
    await eventually_ok(stack.client, "postgres")
    write = await stack.client.patch("/config", json={"cdn_weight": 5}, headers=ADMIN)
    assert write.status_code == 200
    assert write.json()["version"] == config.json()["version"] + 1
