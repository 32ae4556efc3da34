"""Both workers count on one sequence in Redis: the split is global, not one per process.

A split that is right to within a few requests proves little on its own: two workers
counting alone, or both degraded, are just as close. These tests read the shared Redis key
and watch each worker's requests in the order it served them.
"""

import asyncio
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from redis import Redis

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.redirects import CLOSE, VIDEO, origin_pattern, redirect_hosts
from tests.support.servers import key_prefix, reset_config, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKERS = 2
# Small leases, so that a few thousand requests take dozens of them, yet each lasts a
# worker ~100 ms: leases arrive in time even on a busy machine. With the split BLOCK-1:1, the
# number n goes to the origin exactly when n % BLOCK == BLOCK - 1, and every lease is a block
# [k * BLOCK, (k + 1) * BLOCK): the origin answers show where in its block each number lay.
BLOCK = 100


@dataclass
class SharedServer:
    process: ServerProcess
    redis_url: str
    key: str

    def sequence_value(self) -> int:
        client = Redis.from_url(self.redis_url)
        try:
            return int(client.get(self.key) or 0)
        finally:
            client.close()

    async def settled_sequence_value(self) -> int:
        """The key once the leases the workers fetch in the background have landed."""
        value = self.sequence_value()
        for _ in range(50):
            await asyncio.sleep(0.1)
            latest = self.sequence_value()
            if latest == value:
                return value
            value = latest
        raise AssertionError("the sequence key kept moving with no requests")


@pytest.fixture(scope="module")
def shared(database_url: str, redis_url: str) -> Iterator[SharedServer]:
    with (
        key_prefix(redis_url) as key,
        running_server(
            database_url, redis_url, workers=WORKERS, prefix=key, sequence_block=BLOCK
        ) as process,
    ):
        reset_config(process.url)
        yield SharedServer(process, redis_url, key)


@pytest.fixture
async def one_in_a_block(shared: SharedServer) -> None:
    """The split BLOCK-1:1 with no server rules, served by both workers."""
    async with httpx.AsyncClient(base_url=shared.process.url) as client:
        response = await client.patch(
            "/config",
            json={"cdn_weight": BLOCK - 1, "origin_weight": 1, "server_rules": {}},
            headers=ADMIN,
        )
        assert response.status_code == 200, response.text
        version = response.json()["version"]
        for _ in range(200):
            seen: dict[int, int] = {}
            for _ in range(40):
                body = (await client.get("/ready", headers=CLOSE)).json()
                seen[body["worker"]] = body["config_version"]
                if len(seen) == WORKERS:
                    break
            if len(seen) == WORKERS and set(seen.values()) == {version}:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"both workers did not come to version {version}: {seen}")


@pytest.fixture
async def pinned(shared: SharedServer) -> AsyncIterator[dict[int, httpx.AsyncClient]]:
    """One kept-alive connection to each worker (its pid -> the client).

    A connection stays with the worker that accepted it, so each client's requests are
    served by one worker, one after another, in the order they are sent.
    """
    clients: dict[int, httpx.AsyncClient] = {}
    async with AsyncExitStack() as stack:
        for _ in range(100):
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=shared.process.url, limits=httpx.Limits(max_connections=1)
                )
            )
            clients.setdefault((await client.get("/ready")).json()["worker"], client)
            if len(clients) == WORKERS:
                break
        assert len(clients) == WORKERS, f"only worker(s) {sorted(clients)} took connections"
        yield clients


async def until_origin(client: httpx.AsyncClient) -> None:
    """Requests until one goes to the origin: then the worker's block is used up."""
    for _ in range(3 * BLOCK):
        if (await origin_pattern(client, 1))[0]:
            return
    raise AssertionError(f"no origin answer in {3 * BLOCK} requests at {BLOCK - 1}:1")


