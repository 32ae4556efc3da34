"""Content steering without services: settings, pathway ids, the order of a manifest,
session tokens, the pool a viewer is steered over, and what players report."""

from collections import Counter
from datetime import UTC, datetime

import pytest

from app.application.metrics import Tally
from app.application.snapshot import ConfigSnapshot
from app.application.steering import SteeringDisabled, SteerPlayer
from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.pool import CdnPool
from app.domain.regions import Region, RegionMatcher
from app.domain.router import Router
from app.domain.split import Split
from app.domain.steering import Session, SessionTokens, SteeringPool, SteeringSettings

A, B, C = "http://cdn-a.example.com", "http://cdn-b.example.com", "http://cdn-c.example.com"
ON = SteeringSettings(enabled=True, ttl_seconds=2)
SECRET = b"0123456789abcdef0123456789abcdef"


def steered(*entries: tuple[str, int, str]) -> CdnPool:
    return CdnPool.of(entries)


POOL = steered((A, 3, "a"), (B, 1, "b"), (C, 1, "c"))


@pytest.mark.parametrize("ttl", [0, 3601, 1.5, True, "10"])
def test_a_ttl_outside_1_to_3600_whole_seconds_is_refused(ttl: object) -> None:
    with pytest.raises(InvalidConfig, match=r"content_steering\.ttl_seconds"):
        SteeringSettings(ttl_seconds=ttl)  # type: ignore[arg-type]


def test_ttl_bounds_and_the_defaults_are_accepted() -> None:
    assert SteeringSettings() == SteeringSettings(enabled=False, ttl_seconds=10)
    assert SteeringSettings(ttl_seconds=1).ttl_seconds == 1
    assert SteeringSettings(ttl_seconds=3600).ttl_seconds == 3600


def test_a_settings_document_names_its_field_in_errors() -> None:
    with pytest.raises(InvalidConfig, match=r"regions\[2\]\.content_steering\.ttl_seconds"):
        SteeringSettings.of({"ttl_seconds": 0}, "regions[2].content_steering")
    with pytest.raises(InvalidConfig, match=r"content_steering\.colour"):
        SteeringSettings.of({"colour": 1}, "content_steering")


@pytest.mark.parametrize("pathway", ["", "has space", "ü", "a/b", "x" * 65, 7, "a:b"])
def test_a_pathway_id_of_other_characters_is_refused(pathway: object) -> None:
    with pytest.raises(InvalidConfig, match=r"cdn_hosts\[0\]\.pathway"):
        CdnPool.of([(A, 1, pathway)])


def test_a_pathway_id_twice_in_a_pool_is_refused() -> None:
    with pytest.raises(InvalidConfig, match=r"cdn_hosts\[1\]\.pathway"):
        CdnPool.of([(A, 1, "same"), (B, 1, "same")])


def test_pathway_ids_of_letters_digits_dots_dashes_underscores_are_accepted() -> None:
    pool = CdnPool.of([(A, 1, "CDN-a.eu_1"), (B, 1, None), (C, 1)])
    assert [host.pathway for host in pool.hosts] == ["CDN-a.eu_1", "", ""]


def test_heads_of_new_viewers_follow_the_weights_exactly() -> None:
    pool = SteeringPool("cdn_hosts", POOL, frozenset(), ON)
    heads = [pool.plan().head for _ in range(500)]
    assert Counter(heads) == {"a": 300, "b": 100, "c": 100}


def test_after_the_head_come_the_healthy_by_weight_then_the_down() -> None:
    pool = SteeringPool(
        "cdn_hosts", steered((A, 1, "a"), (B, 5, "b"), (C, 2, "c")), frozenset({A}), ON
    )
    assert pool.plan("c").pathways == ("c", "b", "a")
    assert pool.plan("b").pathways == ("b", "c", "a")


def test_a_sticky_head_stays_while_healthy_and_moves_when_down_or_gone() -> None:
    healthy = SteeringPool("cdn_hosts", POOL, frozenset(), ON)
    assert all(healthy.plan("c").head == "c" for _ in range(10))
    down = SteeringPool("cdn_hosts", POOL, frozenset({C}), ON)
    assert down.plan("c").head != "c"
    assert down.plan("c").pathways[-1] == "c"
    assert healthy.plan("gone").head in ("a", "b", "c")


def test_a_sticky_head_moves_when_its_host_drains_and_the_drained_come_last() -> None:
    """Drained (0%: `drain` in agent mode) is up but takes no new viewers; a viewer on it is
    moved as if it were down, and keeps it only as a last resort before the down ones."""
    drained = SteeringPool("cdn_hosts", POOL, frozenset({B}), ON, {C: 0})
    plans = [drained.plan("c") for _ in range(10)]
    assert {plan.head for plan in plans} == {"a"}
    assert plans[0].pathways == ("a", "c", "b")


def test_with_every_pathway_down_the_manifest_still_lists_them() -> None:
    pool = SteeringPool("cdn_hosts", POOL, frozenset({A, B, C}), ON)
    assert pool.plan().pathways == ("a", "b", "c")
    assert pool.peek() == "a"


