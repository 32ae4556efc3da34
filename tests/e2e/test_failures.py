"""What viewers and admins get while PostgreSQL or Redis is away, and after it is back.

The tests under load own their PostgreSQL and Redis (tests/support/private_services.py) and stop
them for real while a fixed-rate load runs on two workers; the single-worker test of the
split's exact pattern takes Redis away through a proxy, so that it can still lease numbers
from the key behind the worker's back.
"""

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from uvicorn.config import STARTUP_FAILURE

from loadtest.steady import Answer, SteadyLoad
from loadtest.support import ServerProcess, free_port, serve_until_exit
from tests.support.app import ADMIN_TOKEN
from tests.support.private_services import PrivatePostgres, PrivateRedis
from tests.support.proxy import CuttableProxy
from tests.support.redirects import origin_pattern
from tests.support.servers import behind_redis_proxy, fresh_prefix, reset_config, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
# Small leases, so an outage outlasts the numbers a worker holds after a few hundred
# requests; not smaller, so that a block lasts far longer than a lease takes on a busy machine
# (a lease later than a block lasts is a local run, which would shift the pattern checked).
BLOCK = 250
# The load of the tests under load: fixed, well below what two workers serve on a shared core.
RATE = 500
WORKERS = 2
LOAD_BLOCK = 100  # 0.4 s of one worker's share of RATE: a lease each 0.4 s, numbers run out fast
ORIGIN_SHARE = 0.1  # BASELINE: cdn_weight 9, origin_weight 1


@dataclass
class Stack:
    client: httpx.AsyncClient
    redis: CuttableProxy
    sequence_key: str
    redis_url: str  # the real server, not the proxy

    async def sequence_value(self, add: int = 0) -> int:
        """The shared key (INCRBY `add` first: another instance's lease, for instance)."""
        return await sequence_value(self.redis_url, self.sequence_key, add)


async def sequence_value(redis_url: str, key: str, add: int = 0) -> int:
    client = Redis.from_url(redis_url)
    try:
        return int(await client.incrby(key, add))
    finally:
        await client.aclose()


@pytest.fixture
async def stack(database_url: str, redis_url: str, sequence_key: str) -> AsyncIterator[Stack]:
    async with (
        behind_redis_proxy(
            database_url,
            redis_url,
            sequence_key,
            workers=1,
            sequence_block=BLOCK,
            resync_seconds=0.5,
        ) as (server, redis),
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        yield Stack(client, redis, sequence_key, redis_url)


@dataclass
class Private:
    postgres: PrivatePostgres
    redis: PrivateRedis


@pytest.fixture(scope="module")
def private() -> Iterator[Private]:
    # Not under pytest's temporary folder: every pytest session that starts makes
    # /tmp/pytest-of-<user> private to the user again, and PostgreSQL runs as another user
    # when we are root (pgserver's rule), so it would lose its way to its data midway.
    folder = Path(tempfile.mkdtemp(prefix="balancer-faults-"))
    postgres = PrivatePostgres(folder)
    redis = PrivateRedis(folder / "redis")
    try:
        redis.start()
        yield Private(postgres, redis)
    finally:
        redis.kill()
        postgres.close()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Balancer:
    server: ServerProcess
    sequence_key: str

    def load(self) -> SteadyLoad:
        return SteadyLoad(
            "127.0.0.1",
            self.server.port,
            f"/?video={quote(VIDEO, safe='')}",
            rate=RATE,
            workers=WORKERS,
        )


@pytest.fixture
def balancer(private: Private) -> Iterator[Balancer]:
    """Two workers on the private servers (up again if a test before stopped in an outage)."""
    private.postgres.start()
    private.redis.start()
    sequence_key = fresh_prefix("balancer-faults")
    with running_server(
        private.postgres.url,
        private.redis.url,
        workers=WORKERS,
        prefix=sequence_key,  # in the private Redis, gone with it
        sequence_block=LOAD_BLOCK,
        log_format="json",
    ) as server:
        reset_config(server.url)
        yield Balancer(server, sequence_key)


async def every_worker(
    url: str, workers: set[int], ready: Callable[[dict[str, Any]], bool], within: float
) -> dict[int, float]:
    """When each of `workers` first answered `/ready` with a body `ready` accepts. Each probe
    is a new connection (the kernel picks the worker), a burst at a time until all have."""
    seen: dict[int, float] = {}
    last: dict[int, object] = {}
    deadline = time.monotonic() + within
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=2) as client:
        while time.monotonic() < deadline:
            answers = await asyncio.gather(*(client.get("/ready") for _ in range(8)))
            for answer in answers:
                body = answer.json()
                last[body["worker"]] = body
                if body["worker"] in workers and ready(body):
                    seen.setdefault(body["worker"], time.monotonic())
            if set(seen) == workers:
                return seen
            await asyncio.sleep(0.05)
    raise AssertionError(f"not every worker of {workers} got there in {within} s: {last}")


