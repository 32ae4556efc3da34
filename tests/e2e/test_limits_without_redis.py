"""Rate limits on two workers while their Redis goes away mid-run, and comes back.

What the README promises for Redis down: settlement fails, each worker goes on enforcing the
limit from its own buckets (a client spread over W workers gets up to W times its limit),
`/ready` says `"rate_limits": "Redis unreachable: limits enforced per worker"` (status
`degraded`, still 200), nobody gets an error for it, and settlement resumes by itself.

The limits here barely refill (one token in 1,000 s), so every bound is a count of answers,
whatever the time the machine takes to send them.
"""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.private_services import PrivateRedis
from tests.support.redirects import VIDEO
from tests.support.servers import fresh_prefix, reset_config, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKERS = 2
CAPACITY = 5
REFILL = 0.001
PER_WORKER = "Redis unreachable: limits enforced per worker"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def server(database_url: str, redis: PrivateRedis) -> Iterator[ServerProcess]:
    """Trusts X-Forwarded-For from 127.0.0.1: each test names its clients."""
    with running_server(
        database_url,
        redis.url,
        workers=WORKERS,
        prefix=fresh_prefix(),
        forwarded_allow_ips="127.0.0.1",
    ) as process:
        reset_config(process.url)
        yield process


@pytest.fixture
async def pinned(server: ServerProcess) -> AsyncIterator[dict[int, httpx.AsyncClient]]:
    """A kept-alive connection to each worker, by pid."""
    clients: dict[int, httpx.AsyncClient] = {}
    async with AsyncExitStack() as stack:
        for _ in range(200):
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=server.url, limits=httpx.Limits(max_connections=1), timeout=10
                )
            )
            clients.setdefault((await client.get("/ready")).json()["worker"], client)
            if len(clients) == WORKERS:
                break
        assert len(clients) == WORKERS, f"only worker(s) {sorted(clients)} took connections"
        yield clients


async def limit(client: httpx.AsyncClient, client_id: str) -> None:
    """A limit of CAPACITY for `client_id`."""
    response = await client.post(
        "/limits",
        json={"client_id": client_id, "capacity": CAPACITY, "refill_per_second": REFILL},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text  # the workers learn it by NOTIFY


async def statuses(
    pinned: dict[int, httpx.AsyncClient], client_id: str, rounds: int
) -> dict[int, Counter[int]]:
    """`rounds` redirects as `client_id` on each worker in turn: the statuses per worker."""
    seen: dict[int, Counter[int]] = {pid: Counter() for pid in pinned}
    headers = {"X-Forwarded-For": client_id}
    for _ in range(rounds):
        for pid, client in pinned.items():
            response = await client.get("/", params={"video": VIDEO}, headers=headers)
            seen[pid][response.status_code] += 1
    return seen


async def until_limited(pinned: dict[int, httpx.AsyncClient], client_id: str) -> None:
    """Requests as `client_id` until every worker answers it 429."""
    for _ in range(200):
        seen = await statuses(pinned, client_id, 1)
        if all(set(counts) == {429} for counts in seen.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{client_id} was not limited on every worker")


async def ready(pinned: dict[int, httpx.AsyncClient]) -> dict[int, httpx.Response]:
    return {pid: await client.get("/ready") for pid, client in pinned.items()}


async def until_checks(
    pinned: dict[int, httpx.AsyncClient],
    wanted: Callable[[dict[str, str]], bool],
    seconds: float = 30,
) -> None:
    """Until `/ready`'s checks are `wanted` on every worker, each answering 200 meanwhile
    (polled, not timed: a worker learns Redis is gone at its next settlement)."""
    bodies: dict[int, object] = {}
    for _ in range(int(seconds / 0.1)):
        answers = await ready(pinned)
        assert all(answer.status_code == 200 for answer in answers.values()), answers
        bodies = {pid: answer.json() for pid, answer in answers.items()}
        if all(wanted(answer.json()["checks"]) for answer in answers.values()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every worker came to the checks wanted: {bodies}")


async def test_limits_hold_per_worker_while_redis_is_gone_and_settle_again_when_it_is_back(
    pinned: dict[int, httpx.AsyncClient], redis: PrivateRedis
) -> None:
    admin = next(iter(pinned.values()))
    spent, fresh, later = "198.51.100.10", "198.51.100.11", "198.51.100.12"
    for client_id in (spent, fresh, later):
        await limit(admin, client_id)
    await until_limited(pinned, spent)  # its CAPACITY spent, settled with Redis

    # Mid-run: the spent client keeps asking while Redis is killed under it.
    load = asyncio.create_task(statuses(pinned, spent, 150))
    await asyncio.sleep(0.05)
    redis.kill()
    during = await load
    assert all(set(counts) <= {301, 429} for counts in during.values()), during
    # Its workers knew the balance was spent: they go on refusing it without Redis. A
    # worker may hold a settlement's worth of credit (k = 1 here) it had not spent yet.
    assert all(counts[301] <= 1 for counts in during.values()), during

    # A client first seen without Redis: its limit per worker, at most W times it in all,
    # refused on every worker once that is spent, and never an error.
    seen = await statuses(pinned, fresh, 3 * CAPACITY)
    assert all(set(counts) <= {301, 429} for counts in seen.values()), seen
    assert all(1 <= counts[301] <= CAPACITY + 1 for counts in seen.values()), seen
    assert all(counts[429] > 0 for counts in seen.values()), seen
    assert CAPACITY <= sum(counts[301] for counts in seen.values()) <= WORKERS * (CAPACITY + 1)

    # What it was admitted could not be settled: each worker says so (once it has tried).
    await until_checks(pinned, lambda checks: checks.get("rate_limits") == PER_WORKER)

    # Back: settlement resumes by itself, and a client is held to its limit once in all.
    # (A worker's rate_limits check turns ok at its next settlement, so after traffic.)
    redis.start()
    await until_checks(pinned, lambda checks: checks["redis"] == "ok")
    seen = await statuses(pinned, later, 3 * CAPACITY)
    admitted = sum(counts[301] for counts in seen.values())
    # The first burst (each worker's fresh bucket before the first settlement) is at most
    # (W - 1) * capacity above the limit, and the debt is paid back: the total stays bound.
    assert CAPACITY <= admitted <= WORKERS * (CAPACITY + 1), seen
    await until_limited(pinned, later)
    await until_checks(pinned, lambda checks: all(state == "ok" for state in checks.values()))
