"""A worker's background services, in the order they start; they stop in reverse.

The container only builds them: nothing starts as a side effect of resolving it. Start-up
starts them once the first configuration and the client limits are loaded.
"""

from collections.abc import Sequence
from typing import Protocol

import structlog
from dishka import AsyncContainer

from app.application.snapshot import ConfigSnapshot
from app.infrastructure.geoip import MaxMindCountries
from app.infrastructure.loop_watch import LoopWatch
from app.infrastructure.metrics import MetricsFlusher
from app.infrastructure.postgres.listener import ConfigWatcher, LimitsWatcher
from app.infrastructure.redis.cdn_health import CdnHealthMonitor
from app.infrastructure.redis.ratelimit import RedisLimitSettler
from app.infrastructure.redis.sequence import RedisLeasedSequence
from app.main.settings import Settings

log = structlog.get_logger(__name__)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SequenceLeases:
    """The leased sequence as a service: the first blocks of the global sequence, and of
    every sequence of the version served already, leased before traffic arrives (later
    versions lease theirs before they are served: see `ConfigSnapshot.before_serving`)."""

    def __init__(self, sequence: RedisLeasedSequence, snapshot: ConfigSnapshot) -> None:
        self._sequence = sequence
        self._snapshot = snapshot

    async def start(self) -> None:
        await self._sequence.start()
        await self._sequence.prepare(self._snapshot.sequences)

    async def stop(self) -> None:
        await self._sequence.stop()


def background_services(settings: Settings) -> tuple[type[Service], ...]:
    """What a worker runs besides serving, in start order."""
    return (
        # Rereads the country database when the file changes.
        *((MaxMindCountries,) if settings.geoip_database else ()),
        LoopWatch,  # times the event loop's turns (/metrics)
        ConfigWatcher,  # reloads the configuration on NOTIFY and every resync
        LimitsWatcher,  # reloads the client limits likewise
        CdnHealthMonitor,  # probes the CDN hosts, or reads the prober's results
        RedisLimitSettler,  # settles the rate limits with the other workers
        SequenceLeases,  # leases blocks of the shared sequence numbers
        MetricsFlusher,  # publishes this worker's figures
    )


class BackgroundServices:
    """Starts the services of `background_services` in order, each once (a start-up retried
    after a failure goes on where it stopped), and stops those started in reverse."""

    def __init__(self, container: AsyncContainer, settings: Settings) -> None:
        self._container = container
        self._kinds: Sequence[type[Service]] = background_services(settings)
        self._started: list[Service] = []

    async def start(self) -> None:
        for kind in self._kinds[len(self._started) :]:
            service = await self._container.get(kind)
            await service.start()
            self._started.append(service)

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:
                log.exception("service_stop_failed", service=type(service).__name__)
