import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from app.domain.split import ORIGIN, Split
from app.infrastructure.redis.sequence import RedisLeasedSequence
from tests.support.proxy import CuttableProxy

BLOCK = 100


class CountingRedis(Redis):
    """The real client, counting the commands it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: Counter[str] = Counter()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands[str(args[0]).upper()] += 1
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class SlowRedis(Redis):
    """The real client, with every command held back by `delay` first: leases arrive late."""

    delay = 0.0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        await asyncio.sleep(self.delay)
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class LateAnswerRedis(Redis):
    """The real client; the next `late` leases reach Redis, but their answers come too late."""

    late = 0
    leases = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if str(args[0]).upper() in ("EVAL", "INCRBY"):
            self.leases += 1
            if self.late:
                self.late -= 1
                await asyncio.sleep(1)
        return result


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


PERIOD = 7  # the split the tests count for, 6:1: prime to BLOCK, so a block moves its phase
SPLIT = Split(PERIOD - 1, 1)


async def started(
    redis: Redis, key: str, block: int = BLOCK, names: tuple[str, ...] = ("",)
) -> RedisLeasedSequence:
    """A started sequence, once its block ahead has been leased too."""
    sequence = RedisLeasedSequence(
        redis, key=key, block=block, timeout=0.3, period=lambda _: PERIOD
    )
    await sequence.start(names)
    await asyncio.sleep(0.1)
    return sequence


async def take(sequence: RedisLeasedSequence, count: int, key: str = "") -> list[int]:
    """`count` numbers at about 25 a millisecond; background leases run in between, as they
    do between real requests."""
    numbers = []
    for n in range(count):
        numbers.append(sequence.next(key))
        await asyncio.sleep(0.001 if n % 25 == 24 else 0)
    return numbers


async def wait_until(condition: Any, limit: float = 10) -> None:
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def is_run(numbers: list[int]) -> bool:
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


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


async def test_redis_is_asked_exactly_once_per_block(redis_url: str, sequence_key: str) -> None:
    client = cast(CountingRedis, CountingRedis.from_url(redis_url))
    sequence = await started(client, sequence_key)
    numbers = await take(sequence, 10 * BLOCK)
    await asyncio.sleep(0.1)
    blocks = {n // BLOCK for n in numbers if n >= 0}
    assert len(blocks) >= 9  # (a late lease under load may leave part of one to local counting)
    # each block started and the one leased ahead: one command each, nothing else
    assert sum(client.commands.values()) == len(blocks) + 1
    assert int(await client.get(sequence_key) or 0) == (len(blocks) + 1) * BLOCK
    await sequence.stop()
    await client.aclose()


async def test_each_named_sequence_has_its_own_key(redis: Redis, sequence_key: str) -> None:
    sequence = await started(redis, sequence_key, names=("", "s7"))
    assert await take(sequence, 3, key="s7") == [0, 1, 2]
    assert await take(sequence, 2) == [0, 1]
    assert await take(sequence, 1, key="s7") == [3]
    await asyncio.sleep(0.1)
    assert int(await redis.get(f"{sequence_key}:s7") or 0) == 2 * BLOCK
    assert int(await redis.get(sequence_key) or 0) == 2 * BLOCK
    await sequence.stop()


async def test_a_name_first_seen_in_traffic_counts_locally_until_its_first_lease(
    redis: Redis, sequence_key: str
) -> None:
    sequence = await started(redis, sequence_key)
    first = sequence.next("s9")  # no lease for s9 yet and next() never waits
    assert first < 0
    await asyncio.sleep(0.1)
    assert await take(sequence, 3, key="s9") == [0, 1, 2]
    await sequence.stop()


async def test_workers_never_share_a_number_while_one_of_them_is_cut_off_from_redis(
    redis: Redis, redis_url: str, sequence_key: str
) -> None:
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    cut_client = Redis.from_url(proxy.proxied(redis_url), socket_timeout=0.3)
    cut = await started(cut_client, sequence_key)
    others = [await started(redis, sequence_key) for _ in range(2)]
    workers = [cut, *others]
    handed_out: list[int] = []

    async def run(rounds: int) -> list[int]:
        """Interleaved traffic on every worker; the numbers of the cut-off one."""
        mine = []
        for _ in range(rounds):
            for worker in workers:
                numbers = await take(worker, 23)
                handed_out.extend(numbers)
                if worker is cut:
                    mine += numbers
        return mine

    await run(10)
    await proxy.cut()
    during = await run(40)  # the cut-off worker runs out of leased numbers; the others lease on
    assert len(handed_out) == len(set(handed_out))
    assert cut.degraded
    local = [n for n in during if n < 0]
    assert len(local) > 3 * BLOCK
    assert is_run(local)  # exact on its own: one run of consecutive positions

    await proxy.restore()
    await wait_until(lambda: not cut.degraded)
    after = await run(20)
    assert len([n for n in after if n >= 0]) >= 2 * BLOCK  # back on leased numbers
    assert len(handed_out) == len(set(handed_out))

    for worker in workers:
        await worker.stop()
    await cut_client.aclose()
    await proxy.close()


async def test_workers_never_share_a_number_when_a_lease_arrives_late(
    redis_url: str, sequence_key: str
) -> None:
    slow = cast(SlowRedis, SlowRedis.from_url(redis_url))
    late = await started(slow, sequence_key)
    fast = Redis.from_url(redis_url)
    others = [await started(fast, sequence_key) for _ in range(2)]
    slow.delay = 0.05  # well within the timeout: late, not failed
    numbers = []
    for _ in range(30):
        for worker in (late, *others):
            numbers += await take(worker, 37)
    assert len(numbers) == len(set(numbers))
    assert any(n < 0 for n in numbers)  # the late worker did run out and count locally
    assert not late.degraded
    for worker in (late, *others):
        await worker.stop()
    await slow.aclose()
    await fast.aclose()


def in_step(numbers: list[int]) -> bool:
    """Every number at the next place of the split's pattern after the one before."""
    return all((b - a) % PERIOD == 1 for a, b in itertools.pairwise(numbers))


