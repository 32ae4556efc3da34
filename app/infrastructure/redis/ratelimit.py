import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis

from app.domain.ratelimit import Bucket, ClientLimiter
from app.infrastructure.backend_errors import backend_errors
from app.infrastructure.redis.sequence import RETRY_MAX_SECONDS, RETRY_MIN_SECONDS, UNREACHABLE

log = structlog.get_logger(__name__)

# One global token bucket per client in GCRA form: the key holds the theoretical arrival
# time `tat` (Redis clock, seconds); the balance at `now` is capacity - (tat - now) * rate.
# Each worker reports what it admitted (ARGV[1]: "capacity rate count" per key, space
# separated); all of it is charged, even past the balance (the client then waits it off),
# and the balances after the charge come back (one string, space separated) so the worker
# can clamp its local buckets. A key expires once its bucket would be full again: an idle
# client costs Redis nothing. Packed, a call of 500 clients is two values for redis-py to
# encode and parse, not 2,000: its pure-Python codec was most of the settler's cost.
SETTLE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local numbers = {}
for number in string.gmatch(ARGV[1], '%S+') do
    numbers[#numbers + 1] = tonumber(number)
end
local balances = {}
for i = 1, #KEYS do
    local capacity = numbers[3 * i - 2]
    local rate = numbers[3 * i - 1]
    local count = numbers[3 * i]
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    tat = tat + count / rate
    local ttl = math.ceil((tat - now) * 1000)
    if ttl > 0 then
        redis.call('SET', KEYS[i], string.format('%.6f', tat), 'PX', ttl)
    end
    balances[i] = string.format('%.4f', capacity - (tat - now) * rate)
end
return table.concat(balances, ' ')
"""

MAX_KEYS_PER_CALL = 500
# How often a bucket below its threshold is settled. Its unsettled count is at most k - 1 (it
# would have been settled urgently otherwise), which the error bound already allows for, so a
# longer period costs no accuracy; a shorter one costs a batch slot per active client each
# period (at 1 s, 4% of a worker's CPU with 2,000 clients at 5 requests/s each).
SETTLE_PERIOD_SECONDS = 5.0


class RedisLimitSettler:
    """Settles this worker's buckets with Redis in batches, in the background.

    Buckets past their threshold are settled within `urgent_delay` (so an abusive client is
    cut at the global limit within one batch), every other bucket with admissions once per
    `period`; one script call carries many clients. A client below its limit costs no round
    trip of its own. While Redis is unreachable the buckets enforce the limit per worker,
    the admissions of that time are not charged later, and `degraded` says so.
    """

    def __init__(
        self,
        redis: Redis,
        limiter: ClientLimiter,
        *,
        key: str,
        timeout: float,
        period: float = SETTLE_PERIOD_SECONDS,
        urgent_delay: float = 0.01,
    ) -> None:
        self._redis = redis
        self._limiter = limiter
        self._prefix = f"{key}:"
        self._timeout = timeout
        self._period = period
        self._urgent_delay = urgent_delay
        self._script = redis.register_script(SETTLE_SCRIPT)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN_SECONDS
        self.degraded = False

    async def start(self) -> None:
        self._limiter.on_urgent(self._wake.set)
        self._task = asyncio.create_task(self._run(), name="rate-limit-settler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(*UNREACHABLE):  # report what was admitted, if Redis answers
            await self._settle([*self._limiter.take_urgent(), *self._limiter.take_dirty()])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        periodic_at = loop.time() + self._period
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancellation that
            # arrives as the event is set, and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, periodic_at - loop.time())):
                    await self._wake.wait()
                await asyncio.sleep(self._urgent_delay)  # let a batch gather
            self._wake.clear()
            batch = self._limiter.take_urgent()
            if loop.time() >= periodic_at:
                batch += self._limiter.take_dirty()
                self._limiter.expire()
                periodic_at = loop.time() + self._period
            try:
                await self._settle(batch)
            except Exception:  # the settler must outlive any surprise; limits stay local
                log.exception("rate_limit_settle_failed")

    async def _settle(self, batch: Sequence[Bucket]) -> None:
        entries: list[tuple[Bucket, int]] = []
        for bucket in batch:
            count = bucket.unsettled
            if count:
                bucket.unsettled = 0
                entries.append((bucket, count))
        if not entries:
            return
        loop = asyncio.get_running_loop()
        if self.degraded and loop.time() < self._retry_at:
            return  # admitted under per-worker limits; charging it later would be unfair
        for start in range(0, len(entries), MAX_KEYS_PER_CALL):
            chunk = entries[start : start + MAX_KEYS_PER_CALL]
            try:
                balances = await self._call(chunk)
            except UNREACHABLE as error:
                backend_errors.record("redis", error)
                self._failed(loop.time(), error)
                return
            now = self._limiter.now()
            for (bucket, _), balance in zip(chunk, balances, strict=True):
                bucket.settled(float(balance), now)
        self._recovered()

    async def _call(self, chunk: Sequence[tuple[Bucket, int]]) -> list[bytes]:
        keys = [self._prefix + bucket.key for bucket, _ in chunk]
        numbers = " ".join(
            f"{bucket.capacity:g} {bucket.rate!r} {count}" for bucket, count in chunk
        )
        result: bytes = await asyncio.wait_for(
            self._script(keys=keys, args=[numbers]), self._timeout
        )
        return result.split()

    def _failed(self, now: float, error: BaseException) -> None:
        if not self.degraded:
            log.warning("rate_limits_per_worker", error=type(error).__name__)
            self._retry_delay = RETRY_MIN_SECONDS
        else:
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)
        self.degraded = True
        self._retry_at = now + self._retry_delay

    def _recovered(self) -> None:
        if self.degraded:
            log.info("rate_limits_global")
        self.degraded = False


class RateLimitHealth:
    name = "rate_limits"

    def __init__(self, settler: RedisLimitSettler, limiter: ClientLimiter) -> None:
        self._settler = settler
        self._limiter = limiter

    async def __call__(self) -> str | None:
        if not self._limiter.table.enabled:
            return None
        if self._settler.degraded:
            return "Redis unreachable: limits enforced per worker"
        return None