def failed(answers: Sequence[Answer]) -> list[Answer]:
    return [answer for answer in answers if answer.status != 301]


def timeline(answers: Sequence[Answer], start: float, **events: float) -> str:
    """The failed answers and the events of a run, in seconds from `start`: what a failure
    message needs to tell which phase went wrong."""
    marks = [f"{name} at {at - start:.2f} s" for name, at in events.items()]
    bad = [
        f"{answer.sent - start:.2f} s: {answer.status or 'no answer'} from {answer.worker} "
        f"after {answer.latency:.3f} s"
        for answer in failed(answers)
    ]
    return "; ".join(marks) + f"; {len(bad)} failed: " + ", ".join(bad[:20])


def sent_between(answers: Sequence[Answer], start: float, end: float) -> list[Answer]:
    return [answer for answer in answers if start <= answer.sent < end]


def origin_share(answers: Sequence[Answer]) -> float:
    return sum(answer.location == VIDEO for answer in answers) / len(answers)


def split_error(answers: Sequence[Answer]) -> float:
    """How far the achieved origin share is from the configured one, relative to it."""
    return abs(origin_share(answers) - ORIGIN_SHARE) / ORIGIN_SHARE


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
    # 3,000 redirects against the 2 blocks (500 numbers) the worker held: all but those
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
    recovered = await origin_pattern(stack.client, 2000)
    await asyncio.sleep(0.3)  # the lease fetched in the background lands

    # Numbers from the leases after `before + shift`, not the local count going on.
    assert origins_at(recovered, (9 - shift) % 10)
    # Every one of the 2,000 came from a lease again: the key moved by them, give or take the
    # blocks the worker held (leased before `after_outage`, or fetched ahead at the end).
    assert abs(await stack.sequence_value() - after_outage - 2000) <= 2 * BLOCK


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
    result = serve_until_exit(environ)

    assert result.returncode == STARTUP_FAILURE, result.stderr
    assert result.stderr.count("startup_waiting") >= 1, result.stderr
    assert result.stderr.count("startup_failed") >= 1, result.stderr
    assert "ConnectionRefusedError" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_redirects_never_fail_and_the_split_holds_when_redis_is_killed_under_load(
    balancer: Balancer, private: Private
) -> None:
    load = balancer.load()
    async with load:
        await asyncio.sleep(5)
        workers = load.workers
        killed = time.monotonic()
        private.redis.kill()
        degraded = await every_worker(
            balancer.server.url,
            workers,
            lambda body: (
                body["status"] == "degraded" and "counting locally" in body["checks"]["redis"]
            ),
            within=5,
        )
        await asyncio.sleep(6)
        await asyncio.to_thread(private.redis.start)
        back = time.monotonic()
        # ok once a lease succeeded on that worker, not on a ping
        resumed = await every_worker(
            balancer.server.url, workers, lambda body: body["checks"]["redis"] == "ok", within=5
        )
        await asyncio.sleep(6)
    answers = load.answers
    leased = await sequence_value(private.redis.url, balancer.sequence_key)

    outage = sent_between(answers, killed, back)
    after_resume = sent_between(answers, max(resumed.values()), float("inf"))
    since_back = sent_between(answers, back, float("inf"))
    error = split_error(answers)
    print(
        f"\nredis killed under load: {len(answers)} requests sent at {RATE}/s on {len(workers)} "
        f"workers, 1 fault (SIGKILL, {back - killed:.1f} s), {len(failed(answers))} failed, "
        f"{len(outage)} during the outage; degraded after "
        f"{max(degraded.values()) - killed:.2f} s, leases again "
        f"{max(resumed.values()) - back:.2f} s after Redis was back; split error "
        f"{error:.3%} (origin share {origin_share(answers):.5f} for {ORIGIN_SHARE}); "
        f"{leased} numbers leased since, {len(after_resume)} requests after every worker resumed"
    )
    assert len(workers) == WORKERS
    assert len(answers) >= 6000  # several thousand (about 9,000 at the full rate)
    assert not failed(answers), timeline(answers, load.started, killed=killed, back=back)
    for worker in workers:  # each ran out of leased numbers and counted locally
        assert sum(answer.worker == worker for answer in outage) > 2 * LOAD_BLOCK
    assert max(resumed.values()) - back < 4  # the README says within 2 s
    # The requests after the return came from leases again (from a key that starts from
    # nothing: Redis lost it), give or take the blocks each worker holds.
    assert 0.9 * len(after_resume) <= leased <= len(since_back) + 2 * WORKERS * LOAD_BLOCK
    assert error < 0.01