async def test_a_local_run_goes_on_with_the_split_where_the_leased_numbers_stopped(
    redis_url: str, sequence_key: str
) -> None:
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    client = Redis.from_url(proxy.proxied(redis_url), socket_timeout=0.3)
    sequence = await started(client, sequence_key)
    runs: list[list[int]] = []
    # The first outage counts on for longer than the leases between the two move the key,
    # so the second run would reach numbers of the first were it not in a span of its own.
    for count in (8 * BLOCK, 3 * BLOCK):
        await take(sequence, 37)  # somewhere inside a block
        await proxy.cut()
        numbers = await take(sequence, count)  # the rest of two blocks, then local
        runs.append([n for n in numbers if n < 0])
        # the split's pattern runs on unbroken from the last leased number into the local run
        assert in_step(numbers)
        origins = [i for i, n in enumerate(numbers) if SPLIT.target(n) is ORIGIN]
        assert all(b - a == PERIOD for a, b in itertools.pairwise(origins))
        await proxy.restore()
        await wait_until(lambda: not sequence.degraded)
        assert sequence.next("") >= 0
    assert all(is_run(run) and len(run) > BLOCK for run in runs)
    assert not set(runs[0]) & set(runs[1])  # each outage counts in a span of its own
    await sequence.stop()
    await client.aclose()
    await proxy.close()


async def test_numbers_keep_flowing_while_redis_is_down_and_leases_resume_after(
    redis_url: str, sequence_key: str
) -> None:
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    client = Redis.from_url(proxy.proxied(redis_url), socket_timeout=0.3)
    sequence = await started(client, sequence_key)
    await proxy.cut()

    during = await take(sequence, 5 * BLOCK)
    assert during[: 2 * BLOCK] == list(range(2 * BLOCK))  # the leased block and the one ahead
    assert is_run(during[2 * BLOCK :])  # then counted on locally, still consecutive
    assert sequence.degraded

    await proxy.restore()
    await wait_until(lambda: not sequence.degraded)
    direct = Redis.from_url(redis_url)
    leased_before = int(await direct.get(sequence_key) or 0)
    after = await take(sequence, 2 * BLOCK)
    assert all(n >= 2 * BLOCK for n in after)  # new leases, past the blocks leased before
    assert int(await direct.get(sequence_key) or 0) > leased_before
    await sequence.stop()
    await client.aclose()
    await direct.aclose()
    await proxy.close()


