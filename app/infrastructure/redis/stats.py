"""The cluster's `/stats` counts in Redis: one hash of counters since the last reset, and
one small counter per second for the recent rate."""

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.application.metrics import StatsCounts, StatsUnavailable
from app.infrastructure.backend_errors import backend_errors
from app.infrastructure.redis.sequence import UNREACHABLE

RATE_WINDOW_SECONDS = 10
_SECOND_TTL = 3 * RATE_WINDOW_SECONDS


class RedisStats:
    """`key` holds the counters and `since`; `key:second:<unix second>` what was flushed
    during that second. A worker flushes at most once a second, so the last complete
    `RATE_WINDOW_SECONDS` seconds give the cluster's recent requests/s."""

    def __init__(self, redis: Redis, *, key: str, timeout: float) -> None:
        self._redis = redis
        self._key = key
        self._timeout = timeout
        self.clock: Callable[[], float] = time.time

    async def add(self, delta: Mapping[str, int]) -> None:
        now = self.clock()
        second = f"{self._key}:second:{int(now)}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(self._key, "since", repr(now))
            for name, count in delta.items():
                pipe.hincrby(self._key, name, count)
            total = delta.get("total", 0)
            if total:
                pipe.incrby(second, total)
                pipe.expire(second, _SECOND_TTL)
            await self._execute(pipe)

    async def read(self) -> StatsCounts:
        now = self.clock()
        seconds = [
            f"{self._key}:second:{int(now) - age}" for age in range(1, RATE_WINDOW_SECONDS + 1)
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key)
            pipe.mget(seconds)
            raw, recent = await self._execute(pipe)
        fields = {name.decode(): value.decode() for name, value in raw.items()}
        since = float(fields.pop("since", now))
        counts = {name: int(value) for name, value in fields.items()}
        rate = sum(int(value) for value in recent if value) / RATE_WINDOW_SECONDS
        return StatsCounts(since=since, fields=counts, requests_per_second=rate)

    async def reset(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key)
            pipe.hset(self._key, "since", repr(self.clock()))
            await self._execute(pipe)

    async def _execute(self, pipe: Pipeline) -> list[Any]:
        try:
            return await asyncio.wait_for(pipe.execute(), self._timeout)
        except UNREACHABLE as error:
            backend_errors.record("redis", error)
            raise StatsUnavailable(f"Redis: {type(error).__name__}") from error