@pytest.mark.usefixtures("one_in_a_block")
async def test_key_moves_by_the_requests_of_both_workers_under_concurrent_load(
    shared: SharedServer,
) -> None:
    before = await shared.settled_sequence_value()
    hosts = await redirect_hosts(shared.process.url, 8 * 500)
    moved = await shared.settled_sequence_value() - before

    assert len(hosts) == 4000
    # Each worker holds at most two blocks it has not used up, before and after.
    assert abs(moved - 4000) <= 2 * WORKERS * BLOCK
    assert abs(hosts.count("s1.origin-cluster") - 4000 // BLOCK) <= 2 * WORKERS


@pytest.mark.usefixtures("one_in_a_block")
async def test_no_number_is_handed_out_twice_across_workers(
    shared: SharedServer, pinned: dict[int, httpx.AsyncClient]
) -> None:
    """Every number each worker handed out came from a block it leased from the shared key,
    whole blocks in order, and the key moved by exactly the blocks they started: so each
    number was leased once, and INCRBY never leases a number twice.

    Per worker, after a request that went to the origin (its block is used up), the i-th
    next request must go to the origin exactly when i % BLOCK == BLOCK - 1: a number that did
    not come from a fresh leased block in turn (a worker counting on by itself, or jumping
    between blocks) moves that phase. A run of whole blocks counted without a lease keeps
    the phase but not the key: each worker must have taken exactly one lease per BLOCK
    requests.
    """
    clients = list(pinned.values())
    for client in clients:
        await until_origin(client)
    before = await shared.settled_sequence_value()

    per_worker = 10 * BLOCK
    answers = await asyncio.gather(*(origin_pattern(client, per_worker) for client in clients))
    # The last lease may land late; a number counted locally at the very end shows only in
    # the requests that follow it.
    await shared.settled_sequence_value()
    tails = await asyncio.gather(*(origin_pattern(client, BLOCK) for client in clients))
    moved = await shared.settled_sequence_value() - before

    for worker, main, tail in zip(pinned, answers, tails, strict=True):
        served = main + tail
        wrong = [i for i, origin in enumerate(served) if origin != (i % BLOCK == BLOCK - 1)]
        assert not wrong, f"worker {worker}: numbers out of their block at requests {wrong[:10]}"
    leases = sum(math.ceil((per_worker + BLOCK) / BLOCK) for _ in clients)
    assert moved == leases * BLOCK


FRESH_CDN = "cdn-fresh.example.com"


@pytest.fixture
async def admin(shared: SharedServer) -> AsyncIterator[httpx.AsyncClient]:
    """Admin writes; afterwards no regions or rules are left for the other tests."""
    async with httpx.AsyncClient(base_url=shared.process.url, headers=ADMIN) as client:
        yield client
        response = await client.patch("/config", json={"regions": [], "server_rules": {}})
        assert response.status_code == 200, response.text


async def serving(client: httpx.AsyncClient, version: int) -> None:
    for _ in range(500):
        if (await client.get("/ready")).json()["config_version"] >= version:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"the worker did not come to version {version}")


async def create_fresh(admin: httpx.AsyncClient, kind: str) -> tuple[str, int]:
    """A new region (matching 127.0.0.1) or server rule, split 1:1, counted on a sequence
    key no worker has seen; the video it applies to and the version that has it."""
    name = f"fresh-{uuid.uuid4().hex[:12]}"
    if kind == "region":
        response = await admin.patch(
            "/config",
            json={
                "regions": [
                    {
                        "name": name,
                        "networks": ["127.0.0.0/8"],
                        "cdn_hosts": [{"host": FRESH_CDN, "weight": 1}],
                        "cdn_weight": 1,
                        "origin_weight": 1,
                    }
                ]
            },
            headers=CLOSE,
        )
        video = VIDEO
    else:
        response = await admin.put(
            f"/config/server-rules/{name}",
            json={
                "cdn_weight": 1,
                "origin_weight": 1,
                "cdn_hosts": [{"host": FRESH_CDN, "weight": 1}],
            },
            headers=CLOSE,
        )
        video = f"http://{name}.origin-cluster/video/1488/x.m3u8"
    assert response.status_code == 200, response.text
    return video, response.json()["version"]


async def split_of_first(client: httpx.AsyncClient, video: str, count: int) -> tuple[int, int]:
    """(to the CDN, to the origin) of the next `count` redirects of `video` on `client`."""
    cdn = 0
    for _ in range(count):
        response = await client.get("/", params={"video": video})
        assert response.status_code == 301, response.text
        cdn += urlsplit(response.headers["location"]).netloc == FRESH_CDN
    return cdn, count - cdn


@pytest.mark.parametrize("kind", ["region", "server rule"])
async def test_a_new_region_or_rule_is_exact_from_its_first_request_on_every_worker(
    admin: httpx.AsyncClient, pinned: dict[int, httpx.AsyncClient], kind: str
) -> None:
    """40 requests right after a 1:1 region or rule is created: 20 and 20 on each worker,
    20 times over. A sequence counted locally until its first lease arrives would restart
    the split's pattern when it does: 21:19 whenever an odd number came before it."""
    splits = []
    for _ in range(20):
        video, version = await create_fresh(admin, kind)
        for client in pinned.values():
            await serving(client, version)
        splits += await asyncio.gather(
            *(split_of_first(client, video, 40) for client in pinned.values())
        )
    assert splits == [(20, 20)] * 20 * WORKERS, Counter(splits)