async def test_worker_starts_degraded_when_redis_is_unreachable(sequence_key: str) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    sequence = await started(client, sequence_key)
    numbers = await take(sequence, 3)
    assert is_run(numbers)
    assert all(n < 0 for n in numbers)  # below every number a lease can hand out
    assert sequence.degraded
    await sequence.stop()
    await client.aclose()


async def test_a_lease_whose_answer_was_lost_leaves_no_hole(
    redis_url: str, sequence_key: str
) -> None:
    client = cast(LateAnswerRedis, LateAnswerRedis.from_url(redis_url))
    sequence = await started(client, sequence_key)
    # The next lease reaches Redis but its answer comes after the timeout: the retry must
    # get the same block back rather than lease another and skip a whole block.
    client.late = 1
    numbers = await take(sequence, 2 * BLOCK + 10)
    await wait_until(lambda: client.leases >= 4 and not sequence.degraded)
    numbers += await take(sequence, BLOCK)
    leased = [n for n in numbers if n >= 0]
    assert leased == list(range(len(leased)))
    await asyncio.sleep(0.1)
    blocks_taken = -(-len(leased) // BLOCK)
    assert int(await client.get(sequence_key) or 0) == (blocks_taken + 1) * BLOCK
    await sequence.stop()
    await client.aclose()


async def test_a_prepared_name_counts_on_leased_numbers_from_its_first_number(
    redis: Redis, sequence_key: str
) -> None:
    """What a worker does before it serves a version with a new region or rule: the new
    sequence's first numbers are leased ones, in step with the split from the first."""
    sequence = await started(redis, sequence_key)
    await sequence.prepare(("", "region:eu", "s7"))
    assert await take(sequence, 3, key="region:eu") == [0, 1, 2]
    assert await take(sequence, 2 * BLOCK, key="s7") == list(range(2 * BLOCK))
    await sequence.stop()


async def test_thousands_of_names_are_prepared_in_a_few_round_trips(
    redis_url: str, sequence_key: str
) -> None:
    client = cast(CountingRedis, CountingRedis.from_url(redis_url))
    sequence = await started(client, sequence_key)
    client.commands.clear()
    names = tuple(f"s{n}" for n in range(1200))
    await sequence.prepare(names)
    assert sum(client.commands.values()) == 3  # 500 names a call
    await sequence.prepare(names)  # leased already: nothing to ask
    assert sum(client.commands.values()) == 3
    started_names = ("s0", "s599", "s1199")
    assert [sequence.next(name) for name in started_names] == [0, 0, 0]
    await asyncio.sleep(0.1)  # the block ahead of each name started, one lease each
    assert sum(client.commands.values()) == 3 + len(started_names)
    assert int(await client.get(f"{sequence_key}:s1199") or 0) == 2 * BLOCK
    assert int(await client.get(f"{sequence_key}:s1198") or 0) == BLOCK
    await sequence.stop()
    await client.aclose()


async def test_preparing_against_a_silent_redis_gives_up_within_the_timeout(
    redis_url: str, sequence_key: str
) -> None:
    """Redis answers nothing: the version waits for its leases no longer than the Redis
    timeout (0.3 s here), then serves, its new sequences counting locally; while Redis is
    known to be down, the next version does not wait at all."""
    slow = cast(SlowRedis, SlowRedis.from_url(redis_url))
    sequence = await started(slow, sequence_key)
    slow.delay = 5
    loop = asyncio.get_running_loop()
    began = loop.time()
    await sequence.prepare(("region:eu",))
    assert loop.time() - began < 0.6
    assert sequence.degraded
    began = loop.time()
    await sequence.prepare(("region:us",))
    assert loop.time() - began < 0.05
    first = await take(sequence, 5, key="region:eu")
    assert all(n < 0 for n in first)
    assert is_run(first)
    slow.delay = 0
    await wait_until(lambda: not sequence.degraded)
    await wait_until(lambda: sequence.peek("region:eu") >= 0)
    assert sequence.next("region:eu") >= 0  # leased again once Redis answers
    await sequence.stop()
    await slow.aclose()
