from collections import Counter
from datetime import UTC, datetime

import pytest

from app.application.config_versions import ConfigChange
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.pool import CdnPool
from app.domain.regions import MAX_REGIONS, Region, RegionMatcher
from app.domain.router import Router
from app.domain.split import Split
from tests.support.fakes import CountingSequence

VIDEO = "http://s1.origin-cluster/video/1.m3u8"
GLOBAL = "http://cdn.example.com"
FRA, NYC = "http://cdn-fra.example.com", "http://cdn-nyc.example.com"
COUNTRIES = {"85.214.1.1": "DE", "8.8.8.8": "US", "1.0.16.1": "JP"}


def region(
    name: str, host: str, countries: list[str], networks: tuple[str, ...] = (), **split: int
) -> Region:
    return Region.of(
        0,
        name=name,
        countries=countries,
        networks=networks,
        hosts=[(host, 1)],
        cdn_weight=split.get("cdn_weight"),
        origin_weight=split.get("origin_weight"),
    )


def config(**values: object) -> BalancerConfig:
    defaults: dict[str, object] = {
        "cdn_host": GLOBAL,
        "split": Split(1, 0),
        "regions": (
            region("eu", FRA, ["DE", "FR"], ("10.20.0.0/16",), cdn_weight=3, origin_weight=1),
            region("us", NYC, ["US"]),
        ),
    }
    return BalancerConfig(**{**defaults, **values})  # type: ignore[arg-type]


def router(cfg: BalancerConfig, down: frozenset[str] = frozenset()) -> Router:
    version = ConfigVersion(1, cfg, datetime(2026, 1, 1, tzinfo=UTC))
    regions = [(r.countries, r.networks) for r in cfg.regions]
    return Router(version, down, matcher=RegionMatcher(regions, COUNTRIES.get))


def test_clients_go_to_the_pool_of_their_region_by_country_or_network() -> None:
    route, sequence = router(config()), CountingSequence()
    found = {
        client: (r.region, r.location.split("/s1/")[0])
        for client in ("85.214.1.1", "10.20.3.4", "8.8.8.8", "1.0.16.1", "")
        for r in [route.redirect(VIDEO, sequence.next, client)]
    }
    assert found == {
        "85.214.1.1": ("eu", FRA),
        "10.20.3.4": ("eu", FRA),
        "8.8.8.8": ("us", NYC),
        "1.0.16.1": ("default", GLOBAL),
        "": ("default", GLOBAL),
    }


def test_each_region_split_is_exact_on_a_sequence_of_its_own() -> None:
    route, sequence = router(config(split=Split(9, 1))), CountingSequence()
    targets: dict[str, Counter[str]] = {}
    for n in range(400):
        client = ("85.214.1.1", "8.8.8.8", "1.0.16.1", "10.20.0.9")[n % 4]
        r = route.redirect(VIDEO, sequence.next, client)
        targets.setdefault(r.region, Counter())[r.target] += 1
    assert targets == {
        "eu": {"cdn": 150, "origin": 50},  # its own 3:1
        "us": {"cdn": 90, "origin": 10},  # the global 9:1, counted apart
        "default": {"cdn": 90, "origin": 10},
    }
    assert set(sequence.numbers) == {"region:eu", "region:us", ""}


def test_local_counting_keeps_the_period_of_the_split_on_each_region_sequence() -> None:
    """A worker that counts locally shifts by whole periods of the split on that sequence;
    the global one would move a region's 3:1 (period 4) against a 2:1 (period 3)."""
    snapshot = ConfigSnapshot(COUNTRIES.get)  # type: ignore[arg-type]
    regions = (
        region("eu", FRA, ["DE"], cdn_weight=3, origin_weight=1),
        region("asia", NYC, ["JP"], cdn_weight=2, origin_weight=1),
        region("us", NYC, ["US"]),
    )
    cfg = config(split=Split(9, 1), server_rules={"s7": Split(1, 1)}, regions=regions)
    snapshot.offer(ConfigVersion(1, cfg, datetime(2026, 1, 1, tzinfo=UTC)))
    periods = {name: snapshot.period(name) for name in ("", "s7", "s8")}
    periods |= {key: snapshot.period(key) for key in ("region:eu", "region:asia", "region:us")}
    assert periods == {
        "": 10,
        "s7": 2,
        "s8": 10,  # no rule: the global split
        "region:eu": 4,
        "region:asia": 3,
        "region:us": 10,  # no split of its own: the global one, on its own sequence
    }


