import asyncio
import secrets
from collections.abc import Callable

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
        """Lease the first block of each named sequence before traffic arrives."""
        for name in names:
            counter = self._counter(name)
            if counter.fetching or counter.end:  # already leased or leasing
                continue
            if not self.degraded:  # one timeout at start-up is enough to know
                try:
                    self._take(counter, await self._lease(counter))
                except UNREACHABLE as error:
                    backend_errors.record("redis", error)
                    self._set_degraded(True, error)
            self._prefetch(counter)

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