def test_a_token_reads_back_and_an_edited_or_foreign_one_does_not() -> None:
    tokens = SessionTokens(SECRET)
    token = tokens.issue(Session("s1d", "cdn_hosts", "a"))
    assert tokens.read(token) == Session("s1d", "cdn_hosts", "a")
    payload, _, mac = token.partition(".")
    assert tokens.read(f"{payload}x.{mac}") is None
    assert tokens.read(f"{payload}.{mac[:-2]}AA") is None
    assert SessionTokens(b"another secret of 32 bytes here!").read(token) is None
    for garbage in ("", ".", "a.b.c", "%%%", "x" * 600, "\u00e9.\u00e9"):
        assert tokens.read(garbage) is None


def version(config: BalancerConfig) -> ConfigVersion:
    return ConfigVersion(1, config, datetime(2026, 1, 1, tzinfo=UTC))


def player(config: BalancerConfig, tally: Tally | None = None) -> SteerPlayer:
    snapshot = ConfigSnapshot()
    snapshot.offer(version(config))
    return SteerPlayer(snapshot, SessionTokens(SECRET), tally)


def test_steering_off_is_refused() -> None:
    steer = player(BalancerConfig(cdn_host="x", split=Split(1, 0), cdn_hosts=POOL))
    with pytest.raises(SteeringDisabled):
        steer()


def test_a_server_rules_pool_steers_with_its_own_settings() -> None:
    own = steered(("cdn-s7.example.com", 1, "s7"))
    config = BalancerConfig(
        cdn_host="x",
        split=Split(1, 0),
        cdn_hosts=POOL,
        content_steering=ON,
        server_rules={"s7": Split(1, 0)},
        server_pools={"s7": own},
        server_steering={"s7": SteeringSettings(enabled=True, ttl_seconds=30)},
    )
    answer = player(config)(server="s7")
    assert answer.plan.pathways == ("s7",)
    assert answer.ttl == 30
    assert player(config)(server="s8").plan.pool == "cdn_hosts"


def test_steering_settings_of_a_rule_without_a_pool_are_refused() -> None:
    with pytest.raises(InvalidConfig, match=r"server_rules\.s7\.content_steering"):
        BalancerConfig(
            cdn_host="x",
            split=Split(1, 0),
            server_rules={"s7": Split(1, 0)},
            server_steering={"s7": ON},
        )


def test_a_token_of_another_pool_gives_no_sticky_head() -> None:
    config = BalancerConfig(cdn_host="x", split=Split(1, 0), cdn_hosts=POOL, content_steering=ON)
    steer = player(config)
    foreign = SessionTokens(SECRET).issue(Session("v", "regions.eu.cdn_hosts", "c"))
    heads = Counter(steer(token=foreign).plan.head for _ in range(5))
    assert heads == {"a": 3, "b": 1, "c": 1}  # the rotation, as for new viewers


def test_reports_count_only_pathways_of_the_pool_with_a_usable_throughput() -> None:
    config = BalancerConfig(cdn_host="x", split=Split(1, 0), cdn_hosts=POOL, content_steering=ON)
    tally = Tally()
    steer = player(config, tally)
    steer(pathway="a", throughput="3000000")  # hls.js
    steer(pathway='"a,b,c"', throughput=",600000,")  # dash.js: b measured
    steer(pathway="evil", throughput="1")
    steer(pathway="b", throughput="-1")
    steer(pathway="c", throughput="9" * 30)
    assert tally.steering_requests == {"a": 1, "b": 2, "": 1, "c": 1}
    assert tally.steering_throughput_sum == {"a": 3e6, "b": 6e5}


def test_a_region_without_its_own_settings_takes_the_global_ones() -> None:
    region = Region.of(
        0,
        name="eu",
        countries=[],
        networks=["10.0.0.0/8"],
        hosts=[("cdn-eu.example.com", 1, "eu")],
    )
    config = BalancerConfig(
        cdn_host="x", split=Split(1, 0), cdn_hosts=POOL, content_steering=ON, regions=(region,)
    )
    route = Router(version(config), matcher=RegionMatcher([((), ("10.0.0.0/8",))], lambda _: None))
    assert route.steering_pool("s1", "10.1.2.3").plan().pathways == ("eu",)
    assert route.steering_pool("s1", "10.1.2.3").settings == ON
    assert route.steering_pool("s1", "192.0.2.1").name == "cdn_hosts"


def test_heads_and_order_follow_the_effective_weights_of_load_reports() -> None:
    """Equal configured weights, A reporting 50%: new viewers' heads go 1:2, B first after
    the head; a drained host (0%) is only a last resort among the healthy."""
    pool = steered((A, 1, "a"), (B, 1, "b"), (C, 1, "c"))
    steering = SteeringPool("cdn_hosts", pool, frozenset(), ON, {A: 50, C: 0})
    heads = Counter(steering.plan().head for _ in range(300))
    assert heads == {"b": 200, "a": 100}
    assert steering.plan("a").pathways == ("a", "b", "c")


def test_a_load_change_reweighs_the_steering_pools_of_the_served_router() -> None:
    config = BalancerConfig(
        cdn_host="cdn.example.com",
        split=Split(9, 1),
        cdn_hosts=steered((A, 1, "a"), (B, 1, "b")),
        cdn_health=HealthSettings(enabled=True),
        content_steering=ON,
    )
    router = Router(version(config))
    assert Counter(router.steering_pool("").plan().head for _ in range(100)) == {"a": 50, "b": 50}
    router.reweigh({A: 25})
    assert Counter(router.steering_pool("").plan().head for _ in range(100)) == {"a": 20, "b": 80}