def test_a_region_without_a_healthy_host_sends_its_viewers_to_the_default_pool() -> None:
    snapshot = ConfigSnapshot(COUNTRIES.get)  # type: ignore[arg-type]
    snapshot.offer(ConfigVersion(1, config(), datetime(2026, 1, 1, tzinfo=UTC)))
    snapshot.mark_down(frozenset({FRA}))
    sequence = CountingSequence()
    r = snapshot.router.redirect(VIDEO, sequence.next, "85.214.1.1")
    assert (r.region, r.target, r.location.split("/s1/")[0]) == ("eu", "cdn", GLOBAL)
    assert snapshot.fallbacks.regions == {"eu": 1}
    snapshot.mark_down(frozenset({FRA, GLOBAL}))
    r = snapshot.router.redirect(VIDEO, sequence.next, "85.214.1.1")
    assert (r.target, r.location) == ("origin", VIDEO)  # then the global fallback rules


def test_a_server_rule_split_beats_the_region_split_but_the_region_keeps_its_pool() -> None:
    route = router(config(server_rules={"s1": Split(1, 1)}))
    sequence = CountingSequence()
    results = [route.redirect(VIDEO, sequence.next, "85.214.1.1") for _ in range(4)]
    assert [r.target for r in results] == ["cdn", "origin", "cdn", "origin"]
    assert {r.location.split("/s1/")[0] for r in results if r.target == "cdn"} == {FRA}
    assert set(sequence.numbers) == {"s1"}


def test_a_down_server_still_goes_to_the_cdn_of_the_viewers_region() -> None:
    route = router(config(down_servers=("s1",), split=Split(0, 1)))
    r = route.redirect(VIDEO, CountingSequence().next, "8.8.8.8")
    assert (r.target, r.location.split("/s1/")[0]) == ("cdn", NYC)


def test_regions_cost_nothing_when_none_are_configured() -> None:
    route = router(config(regions=()))
    assert route.redirect(VIDEO, CountingSequence().next, "85.214.1.1").region == "default"


def test_probe_targets_include_region_pools() -> None:
    assert set(config().probe_targets()) == {GLOBAL, FRA, NYC}


def test_route_explanation_takes_no_number_and_moves_no_rotation() -> None:
    route, sequence = router(config()), CountingSequence()
    explained = route.explain("10.20.0.1", VIDEO, sequence.peek, COUNTRIES.get)
    assert (explained.region, explained.matched_by, explained.country) == ("eu", "network", None)
    assert (explained.target, explained.pool) == ("cdn", (FRA,))
    assert sequence.numbers == {}
    explained = route.explain("1.0.16.1", VIDEO, sequence.peek, COUNTRIES.get)
    assert (explained.region, explained.matched_by, explained.country) == (
        "default",
        "default",
        "JP",
    )


@pytest.mark.parametrize(
    ("regions", "field"),
    [
        ((region("eu", FRA, ["DE"]), region("eu", NYC, ["US"])), "regions[1].name"),
        (
            (region("a", FRA, [], ("10.0.0.0/8",)), region("b", NYC, [], ("10.0.0.0/8",))),
            "regions[1].networks",
        ),
        (tuple(region(f"r{i}", FRA, []) for i in range(MAX_REGIONS + 1)), "regions"),
    ],
)
def test_config_is_refused_naming_the_field_when_regions_conflict(
    regions: tuple[Region, ...], field: str
) -> None:
    with pytest.raises(InvalidConfig) as caught:
        config(regions=regions)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"name": "Default"}, "regions[0].name"),
        ({"countries": ["XX"]}, "regions[0].countries"),
        ({"networks": ["10.0.0.1/8"]}, "regions[0].networks"),
        ({"hosts": [("cdn.example.com/x", 1)]}, "regions[0].cdn_hosts[0].host"),
        ({"cdn_weight": 1}, "regions[0].origin_weight"),
        ({"cdn_weight": -1, "origin_weight": 1}, "regions[0].cdn_weight"),
    ],
)
def test_region_is_refused_naming_the_field_when_invalid(
    entry: dict[str, object], field: str
) -> None:
    values: dict[str, object] = {
        "name": "eu",
        "countries": ["DE"],
        "networks": [],
        "hosts": [("cdn.example.com", 1)],
        **entry,
    }
    with pytest.raises(InvalidConfig) as caught:
        Region.of(0, **values)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_regions_change_replaces_the_list() -> None:
    changed = ConfigChange(regions=()).apply(config())
    assert changed.regions == ()
    assert CdnPool.of([(FRA, 1)]) == config().regions[0].pool
