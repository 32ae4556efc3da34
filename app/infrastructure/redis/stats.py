"""The cluster's `/stats` counts in Redis: one hash of counters since the last reset, one
sorted set of the heaviest server labels, and one small counter per second for the recent
rate."""

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.application.metrics import MAX_SERVERS, ServerCounts, StatsUnavailable
from app.application.ports import StatsCounts
from app.infrastructure.backend_errors import backend_errors
from app.infrastructure.redis.sequence import UNREACHABLE

RATE_WINDOW_SECONDS = 10
_SECOND_TTL = 3 * RATE_WINDOW_SECONDS
# ServerCounts' space-saving, over what the workers send: a label not in the set starts from
# `server_floor` (the largest count dropped), and past `capacity` labels the lightest are
# dropped. `server_error` sums the senders' own bounds.
# KEYS: the sorted set, the hash. ARGV: capacity, the sender's bound, label, count, ...
_ADD_SERVERS = """
local servers, stats = KEYS[1], KEYS[2]
local capacity = tonumber(ARGV[1])
local floor = tonumber(redis.call('HGET', stats, 'server_floor') or '0')
for i = 3, #ARGV, 2 do
    local server, count = ARGV[i], tonumber(ARGV[i + 1])
    if not redis.call('ZSCORE', servers, server) then
        count = count + floor
    end
    redis.call('ZINCRBY', servers, count, server)
end
local excess = redis.call('ZCARD', servers) - capacity
if excess > 0 then
    local dropped = redis.call('ZPOPMIN', servers, excess)
    floor = math.max(floor, tonumber(dropped[#dropped]))
    redis.call('HSET', stats, 'server_floor', floor)
end
redis.call('HINCRBY', stats, 'server_error', ARGV[2])
"""


class RedisStats:
    """`key` holds the counters, `since` and the server summary's bounds; `key:servers` the
    heaviest `capacity` server labels; `key:second:<unix second>` what was flushed during
    that second. A worker flushes at most once a second, so the last complete
    `RATE_WINDOW_SECONDS` seconds give the cluster's recent requests/s."""

    def __init__(
        self, redis: Redis, *, key: str, timeout: float, capacity: int = MAX_SERVERS
    ) -> None:
        self._redis = redis
        self._key = key
        self._servers_key = f"{key}:servers"
        self._timeout = timeout
        self._capacity = capacity
        self._add_servers = redis.register_script(_ADD_SERVERS)
        self.clock: Callable[[], float] = time.time

    async def add(self, delta: Mapping[str, int], servers: ServerCounts | None = None) -> None:
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
            if servers is not None and servers.counts:
                pairs = [
                    part for server, count in servers.counts.items() for part in (server, count)
                ]
                await self._add_servers(
                    keys=[self._servers_key, self._key],
                    args=[self._capacity, servers.error, *pairs],
                    client=pipe,
                )
            await self._execute(pipe)

    async def read(self) -> StatsCounts:
        now = self.clock()
        seconds = [
            f"{self._key}:second:{int(now) - age}" for age in range(1, RATE_WINDOW_SECONDS + 1)
        ]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._key)
            pipe.zrange(self._servers_key, 0, -1, desc=True, withscores=True)
            pipe.mget(seconds)
            raw, servers, recent = await self._execute(pipe)
        fields = {name.decode(): value.decode() for name, value in raw.items()}
        since = float(fields.pop("since", now))
        error = int(fields.pop("server_floor", 0)) + int(fields.pop("server_error", 0))
        counts = {name: int(value) for name, value in fields.items()}
        rate = sum(int(value) for value in recent if value) / RATE_WINDOW_SECONDS
        return StatsCounts(
            since=since,
            fields=counts,
            requests_per_second=rate,
            servers={server.decode(): int(count) for server, count in servers},
            server_error=error,
        )

    async def reset(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key, self._servers_key)
            pipe.hset(self._key, "since", repr(self.clock()))
            await self._execute(pipe)

    async def _execute(self, pipe: Pipeline) -> list[Any]:
        try:
            return await asyncio.wait_for(pipe.execute(), self._timeout)
        except UNREACHABLE as error:
            backend_errors.record("redis", error)
            raise StatsUnavailable(f"Redis: {type(error).__name__}") from error
