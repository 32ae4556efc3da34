import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.infrastructure.redis.sequence import RedisLeasedSequence
from tests.proxy import CuttableProxy

BLOCK = 100


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def started(redis: Redis, key: str, block: int = BLOCK) -> RedisLeasedSequence:
    sequence = RedisLeasedSequence(redis, key=key, block=block, timeout=0.3)
    await sequence.start()
    return sequence


async def take(sequence: RedisLeasedSequence, count: int, key: str = "") -> list[int]:
    numbers = []
    for _ in range(count):
        numbers.append(sequence.next(key))
        await asyncio.sleep(0)  # let background leases run, as between real requests
    return numbers


async def test_one_worker_hands_out_consecutive_numbers_across_blocks(
    redis: Redis, sequence_key: str
) -> None:
    sequence = await started(redis, sequence_key)
    assert await take(sequence, 3 * BLOCK + 7) == list(range(3 * BLOCK + 7))
    await sequence.stop()


async def test_workers_sharing_a_key_never_hand_out_the_same_number(
    redis: Redis, sequence_key: str
) -> None:
    workers = [await started(redis, sequence_key) for _ in range(3)]
    numbers = [n for _ in range(5) for worker in workers for n in await take(worker, 37)]
    assert len(numbers) == len(set(numbers))
    for worker in workers:
        await worker.stop()


async def test_redis_is_asked_once_per_block_not_once_per_number(
    redis: Redis, sequence_key: str
) -> None:
    sequence = await started(redis, sequence_key)
    await take(sequence, 10 * BLOCK)
    leased = int(await redis.get(sequence_key) or 0)
    assert leased <= 12 * BLOCK  # ten blocks handed out, at most the next two leased ahead
    await sequence.stop()


async def test_each_named_sequence_has_its_own_key(redis: Redis, sequence_key: str) -> None:
    sequence = await started(redis, sequence_key)
    assert await take(sequence, 3, key="s7") == [0, 1, 2]
    assert await take(sequence, 2) == [0, 1]
    await asyncio.sleep(0.2)  # a name seen for the first time is leased in the background
    assert await take(sequence, 1, key="s7") == [0]
    assert int(await redis.get(f"{sequence_key}:s7") or 0) >= BLOCK
    await sequence.stop()


async def test_numbers_keep_flowing_while_redis_is_down_and_leases_resume_after(
    redis_url: str, sequence_key: str
) -> None:
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    client = Redis.from_url(proxy.proxied(redis_url), socket_timeout=0.3)
    sequence = await started(client, sequence_key)
    await proxy.cut()

    during = await take(sequence, 5 * BLOCK)
    assert during == list(range(5 * BLOCK))  # counted on locally, still consecutive
    assert sequence.degraded

    await proxy.restore()
    for _ in range(200):
        await asyncio.sleep(0.05)
        if not sequence.degraded:
            break
    assert not sequence.degraded
    leased_before = int(await Redis.from_url(redis_url).get(sequence_key) or 0)
    await take(sequence, 2 * BLOCK)
    leased_after = int(await Redis.from_url(redis_url).get(sequence_key) or 0)
    assert leased_after > leased_before
    await sequence.stop()
    await client.aclose()
    await proxy.cut()


async def test_worker_starts_degraded_when_redis_is_unreachable(sequence_key: str) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    sequence = await started(client, sequence_key)
    assert await take(sequence, 3) == [0, 1, 2]
    assert sequence.degraded
    await sequence.stop()
    await client.aclose()
