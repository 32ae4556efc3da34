import asyncio
import secrets
from collections.abc import Callable, Iterable

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.infrastructure.backend_errors import backend_errors

log = structlog.get_logger(__name__)

UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)
# Redis background duties (leases here, limit settlement) retry from this, doubling to that.
RETRY_MIN_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0
# Local runs lie below zero, each shifted by its own multiple of (period x _LOCAL_UNIT):
# larger than any leased number, so no two runs and no lease share a number.
_LOCAL_UNIT = 1 << 64
_RUNS_PER_WORKER = 1 << 16
_LEASE_RECORD_SECONDS = 600

# One lease is one round trip. The worker's last lease is recorded under its own key, so
# a retry of a lease whose answer was lost (a timeout after Redis had applied it) gets the
# same block back instead of leasing another and leaving a whole block unused.
_LEASE = """
local record = redis.call('GET', KEYS[2])
if record then
  local lease, finish = string.match(record, '^(%d+) (%d+)$')
  if lease == ARGV[2] then return tonumber(finish) end
end
local finish = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. string.format('%d', finish), 'EX', ARGV[3])
return finish
"""
# The first block of many sequences in one round trip: `_LEASE` once per pair of KEYS (the
# sequence, the worker's lease record), ARGV[3 + i] the lease number of the i-th pair.
_LEASE_FIRST = """
local finishes = {}
for i = 1, #KEYS / 2 do
  local key, record, number = KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 + i]
  local stored = redis.call('GET', record)
  local finish = nil
  if stored then
    local lease, done = string.match(stored, '^(%d+) (%d+)$')
    if lease == number then finish = tonumber(done) end
  end
  if not finish then
    finish = redis.call('INCRBY', key, ARGV[1])
    redis.call('SET', record, number .. ' ' .. string.format('%d', finish), 'EX', ARGV[2])
  end
  finishes[i] = finish
end
return finishes
"""
# Sequences per `_LEASE_FIRST` call: each call's arguments are packed by redis-py in Python
# on the event loop (about 2 us each), so a config with 10,000 server rules is leased in
# calls of a millisecond or two rather than one of 40 ms.
_LEASE_BATCH = 500


class _Counter:
    """One named sequence in this worker: the block being handed out and the next one."""

    __slots__ = (
        "end",
        "fetching",
        "key",
        "lease",
        "local",
        "name",
        "next_value",
        "pending",
        "record",
    )

    def __init__(self, name: str, key: str, record: str) -> None:
        self.name = name
        self.key = key
        self.record = record
        self.next_value = 0
        self.end = 0
        self.pending: tuple[int, int] | None = None
        self.fetching = False
        self.local = False
        self.lease = 0


