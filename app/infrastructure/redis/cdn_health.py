import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any

import structlog
from redis.asyncio import Redis

from app.application.cdn_health import CdnHealthView, HealthBoardUnavailable
from app.application.ports import BoardView
from app.domain.cdn_health import HostState
from app.domain.load import LoadReport
from app.infrastructure.backend_errors import backend_errors
from app.infrastructure.redis.sequence import UNREACHABLE

log = structlog.get_logger(__name__)

# The holder renews its lease (sets the TTL again) only while the value is still its own.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Replace the states and move the round on, only for the lease holder: a prober that was
# paused past its lease cannot overwrite its successor's work.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return redis.call('INCR', KEYS[3])
"""


def instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisHealthBoard:
    """CDN health in Redis: `<key>:hosts` (hash, base URL -> state JSON), `<key>:round`
    (moves on with every publication) and `<key>:lease` (who probes: one per cluster).

    The lease is taken with SET NX PX and renewed by its holder; when the holder dies it
    expires and the next worker to ask takes it over.
    """

    def __init__(
        self, redis: Redis, *, key: str, lease_seconds: float, timeout: float, me: str
    ) -> None:
        self._redis = redis
        self._lease = f"{key}:lease"
        self._hosts = f"{key}:hosts"
        self._round = f"{key}:round"
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._timeout = timeout
        self.me = me
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._publish = redis.register_script(_PUBLISH)

    async def hold_lease(self) -> bool:
        """Take the prober lease if it is free, renew it if it is ours; True while ours."""
        try:
            async with asyncio.timeout(self._timeout):
                if await self._renew(keys=[self._lease], args=[self.me, self._lease_ms]):
                    return True
                taken = await self._redis.set(self._lease, self.me, nx=True, px=self._lease_ms)
        except UNREACHABLE as error:
            backend_errors.record("redis", error)
            raise HealthBoardUnavailable(f"Redis: {type(error).__name__}") from error
        return bool(taken)

    async def release_lease(self) -> None:
        with contextlib.suppress(*UNREACHABLE):
            async with asyncio.timeout(self._timeout):
                await self._release(keys=[self._lease], args=[self.me])

    async def read(self) -> BoardView:
        try:
            async with asyncio.timeout(self._timeout):
                pipe = self._redis.pipeline(transaction=False)
                pipe.get(self._round)
                pipe.hgetall(self._hosts)
                round_, raw = await pipe.execute()
        except UNREACHABLE as error:
            backend_errors.record("redis", error)
            raise HealthBoardUnavailable(f"Redis: {type(error).__name__}") from error
        hosts = {}
        for url, value in raw.items():
            state = _decode(value)
            if state is not None:
                hosts[url.decode()] = state
        return BoardView(hosts=hosts, round=int(round_ or 0))

    async def publish(self, hosts: Mapping[str, HostState]) -> bool:
        args: list[Any] = [self.me]
        for url, state in hosts.items():
            args += [url, json.dumps(asdict(state), separators=(",", ":"))]
        try:
            async with asyncio.timeout(self._timeout):
                done = await self._publish(keys=[self._lease, self._hosts, self._round], args=args)
        except UNREACHABLE as error:
            backend_errors.record("redis", error)
            raise HealthBoardUnavailable(f"Redis: {type(error).__name__}") from error
        return bool(done)


def _decode(value: bytes) -> HostState | None:
    try:
        fields = json.loads(value)
        return HostState(
            healthy=bool(fields["healthy"]),
            since=fields.get("since"),
            last_check=fields.get("last_check"),
            last_error=fields.get("last_error"),
            consecutive_failures=int(fields.get("consecutive_failures", 0)),
            consecutive_successes=int(fields.get("consecutive_successes", 0)),
            reported=_report(fields.get("reported")),
            load_error=fields.get("load_error"),
            weight_percent=int(fields.get("weight_percent", 100)),
            back_since=fields.get("back_since"),
        )
    except (ValueError, TypeError, KeyError):
        return None


def _report(fields: dict[str, Any] | None) -> LoadReport | None:
    if fields is None:
        return None
    return LoadReport(
        state=fields.get("state"),
        weight_percent=fields.get("weight_percent"),
        utilization=fields.get("utilization"),
    )


class CdnHealthMonitor:
    """The background side of CDN health in one worker.

    Every worker refreshes its view of the board several times a second. Every worker also
    asks for the prober lease; the one holding it probes every `interval_seconds` of the
    active configuration. Nothing here ever runs on the redirect path.
    """

    def __init__(
        self,
        board: RedisHealthBoard,
        probe_round: Callable[[], Awaitable[object]],
        refresh: Callable[[], Awaitable[None]],
        interval: Callable[[], float],
        view: CdnHealthView,
        *,
        lease_seconds: float,
        refresh_seconds: float = 0.25,
    ) -> None:
        self._board = board
        self._probe_round = probe_round
        self._refresh = refresh
        self._interval = interval
        self._view = view
        self._renew_seconds = lease_seconds / 3
        self._refresh_seconds = refresh_seconds
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_held = asyncio.Event()
        self._stopping = asyncio.Event()
        self.prober = False

    async def start(self) -> None:
        await self._refresh()
        self._tasks = [
            asyncio.create_task(self._keep_refreshing(), name="cdn-health-refresh"),
            asyncio.create_task(self._keep_lease(), name="cdn-health-lease"),
            asyncio.create_task(self._keep_probing(), name="cdn-health-probe"),
        ]

    async def stop(self) -> None:
        # The loops also watch this flag: a client library may swallow a cancellation.
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.prober:
            await self._board.release_lease()
            self._set_prober(False)

    async def _pause(self, seconds: float) -> bool:
        """Sleep; False once the monitor is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def _keep_refreshing(self) -> None:
        while True:
            try:
                await self._refresh()
            except Exception:  # the view stays as it was; the next refresh tries again
                log.exception("cdn_health_refresh_failed")
            if not await self._pause(self._refresh_seconds):
                return

    async def _keep_lease(self) -> None:
        while True:
            try:
                held = await self._board.hold_lease()
            except HealthBoardUnavailable:
                held = False
            self._set_prober(held)
            if not await self._pause(self._renew_seconds):
                return

    async def _keep_probing(self) -> None:
        loop = asyncio.get_running_loop()
        failing = 0  # unexpected failures in a row
        failure = ""  # the last one's exception type
        while True:
            await self._lease_held.wait()
            started = loop.time()
            try:
                await self._probe_round()
            except HealthBoardUnavailable as error:
                log.warning("cdn_probe_round_skipped", error=error.detail)
            except Exception as error:
                self._view.round_failures += 1
                failing += 1
                # The traceback once per kind of failure in a row, not every interval.
                if type(error).__name__ != failure:
                    failure = type(error).__name__
                    log.exception("cdn_probe_round_failed", failed_rounds=failing)
            else:
                if failing:
                    log.info("cdn_probe_round_recovered", failed_rounds=failing)
                failing, failure = 0, ""
            # In short steps, so that a new interval (or checks just turned on) applies at once.
            while (remaining := started + self._interval() - loop.time()) > 0:
                if not await self._pause(min(remaining, 0.1)):
                    return

    def _set_prober(self, prober: bool) -> None:
        if prober != self.prober:
            log.info(
                "cdn_prober_elected" if prober else "cdn_prober_stepped_down",
                instance=self._board.me,
            )
        self.prober = self._view.prober = prober
        if prober:
            self._lease_held.set()
        else:
            self._lease_held.clear()
