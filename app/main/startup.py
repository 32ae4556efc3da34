import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import structlog
from dishka import AsyncContainer

from app.application.config_versions import ReloadConfig
from app.application.errors import StorageUnavailable
from app.application.lifecycle import Lifecycle
from app.application.limits import ReloadLimits
from app.application.metrics import Tally
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.ratelimit import ClientLimiter
from app.infrastructure.postgres.errors import UNREACHABLE
from app.infrastructure.postgres.listener import reconnect_delays
from app.infrastructure.redis.sequence import RedisLeasedSequence
from app.main.services import BackgroundServices
from app.main.settings import Settings
from app.presentation.edge.redirect import RedirectFront

log = structlog.get_logger(__name__)


# PostgreSQL not reachable (yet): start-up waits for it. Anything else fails at once.
_RETRIED: tuple[type[BaseException], ...] = (StorageUnavailable, *UNREACHABLE)


class Startup:
    """Starts a worker: loads the configuration, starts what the redirect path uses, binds it.

    When PostgreSQL does not answer, the worker listens anyway (`/ready` says 503
    `starting` and what it waits for; other paths 503 `starting`) and retries in the
    background with backoff until `startup_timeout_seconds` have passed. Giving up marks
    the lifecycle `failed`; the server then exits with uvicorn's start-up failure status.
    Redis is not waited for: without it the worker counts locally (`degraded`).
    """

    def __init__(self, container: AsyncContainer, lifecycle: Lifecycle, settings: Settings):
        self._container = container
        self._services = BackgroundServices(container, settings)
        self._lifecycle = lifecycle
        self._timeout = settings.startup_timeout_seconds
        self._metrics = settings.metrics
        self._where = service_address(settings.database_url)
        self._redis_where = service_address(settings.redis_url)

    @asynccontextmanager
    async def __call__(self, front: RedirectFront) -> AsyncIterator[None]:
        waiting: asyncio.Task[None] | None = None
        try:
            await self._serve(await self._start(front))
        except _RETRIED as error:
            waiting = asyncio.create_task(self._retry(front, error), name="start-up")
        except BaseException:
            log.exception("startup_failed")
            await self._services.stop()
            await self._container.close()
            raise
        try:
            yield
        finally:
            if waiting is not None:
                waiting.cancel()
                await asyncio.wait([waiting], timeout=self._timeout)
            await self._services.stop()
            await self._container.close()

    async def _start(self, front: RedirectFront) -> int:
        container = self._container
        loaded = await (await container.get(ReloadConfig))()
        await (await container.get(ReloadLimits))()
        await self._services.start()
        front.bind(
            await container.get(RedirectVideo),
            await container.get(ClientLimiter),
            await container.get(ConfigSnapshot),
            await container.get(Tally) if self._metrics else None,
        )
        return loaded.version

    async def _serve(self, version: int) -> None:
        self._lifecycle.phase, self._lifecycle.waiting_for = Lifecycle.SERVING, ""
        log.info("serving", config_version=version)
        if (await self._container.get(RedisLeasedSequence)).degraded:
            # Not waited for: redirects flow on local counting meanwhile (see the README).
            log.warning(
                "startup_without_redis",
                address=self._redis_where,
                serving="counting locally; leases retried in the background, at most 2 s apart",
            )
        # Everything allocated so far lives as long as the worker: keep the collector from
        # walking it again and again while requests allocate.
        gc.freeze()

    async def _retry(self, front: RedirectFront, error: BaseException) -> None:
        deadline = time.monotonic() + self._timeout
        delays = _backoff()
        while True:
            delay = next(delays)
            left = deadline - time.monotonic()
            self._lifecycle.waiting_for = f"postgres: {type(error).__name__}"
            if left < delay:
                log.error(
                    "startup_failed",
                    waiting_for="postgres",
                    address=self._where,
                    error=_reason(error),
                    gave_up_after_seconds=self._timeout,
                )
                self._lifecycle.phase = Lifecycle.FAILED
                return
            log.warning(
                "startup_waiting",
                waiting_for="postgres",
                address=self._where,
                error=_reason(error),
                next_attempt_in_seconds=round(delay, 2),
                gives_up_in_seconds=round(left, 1),
            )
            await asyncio.sleep(delay)
            try:
                version = await self._start(front)
            except _RETRIED as retry:
                error = retry
                continue
            except Exception:
                log.exception("startup_failed")
                self._lifecycle.phase = Lifecycle.FAILED
                return
            await self._serve(version)
            return


def _backoff() -> Iterator[float]:
    """0.25 s doubling to 5 s, jittered as the listener's reconnections are."""
    return reconnect_delays(0.25, 5.0)


def _reason(error: BaseException) -> str:
    detail = getattr(error, "detail", None) or str(error)
    name = type(error).__name__
    return f"{name}: {detail}" if detail and detail != name else name


def service_address(url: str) -> str:
    """Where a database or Redis URL points, without its user or password."""
    parts = urlsplit(url)
    socket = parse_qs(parts.query).get("host", [""])[0]
    if parts.scheme == "unix" or socket.startswith("/"):
        return socket or parts.path
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"
