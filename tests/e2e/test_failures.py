"""What viewers and admins get while PostgreSQL or Redis is away, and after it is back."""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from redis.asyncio import Redis
from uvicorn.config import STARTUP_FAILURE

from loadtest.support import ROOT, ServerProcess, free_port
from tests.conftest import ADMIN_TOKEN
from tests.e2e.conftest import reset_config
from tests.proxy import CuttableProxy

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
# Small leases, so an outage outlasts the numbers a worker holds after a few requests.
BLOCK = 50


@dataclass
class Stack:
    client: httpx.AsyncClient
    postgres: CuttableProxy
    redis: CuttableProxy
    sequence_key: str
    redis_url: str  # the real server, not the proxy

    async def sequence_value(self, add: int = 0) -> int:
        """The shared key (INCRBY `add` first: another instance's lease, for instance)."""
        client = Redis.from_url(self.redis_url)
        try:
            return int(await client.incrby(self.sequence_key, add))
        finally:
            await client.aclose()


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
            "BALANCER_SEQUENCE_BLOCK": str(BLOCK),
            "BALANCER_CDN_HEALTH_KEY": f"{sequence_key}.cdn-health",
            "BALANCER_RESYNC_SECONDS": "0.5",
        },
        workers=1,
    )
    await asyncio.to_thread(server.start)  # the proxies run on this loop meanwhile
    await asyncio.to_thread(reset_config, server.url)
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield Stack(client, postgres, redis, sequence_key, redis_url)
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


async def origin_pattern(client: httpx.AsyncClient, count: int) -> list[bool]:
    """`count` redirects one after another on one connection: True where it went to the origin."""
    pattern = []
    for _ in range(count):
        response = await client.get("/", params={"video": VIDEO})
        assert response.status_code == 301, response.text
        pattern.append(response.headers["location"] == VIDEO)
    return pattern


def origins_at(pattern: list[bool], residue: int) -> bool:
    """Exactly the positions `residue`, `residue + 10`, ... went to the origin (9:1)."""
    return len(pattern) >= 10 and all(
        origin == (i % 10 == residue) for i, origin in enumerate(pattern)
    )


async def test_split_stays_exact_through_a_redis_outage_and_leases_resume_after(
    stack: Stack,
) -> None:
    patched = await stack.client.patch(
        "/config", json={"cdn_weight": 9, "origin_weight": 1, "server_rules": {}}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    before = await stack.sequence_value()

    await stack.redis.cut()
    # 3,000 redirects against the 2 blocks (100 numbers) the worker held: all but those
    # are counted locally, on and on from where the leases stopped.
    outage = await origin_pattern(stack.client, 3000)
    ready = (await stack.client.get("/ready")).json()

    assert origins_at(outage, outage.index(True))
    assert sum(outage) == 300
    assert ready["status"] == "degraded"
    assert "counting locally" in ready["checks"]["redis"]
    assert await stack.sequence_value() == before  # nothing was leased meanwhile

    # Another instance leases a few numbers meanwhile, so that the numbers of this worker's
    # next lease lie at another place in the 9:1 pattern than its local count would.
    local_residue = (outage.index(True) - len(outage)) % 10
    shift = 5 if local_residue != (9 - 5) % 10 else 6
    await stack.sequence_value(add=shift)
    await stack.redis.restore()
    await eventually_ok(stack.client, "redis")  # ok once a lease succeeded, not on a ping
    after_outage = await stack.sequence_value()
    recovered = await origin_pattern(stack.client, 1000)
    await asyncio.sleep(0.3)  # the lease fetched in the background lands

    # Numbers from the leases after `before + shift`, not the local count going on.
    assert origins_at(recovered, (9 - shift) % 10)
    # Every one of the 1,000 came from a lease again: the key moved by them, give or take the
    # blocks the worker held (leased before `after_outage`, or fetched ahead at the end).
    assert abs(await stack.sequence_value() - after_outage - 1000) <= 2 * BLOCK


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


@pytest.mark.parametrize("workers", [1, 2])
def test_server_gives_up_starting_when_postgres_stays_down(redis_url: str, workers: int) -> None:
    closed = free_port()  # nothing listens there
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")},
        "BALANCER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/postgres",
        "BALANCER_REDIS_URL": redis_url,
        "BALANCER_HOST": "127.0.0.1",
        "BALANCER_PORT": str(free_port()),
        "BALANCER_WORKERS": str(workers),
        "BALANCER_LOG_FORMAT": "console",
        "BALANCER_STARTUP_TIMEOUT_SECONDS": "2",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == STARTUP_FAILURE, result.stderr
    assert result.stderr.count("startup_waiting") >= 1, result.stderr
    assert result.stderr.count("startup_failed") >= 1, result.stderr
    assert "ConnectionRefusedError" in result.stderr
    assert "Traceback" not in result.stderr
