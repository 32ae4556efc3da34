"""Two instances of two workers each, on one sequence key: the union of their redirects
keeps the split, not each worker's or each instance's share of it.

Per worker, a sequence counted alone keeps the split just as well (its numbers are
consecutive too), so the split of any one worker proves nothing about sharing. What shows
it is the union while every worker is busy: with the split 999:1 and fresh keys, only the
number 999 goes to the origin among the first 1,000. Four workers sharing 1,600 requests
reach it exactly once between them (small leases: only the last blocks leased are left
unused, well above it, and 1,999 is out of reach); four workers counting alone reach about
400 each, two instances about 800 each, and never see it.
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack

import httpx
import pytest
from redis import Redis

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.redirects import VIDEO
from tests.support.servers import key_prefix, reset_config, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PERIOD = 1000  # the split PERIOD-1:1: the number PERIOD-1 is the first to go to the origin
# A lease lasts a worker 25 requests: long enough on a busy machine for the next one to land
# before it is needed (a worker that counts locally meanwhile could repeat a number's place
# in the split), short enough that the blocks left unused at the end lie far above PERIOD-1.
BLOCK = 25
TOTAL = 1600  # > PERIOD, while a worker's share (~400) and an instance's (~800) stay below it
WORKERS = 2


@pytest.fixture
def instances(database_url: str, redis_url: str) -> Iterator[tuple[list[ServerProcess], str]]:
    """Two fresh instances on one fresh key prefix (the sequence starts at 0)."""
    with key_prefix(redis_url) as key, ExitStack() as stack:
        servers = [
            stack.enter_context(
                running_server(
                    database_url, redis_url, workers=WORKERS, prefix=key, sequence_block=BLOCK
                )
            )
            for _ in range(2)
        ]
        reset_config(servers[0].url)
        yield servers, key


async def _serving(client: httpx.AsyncClient, version: int) -> None:
    for _ in range(1000):
        if (await client.get("/ready")).json()["config_version"] >= version:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"a worker did not come to version {version}")


@pytest.fixture
async def pinned(
    instances: tuple[list[ServerProcess], str],
) -> AsyncIterator[dict[tuple[int, int], httpx.AsyncClient]]:
    """A kept-alive connection to each worker of both instances ((instance, pid) -> client),
    each serving the split PERIOD-1:1."""
    servers, _ = instances
    async with httpx.AsyncClient(base_url=servers[0].url, headers=ADMIN) as admin:
        response = await admin.patch(
            "/config", json={"cdn_weight": PERIOD - 1, "origin_weight": 1, "server_rules": {}}
        )
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    clients: dict[tuple[int, int], httpx.AsyncClient] = {}
    async with AsyncExitStack() as stack:
        for attempt in range(400):
            index = attempt % len(servers)
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=servers[index].url, limits=httpx.Limits(max_connections=1)
                )
            )
            pid = (await client.get("/ready")).json()["worker"]
            clients.setdefault((index, pid), client)
            if len(clients) == 2 * WORKERS:
                break
        assert len(clients) == 2 * WORKERS, f"only {sorted(clients)} took connections"
        for client in clients.values():
            await _serving(client, version)
        yield clients


async def test_the_union_of_two_loaded_instances_keeps_the_split_exactly(
    pinned: dict[tuple[int, int], httpx.AsyncClient],
    instances: tuple[list[ServerProcess], str],
    redis_url: str,
) -> None:
    _, key = instances
    remaining = TOTAL
    served: Counter[tuple[int, int]] = Counter()
    origin: list[tuple[int, int]] = []

    async def load(worker: tuple[int, int], client: httpx.AsyncClient) -> None:
        # One budget for all: every worker stays busy until the last request.
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            response = await client.get("/", params={"video": VIDEO})
            assert response.status_code == 301, response.text
            served[worker] += 1
            if response.headers["location"] == VIDEO:
                origin.append(worker)

    await asyncio.gather(*(load(worker, client) for worker, client in pinned.items()))

    by_instance = Counter(dict.fromkeys(range(2), 0))
    for (index, _), count in served.items():
        by_instance[index] += count
    # Without this the test could not tell a key per instance from the shared one.
    assert max(by_instance.values()) < PERIOD, f"one instance took most requests: {served}"
    assert len(origin) == 1, (
        f"{len(origin)} of {TOTAL} requests went to the origin at {PERIOD - 1}:1 "
        f"(served by worker: {dict(served)}, to the origin by: {origin})"
    )
    redis = Redis.from_url(redis_url)
    try:
        leased = int(redis.get(key) or 0)
    finally:
        redis.close()
    # The numbers came from the one key: it moved by what was served (less what a worker
    # counted locally while a lease was late), plus at most two blocks a worker.
    assert 0 < leased <= TOTAL + 2 * 2 * WORKERS * BLOCK, leased
