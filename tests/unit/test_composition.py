"""The composition root: what the container builds, and the background services' order."""

from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
from dishka import AsyncContainer, make_async_container

from app.application.lifecycle import Lifecycle
from app.application.ports import CountryLookup
from app.application.snapshot import ConfigSnapshot
from app.infrastructure.geoip import BundledCountries, MaxMindCountries
from app.infrastructure.loop_watch import LoopWatch
from app.infrastructure.metrics import MetricsFlusher
from app.infrastructure.postgres.listener import ConfigWatcher, LimitsWatcher
from app.infrastructure.redis.cdn_health import CdnHealthMonitor
from app.infrastructure.redis.ratelimit import RedisLimitSettler
from app.main.ioc import providers
from app.main.services import BackgroundServices, SequenceLeases, background_services
from app.main.settings import Settings
from tests.support.geoip import write_database

SETTINGS = Settings(
    database_url="postgresql://nowhere.invalid/balancer",
    redis_url="redis://nowhere.invalid/0",
    admin_token=("t" * 43,),
)
IN_ORDER: tuple[type, ...] = (
    LoopWatch,
    ConfigWatcher,
    LimitsWatcher,
    CdnHealthMonitor,
    RedisLimitSettler,
    SequenceLeases,
    MetricsFlusher,
)


def container_for(settings: Settings) -> AsyncContainer:
    lifecycle = Lifecycle(drain_seconds=0)
    return make_async_container(
        *providers(settings), context={Settings: settings, Lifecycle: lifecycle}
    )


async def test_a_new_country_database_drops_the_regions_cached_by_the_snapshot(
    tmp_path: Path,
) -> None:
    path = tmp_path / "countries.mmdb"
    write_database(path, {"DE": ["85.214.0.0/16"]})
    container = container_for(replace(SETTINGS, geoip_database=str(path)))
    try:
        countries = await container.get(CountryLookup)
        snapshot = await container.get(ConfigSnapshot)
        assert isinstance(countries, MaxMindCountries)
        assert countries is await container.get(MaxMindCountries)
        assert snapshot.countries is countries
        assert countries.on_reload == [snapshot.forget_regions]
    finally:
        await container.close()


async def test_countries_come_from_the_bundled_data_without_a_database() -> None:
    container = container_for(SETTINGS)
    try:
        snapshot = await container.get(ConfigSnapshot)
        assert isinstance(await container.get(CountryLookup), BundledCountries)
        assert isinstance(snapshot.countries, BundledCountries)
    finally:
        await container.close()


def test_the_services_start_in_a_fixed_order_with_the_country_watcher_first_when_configured() -> (
    None
):
    assert background_services(SETTINGS) == IN_ORDER
    with_database = replace(SETTINGS, geoip_database="x.mmdb")
    assert background_services(with_database) == (MaxMindCountries, *IN_ORDER)


class _Service:
    def __init__(self, name: str, journal: list[str], fail_starts: int = 0) -> None:
        self.name = name
        self.journal = journal
        self.fail_starts = fail_starts

    async def start(self) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise ConnectionError(self.name)
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")


class _Container:
    """Hands out one fake service per kind, as the APP-scoped container does."""

    def __init__(self, services: dict[type, _Service]) -> None:
        self.services = services
        self.resolved: list[type] = []

    async def get(self, kind: type) -> _Service:
        self.resolved.append(kind)
        return self.services[kind]


async def test_a_retried_start_up_goes_on_where_it_stopped_and_stop_runs_in_reverse() -> None:
    journal: list[str] = []
    fakes = {kind: _Service(kind.__name__, journal) for kind in IN_ORDER}
    fakes[RedisLimitSettler].fail_starts = 1
    container = _Container(dict(fakes))
    services = BackgroundServices(cast(AsyncContainer, container), SETTINGS)
    with pytest.raises(ConnectionError):
        await services.start()
    await services.start()
    await services.stop()
    names = [kind.__name__ for kind in IN_ORDER]
    assert journal == [
        *(f"start {name}" for name in names),
        *(f"stop {name}" for name in reversed(names)),
    ]
    assert container.resolved.count(ConfigWatcher) == 1
