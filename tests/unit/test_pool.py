from collections import Counter
from datetime import UTC, datetime
from itertools import groupby

import pytest

from app.application.config_versions import ConfigChange
from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig, NoHealthyTarget
from app.domain.pool import CdnPool, Rotation, smooth_weighted_order
from app.domain.router import Router
from app.domain.split import Split
from tests.support.fakes import CountingSequence

A, B, C = "http://cdn-a.example.com", "http://cdn-b.example.com", "http://cdn-c.example.com"
VIDEO = "http://s1.origin-cluster/video/1.m3u8"


def pool(*entries: tuple[str, int]) -> CdnPool:
    return CdnPool.of(entries)


def router(config: BalancerConfig, down: frozenset[str] = frozenset()) -> Router:
    return Router(ConfigVersion(1, config, datetime(2026, 1, 1, tzinfo=UTC)), down)


def hosts_of(route: Router, count: int, video: str = VIDEO) -> list[str]:
    sequence = CountingSequence()
    return [route.redirect(video, sequence.next).location.split("/s1/")[0] for _ in range(count)]


def test_400_cdn_redirects_at_3_to_1_are_exactly_300_and_100_never_4_in_a_row() -> None:
    config = BalancerConfig(
        cdn_host="x", split=Split(1, 0), cdn_hosts=pool(("cdn-a.example.com", 3), (B, 1))
    )
    picked = hosts_of(router(config), 400)
    assert Counter(picked) == {A: 300, B: 100}
    assert max(len(list(run)) for _, run in groupby(picked)) == 3


def test_weights_interleave_as_nginx_does_when_5_1_1() -> None:
    assert smooth_weighted_order([5, 1, 1], 7) == [0, 0, 1, 0, 2, 0, 0]


def test_weights_stay_exact_when_their_sum_is_too_large_to_precompute() -> None:
    rotation = Rotation(pool((A, 1000), (B, 999), (C, 997)))
    picked = Counter(rotation.next() for _ in range(2996 * 2))
    assert picked == {A: 2000, B: 1998, C: 1994}


def test_a_down_host_leaves_the_rotation_and_the_others_keep_their_ratio() -> None:
    config = BalancerConfig(cdn_host="x", split=Split(1, 0), cdn_hosts=pool((A, 3), (B, 1), (C, 2)))
    picked = hosts_of(router(config, frozenset({A})), 300)
    assert Counter(picked) == {B: 100, C: 200}


def test_the_origin_share_does_not_change_with_the_pool() -> None:
    single = BalancerConfig(cdn_host=A, split=Split(9, 1))
    pooled = BalancerConfig(cdn_host="x", split=Split(9, 1), cdn_hosts=pool((A, 1), (B, 5)))
    origin = "http://s1.origin-cluster"
    assert [h == origin for h in hosts_of(router(single), 100)] == [
        h == origin for h in hosts_of(router(pooled, frozenset({B})), 100)
    ]


def test_cdn_requests_go_to_the_origin_when_no_host_is_healthy_and_fallback_is_on() -> None:
    config = BalancerConfig(cdn_host=A, split=Split(1, 0))
    sequence = CountingSequence()
    route = router(config, frozenset({A}))
    redirect = route.redirect(VIDEO, sequence.next)
    assert (redirect.target, redirect.location) == ("origin", VIDEO)


def test_cdn_requests_are_refused_with_retry_after_when_no_host_is_healthy_and_no_fallback() -> (
    None
):
    config = BalancerConfig(
        cdn_host=A,
        split=Split(1, 0),
        origin_fallback=False,
        cdn_health=HealthSettings(interval_seconds=2.5, rise=2),
    )
    with pytest.raises(NoHealthyTarget) as raised:
        router(config, frozenset({A})).redirect(VIDEO, CountingSequence().next)
    assert raised.value.code == "no-healthy-cdn"
    assert raised.value.retry_after == 5


def test_health_does_not_matter_when_the_split_sends_everything_to_the_origin() -> None:
    config = BalancerConfig(cdn_host=A, split=Split(0, 1), origin_fallback=False)
    redirect = router(config, frozenset({A})).redirect(VIDEO, CountingSequence().next)
    assert redirect.location == VIDEO


