import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from app.application.errors import StorageUnavailable
from app.infrastructure.postgres.errors import UNREACHABLE

CHANNEL = "balancer_config"

log = structlog.get_logger(__name__)


class ConfigWatcher:
    """Keeps this worker's configuration current.

    LISTENs on a dedicated connection and reloads when a version is announced; reloads on
    a timer too, so a notification lost while the connection was down costs at most one
    period. Reconnects on its own.
    """

    def __init__(
        self,
        dsn: str,
        reload: Callable[[], Awaitable[object]],
        *,
        resync_seconds: float,
        timeout: float,
    ) -> None:
        self._dsn = dsn
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
        except UNREACHABLE as error:
            self._set_healthy(False, error)
        self._task = asyncio.create_task(self._run(), name="config-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                if not self.listening:
                    await self._listen()
                await self._reload()
            except (*UNREACHABLE, StorageUnavailable) as error:
                self._set_healthy(False, error)
                await self._disconnect()
            except Exception:  # a bad row must not stop the watcher; the last snapshot stays
                log.exception("config_reload_failed")
            else:
                self._set_healthy(True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._resync_seconds)

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=self._timeout)
        try:
            await connection.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            await connection.close()
            raise
        connection.add_termination_listener(self._on_terminated)
        self._connection = connection

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(*UNREACHABLE):
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
