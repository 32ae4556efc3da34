import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import structlog

from app.application.errors import StorageUnavailable
from app.infrastructure.backend_errors import backend_errors
from app.infrastructure.postgres.errors import UNREACHABLE

CHANNEL = "balancer_config"
# Changes of the rate limit overrides (db/migrations: rate_limits_changed()).
LIMITS_CHANNEL = "balancer_limits"
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 0.5
# Unreachable, or refusing us (a wrong password, a missing database): reconnect and retry.
_RECONNECT_ON: tuple[type[Exception], ...] = (
    *UNREACHABLE,
    StorageUnavailable,
    asyncpg.PostgresError,
)

log = structlog.get_logger(__name__)


def reconnect_delays(
    first: float = RECONNECT_FIRST_SECONDS, cap: float = RECONNECT_MAX_SECONDS
) -> Iterator[float]:
    """Waits between reconnection attempts: doubling from `first` up to `cap`, each one
    drawn from its upper half so that workers cut off together do not retry in step."""
    delay = first
    while True:
        yield random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not crypto
        delay = min(delay * 2, cap)


class ConfigWatcher:
    """Keeps this worker's configuration current.

    LISTENs on a dedicated connection and reloads when a version is announced; reloads on
    a timer too (the safety net for a lost notification). When the connection is lost it
    reconnects at once and then with a short, capped backoff, and reloads as soon as it is
    listening again, so a change made while it was cut off, or right after, is served
    within a second of PostgreSQL coming back, whatever the resync period.
    """

    def __init__(
        self,
        dsn: str,
        reload: Callable[[], Awaitable[object]],
        *,
        resync_seconds: float,
        timeout: float,
        channel: str = CHANNEL,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._reload = reload
        self._resync_seconds = resync_seconds
        self._timeout = timeout
        self._wake = asyncio.Event()
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.healthy = False

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def start(self) -> None:
        """Start listening (a failure here is retried in the background) and watching."""
        try:
            await self._listen()
        except Exception as error:  # whatever it is, the background loop retries it
            backend_errors.record("postgres", error)
            self._set_healthy(False, error)
        self._task = asyncio.create_task(self._run(), name=f"watcher-{self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # a cancellation of our caller still propagates
        await self._disconnect()

    async def _run(self) -> None:
        delays = reconnect_delays()
        while True:
            self._wake.clear()
            try:
                if not self.listening:
                    await self._listen()
                await self._reload()
            except _RECONNECT_ON as error:
                backend_errors.record("postgres", error)
                self._set_healthy(False, error)
                await self._disconnect()
                await asyncio.sleep(next(delays))
                continue
            except Exception:  # a bad row must not stop the watcher; the last snapshot stays
                log.exception("config_reload_failed")
            else:
                self._set_healthy(True)
            delays = reconnect_delays()
            # Not asyncio.wait_for: on 3.11 it drops a cancellation that arrives as the
            # event is set (a NOTIFY during shutdown), and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._resync_seconds):
                    await self._wake.wait()

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=self._timeout)
        try:
            await connection.add_listener(self._channel, self._on_notify)
        except BaseException:
            await connection.close()
            raise
        connection.add_termination_listener(self._on_terminated)
        self._connection = connection

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(*UNREACHABLE, asyncpg.PostgresError):
                await asyncio.wait_for(connection.close(), self._timeout)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    def _on_terminated(self, *_: object) -> None:
        self._wake.set()

    def _set_healthy(self, healthy: bool, error: BaseException | None = None) -> None:
        if healthy != self.healthy:
            if healthy:
                log.info("config_watch_connected")
            else:
                log.warning("config_watch_lost", error=type(error).__name__)
        self.healthy = healthy


class LimitsWatcher(ConfigWatcher):
    """Keeps this worker's rate limit overrides current, as ConfigWatcher does the
    configuration, on a channel of their own: a burst of limit changes (hundreds a second
    from a script) costs no configuration reloads."""