class RedisLeasedSequence:
    """Sequence numbers shared by every worker of every instance, without a round trip each.

    Each named sequence is one Redis key. A worker leases blocks of numbers from it and
    hands them out from memory; the next block is leased in the background as soon as the
    current one is started, so `next` never waits. When a worker has no leased number left
    (its next lease is late, or Redis is unreachable) it counts on locally, in step with the
    numbers it would have gone on to: the split only looks at a number modulo its period
    (`period(name)`, cdn_weight + origin_weight), so a local run shifted by a multiple of
    the period continues the split's pattern unbroken. The shift puts each local run below
    zero, in a span of its own, so no number is ever handed out twice: not by two workers,
    not by a lease and a local run. It returns to leased blocks as soon as one arrives.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key: str,
        block: int,
        timeout: float,
        period: Callable[[str], int] = lambda _: 1,
    ) -> None:
        self._redis = redis
        self._key = key
        self._block = block
        self._timeout = timeout
        self._period = period
        self._worker = secrets.randbits(47)
        self._local_runs = 0
        self._counters: dict[str, _Counter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.degraded = False

    def redis_key(self, name: str) -> str:
        return f"{self._key}:{name}" if name else self._key

    async def start(self, names: tuple[str, ...] = ("",)) -> None:
        """Lease the first block of each named sequence and the block ahead of it before
        traffic arrives."""
        await self.prepare(names)
        for name in names:
            counter = self._counters[name]
            if counter.pending is not None and not counter.end:
                self._advance(counter)
            else:
                self._prefetch(counter)

    async def prepare(self, names: Iterable[str]) -> None:
        """Lease the first block of each named sequence this worker holds no numbers of yet,
        a few hundred per round trip, so that a region or rule about to be served counts on
        leased numbers from its first request: its local count would start at the split's
        first place wherever its lease will start. The block ahead is leased once the first
        number is taken. Gives up after the Redis timeout (for all of them) and at once while
        Redis is known to be unreachable: the new sequences then count locally from their
        first request.
        """
        fresh = []
        for name in dict.fromkeys(names):
            counter = self._counter(name)
            if not (counter.fetching or counter.end or counter.pending or counter.local):
                fresh.append(counter)
        if self.degraded or not fresh:
            return
        for counter in fresh:
            counter.fetching = True  # no background lease of its own meanwhile
        waiting = fresh
        try:
            # One timeout for all the batches: the version waits that long at most.
            async with asyncio.timeout(self._timeout):
                while waiting:
                    batch = waiting[:_LEASE_BATCH]
                    finishes = await self._lease_first(batch)
                    waiting = waiting[_LEASE_BATCH:]
                    for counter, finish in zip(batch, finishes, strict=True):
                        counter.fetching = False
                        self._first_block(counter, (int(finish) - self._block, int(finish)))
        except UNREACHABLE as error:
            backend_errors.record("redis", error)
            self._set_degraded(True, error)
        finally:
            for counter in waiting:
                counter.fetching = False
                if counter.local:  # it ran out meanwhile: its lease is retried as usual
                    self._prefetch(counter)

    def _first_block(self, counter: _Counter, block: tuple[int, int]) -> None:
        """Hand out `block` next: at once when the counter went local meanwhile, else from
        its first number, which also starts leasing the block ahead (`_advance`)."""
        counter.lease += 1
        if counter.local:
            self._take(counter, block)
            self._prefetch(counter)
        else:
            counter.pending = block

    async def _lease_first(self, counters: list[_Counter]) -> list[int]:
        keys = [key for counter in counters for key in (counter.key, counter.record)]
        numbers = [counter.lease for counter in counters]
        finishes: list[int] = await self._redis.eval(
            _LEASE_FIRST, len(keys), *keys, self._block, _LEASE_RECORD_SECONDS, *numbers
        )
        return finishes

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # a cancellation of our caller still propagates

    def next(self, key: str) -> int:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counter(key)
        value = counter.next_value
        if value >= counter.end:
            value = self._advance(counter)
        counter.next_value = value + 1
        return value

    def peek(self, key: str) -> int:
        """A number with the split's phase of what `next(key)` would answer now (this
        worker's view), without taking it."""
        counter = self._counters.get(key)
        if counter is None:
            return 0
        if counter.next_value < counter.end:
            return counter.next_value
        if counter.pending is not None:
            return counter.pending[0]
        # A local run starts whole periods below this, so it has this number's phase.
        return counter.next_value

    def _counter(self, name: str) -> _Counter:
        counter = self._counters.get(name)
        if counter is None:
            key = self.redis_key(name)
            record = f"{key}:lease:{self._worker:012x}"
            counter = self._counters[name] = _Counter(name, key, record)
        return counter

    def _advance(self, counter: _Counter) -> int:
        pending = counter.pending
        if pending is not None:
            counter.pending = None
            self._take(counter, pending)
        else:  # no leased number left: count on locally
            if not counter.local:
                counter.local = True
                counter.next_value = self._local_start(counter)
            counter.end = counter.next_value + self._block
        self._prefetch(counter)
        return counter.next_value

    def _local_start(self, counter: _Counter) -> int:
        """The first number of a local run: the number the worker would have gone on to,
        shifted below zero by a multiple of the split's period that no other run uses."""
        self._local_runs += 1
        run = (self._worker * _RUNS_PER_WORKER) + self._local_runs % _RUNS_PER_WORKER + 1
        return counter.next_value - max(1, self._period(counter.name)) * _LOCAL_UNIT * run

    def _take(self, counter: _Counter, block: tuple[int, int]) -> None:
        counter.local = False
        counter.next_value, counter.end = block

    def _prefetch(self, counter: _Counter) -> None:
        if counter.fetching or counter.pending is not None:
            return
        counter.fetching = True
        task = asyncio.get_running_loop().create_task(self._fetch(counter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, counter: _Counter) -> None:
        delay = RETRY_MIN_SECONDS
        try:
            while True:
                try:
                    block = await self._lease(counter)
                except UNREACHABLE as error:
                    backend_errors.record("redis", error)
                    self._set_degraded(True, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
                    continue
                self._set_degraded(False)
                if counter.local:  # leave the local run at once, then lease the next block
                    self._take(counter, block)
                    continue
                counter.pending = block
                return
        finally:
            counter.fetching = False

    async def _lease(self, counter: _Counter) -> tuple[int, int]:
        """The next block of `counter`'s key. The same lease number is retried until it is
        answered, so Redis hands out at most one block per lease number."""
        async with asyncio.timeout(self._timeout):  # unlike wait_for, never drops a cancel
            end = await self._redis.eval(
                _LEASE,
                2,
                counter.key,
                counter.record,
                self._block,
                counter.lease,
                _LEASE_RECORD_SECONDS,
            )
        counter.lease += 1
        end = int(end)
        return end - self._block, end

    def _set_degraded(self, degraded: bool, error: BaseException | None = None) -> None:
        if degraded != self.degraded:
            if degraded:
                log.warning("sequence_degraded", error=type(error).__name__)
            else:
                log.info("sequence_recovered")
        self.degraded = degraded

    async def ping(self) -> None:
        await asyncio.wait_for(self._redis.ping(), self._timeout)