@pytest.mark.slow
async def test_redirects_flow_on_the_last_config_and_writes_wait_when_postgres_stops_under_load(
    balancer: Balancer, private: Private
) -> None:
    old_host, outage_host, new_host = (
        "cdn.example.com",
        "cdn-outage.example.com",
        "cdn-new.example.com",
    )
    async with httpx.AsyncClient(base_url=balancer.server.url, headers=ADMIN, timeout=5) as admin:
        before = (await admin.get("/config")).json()
        assert before["cdn_host"] == old_host
        load = balancer.load()
        async with load:
            await asyncio.sleep(3)
            workers = load.workers
            stopped = time.monotonic()
            await asyncio.to_thread(private.postgres.stop)
            await every_worker(
                balancer.server.url,
                workers,
                lambda body: (
                    body["status"] == "degraded"
                    and body["checks"]["postgres"].startswith("unreachable")
                ),
                within=5,
            )
            read = await admin.get("/config")
            write = await admin.patch("/config", json={"cdn_host": outage_host})
            invalid = await admin.patch("/config", json={"cdn_weight": -5})
            await asyncio.sleep(3)
            await asyncio.to_thread(private.postgres.start)
            back = time.monotonic()
            # A change right after the return: the workers' listeners may not be back yet.
            patching = time.monotonic()
            change = await admin.patch("/config", json={"cdn_host": new_host})
            changed = time.monotonic()
            await asyncio.sleep(3)
    answers = load.answers

    assert read.status_code == 200
    assert read.json()["version"] == before["version"]
    assert write.status_code == 503, write.text
    assert write.headers["content-type"] == "application/problem+json"
    assert write.json()["code"] == "storage-unavailable"
    assert invalid.status_code == 422
    assert change.status_code == 200, change.text
    assert change.json()["version"] == before["version"] + 1  # nothing was written meanwhile
    connection = await asyncpg.connect(private.postgres.url)
    try:
        assert not await connection.fetchval(
            "SELECT count(*) FROM config_versions WHERE cdn_host = $1", outage_host
        )
    finally:
        await connection.close()

    assert not failed(answers), timeline(
        answers, load.started, stopped=stopped, back=back, changed=changed
    )

    def host(answer: Answer) -> str:
        return answer.location.split("/")[2] if answer.location != VIDEO else ""

    # When each worker last sent a request out on the old host, counted from the change.
    lag = {
        worker: max(
            answer.sent
            for answer in answers
            if answer.worker == worker and host(answer) == old_host
        )
        - changed
        for worker in workers
    }
    outage = sent_between(answers, stopped, back)
    print(
        f"\npostgres stopped under load: {len(answers)} requests sent at {RATE}/s on "
        f"{len(workers)} workers, 1 fault (pg_ctl stop -m fast, {back - stopped:.1f} s), "
        f"{len(failed(answers))} failed, {len(outage)} during the outage; a change sent "
        f"{patching - back:.2f} s after the return, answered in {changed - patching:.3f} s: "
        "the last request on the old host went out "
        + ", ".join(f"{seconds + changed - patching:.3f} s" for seconds in lag.values())
        + " after it was sent"
    )
    assert len(workers) == WORKERS
    assert {host(answer) for answer in sent_between(answers, 0, changed - 1)} <= {old_host, ""}
    assert all(host(answer) != outage_host for answer in answers)
    assert len(outage) > RATE  # redirects kept flowing on the last config
    for worker in workers:
        assert any(answer.worker == worker and host(answer) == new_host for answer in answers)
    assert max(lag.values()) < 1