def test_health_does_not_matter_when_checks_are_disabled() -> None:
    config = BalancerConfig(cdn_host=A, split=Split(1, 0), cdn_health=HealthSettings(enabled=False))
    assert hosts_of(router(config, frozenset({A})), 1) == [A]


def test_a_down_server_sends_everything_to_the_cdn_whatever_the_split() -> None:
    config = BalancerConfig(cdn_host=A, split=Split(0, 1), down_servers=("s1",))
    assert hosts_of(router(config), 10) == [A] * 10


def test_a_down_server_is_refused_when_the_pool_is_down_too_even_with_fallback() -> None:
    config = BalancerConfig(cdn_host=A, split=Split(1, 1), down_servers=("s1",))
    with pytest.raises(NoHealthyTarget) as raised:
        router(config, frozenset({A})).redirect(VIDEO, CountingSequence().next)
    assert raised.value.code == "no-healthy-target"


def test_a_server_rule_with_its_own_pool_uses_it_and_others_use_the_global_pool() -> None:
    config = BalancerConfig(
        cdn_host=A,
        split=Split(1, 0),
        server_rules={"s1": Split(1, 0)},
        server_pools={"s1": pool((B, 1), (C, 1))},
    )
    route = router(config)
    assert set(hosts_of(route, 4)) == {B, C}
    other = route.redirect("http://s2.origin-cluster/v.m3u8", CountingSequence().next)
    assert other.location == f"{A}/s2/v.m3u8"


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ([], "cdn_hosts"),
        ([("cdn.example.com", 1), ("CDN.example.com", 2)], "cdn_hosts[1].host"),
        ([("cdn.example.com", 0)], "cdn_hosts[0].weight"),
        ([("cdn.example.com", 1001)], "cdn_hosts[0].weight"),
        ([("cdn.example.com", True)], "cdn_hosts[0].weight"),
        ([("cdn.example.com/path", 1)], "cdn_hosts[0].host"),
        ([(f"cdn{i}.example.com", 1) for i in range(65)], "cdn_hosts"),
    ],
)
def test_invalid_pool_is_refused_naming_the_entry(
    entries: list[tuple[str, int]], field: str
) -> None:
    with pytest.raises(InvalidConfig) as raised:
        CdnPool.of(entries)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"interval_seconds": 0}, "cdn_health.interval_seconds"),
        ({"interval_seconds": 2, "timeout_seconds": 2}, "cdn_health.timeout_seconds"),
        ({"fall": 0}, "cdn_health.fall"),
        ({"rise": 101}, "cdn_health.rise"),
        ({"method": "POST"}, "cdn_health.method"),
        ({"path": "health"}, "cdn_health.path"),
        ({"path": "/a b"}, "cdn_health.path"),
    ],
)
def test_invalid_health_settings_are_refused_naming_the_field(
    settings: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidConfig) as raised:
        HealthSettings(**settings)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_writing_cdn_host_sets_a_pool_of_one_and_cdn_host_reads_the_first_of_a_pool() -> None:
    base = BalancerConfig(cdn_host="x", split=Split(1, 0), cdn_hosts=pool((A, 3), (B, 1)))
    assert base.cdn_host == A
    single = ConfigChange(cdn_host="cdn-c.example.com").apply(base)
    assert [(h.host, h.weight) for h in single.pool.hosts] == [("cdn-c.example.com", 1)]
    pooled = ConfigChange(cdn_hosts=pool(("cdn-b.example.com", 2), (C, 1))).apply(single)
    assert pooled.cdn_host == "cdn-b.example.com"


def test_cdn_host_and_cdn_hosts_together_are_refused() -> None:
    with pytest.raises(InvalidConfig) as raised:
        ConfigChange(cdn_host=A, cdn_hosts=pool((B, 1))).apply(
            BalancerConfig(cdn_host=A, split=Split(1, 0))
        )
    assert raised.value.field == "cdn_hosts"


def test_dropping_a_server_rule_drops_its_pool() -> None:
    config = BalancerConfig(
        cdn_host=A,
        split=Split(1, 0),
        server_rules={"s1": Split(1, 0), "s2": Split(1, 1)},
        server_pools={"s1": pool((B, 1))},
    )
    changed = ConfigChange(server_rules={"s2": Split(1, 1)}).apply(config)
    assert dict(changed.server_pools) == {}
