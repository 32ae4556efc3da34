import asyncio
import contextlib

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

UNREACHABLE = (RedisError, OSError, asyncio.TimeoutError)
_RETRY_MIN_SECONDS = 0.05
_RETRY_MAX_SECONDS = 2.0


class _Counter:
    """One named sequence in this worker: the block being handed out and the next one."""

    __slots__ = ("end", "fetching", "local", "name", "next_value", "pending")

    def __init__(self, name: str) -> None:
        self.name = name
        self.next_value = 0
        self.end = 0
        self.pending: tuple[int, int] | None = None
        self.fetching = False
        self.local = True


class RedisLeasedSequence:
    """Sequence numbers shared by every worker of every instance, without a round trip each.

    Each named sequence is one Redis key. A worker leases blocks of numbers from it with
    INCRBY and hands them out from memory; the next block is fetched in the background as
    soon as the current one is started, so `next` never waits. While Redis is unreachable
    the worker keeps counting on locally (the split stays exact in this worker) and
    switches back to leased blocks as soon as Redis answers again.
    """

    def __init__(self, redis: Redis, *, key: str, block: int, timeout: float) -> None:
        self._redis = redis
        self._key = key
        self._block = block
        self._timeout = timeout
        self._counters: dict[str, _Counter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.degraded = False

    def redis_key(self, name: str) -> str:
        return f"{self._key}:{name}" if name else self._key

    async def start(self, names: tuple[str, ...] = ("",)) -> None:
        """Lease the first block of each named sequence before traffic arrives."""
        for name in names:
            counter = self._counters.setdefault(name, _Counter(name))
            try:
                self._take(counter, await self._lease(name))
            except UNREACHABLE as error:
                self._set_degraded(True, error)
                counter.end = self._block
            self._prefetch(counter)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def next(self, key: str) -> int:
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = _Counter(key)
        value = counter.next_value
        if value >= counter.end:
            value = self._advance(counter)
        counter.next_value = value + 1
        return value

    def _advance(self, counter: _Counter) -> int:
        pending = counter.pending
        if pending is not None:
            counter.pending = None
            self._take(counter, pending)
        else:  # the lease is late or Redis is down: go on counting locally
            counter.local = True
            counter.end = counter.next_value + self._block
        self._prefetch(counter)
        return counter.next_value

    def _take(self, counter: _Counter, block: tuple[int, int]) -> None:
        counter.next_value, counter.end = block
        counter.local = False

    def _prefetch(self, counter: _Counter) -> None:
        if counter.fetching or counter.pending is not None:
            return
        counter.fetching = True
        task = asyncio.get_running_loop().create_task(self._fetch(counter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, counter: _Counter) -> None:
        delay = _RETRY_MIN_SECONDS
        try:
            while True:
                try:
                    block = await self._lease(counter.name)
                except UNREACHABLE as error:
                    self._set_degraded(True, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_SECONDS)
                    continue
                self._set_degraded(False)
                if counter.local:  # leave the local count at once, then fetch the next block
                    self._take(counter, block)
                    continue
                counter.pending = block
                return
        finally:
            counter.fetching = False

    async def _lease(self, name: str) -> tuple[int, int]:
        end = await asyncio.wait_for(
            self._redis.incrby(self.redis_key(name), self._block), self._timeout
        )
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
