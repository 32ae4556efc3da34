from dataclasses import replace

import pytest

from app.application.config_versions import (
    ConfigChange,
    ReloadConfig,
    RemoveServerRule,
    RollbackConfig,
    ServerRule,
    SetServerRule,
    UpdateConfig,
)
from app.application.errors import PreconditionFailed, ServerRuleNotFound, VersionNotFound
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig
from app.domain.errors import InvalidConfig
from app.domain.pool import CdnPool
from app.domain.regions import Region
from app.domain.split import Split
from tests.support.fakes import DEFAULT, FakeConfigRepository, version


@pytest.fixture
def repository() -> FakeConfigRepository:
    return FakeConfigRepository()


@pytest.fixture
async def snapshot(repository: FakeConfigRepository) -> ConfigSnapshot:
    snapshot = ConfigSnapshot()
    await ReloadConfig(repository, snapshot)()
    return snapshot


async def test_update_stores_the_next_version_and_serves_it_at_once(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    saved = await UpdateConfig(repository, snapshot)(
        ConfigChange(cdn_host="cdn2.example.com", comment="move"), if_match=None
    )
    assert saved.version == 2
    assert saved.comment == "move"
    assert snapshot.version.config.cdn_host == "cdn2.example.com"


async def test_update_applies_its_change_on_top_of_a_rival_write(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    repository.rivals.append(BalancerConfig(cdn_host="rival.example.com", split=Split(1, 1)))
    saved = await UpdateConfig(repository, snapshot)(ConfigChange(origin_weight=3), if_match=None)
    assert [v.version for v in repository.versions] == [1, 2, 3]
    assert saved.config.cdn_host == "rival.example.com"
    assert saved.config.split == Split(1, 3)


async def test_update_with_a_stale_if_match_changes_nothing(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    with pytest.raises(PreconditionFailed):
        await UpdateConfig(repository, snapshot)(ConfigChange(cdn_weight=1), if_match=7)
    assert len(repository.versions) == 1


async def test_update_losing_a_race_under_if_match_changes_nothing_of_its_own(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    repository.rivals.append(DEFAULT)
    with pytest.raises(PreconditionFailed):
        await UpdateConfig(repository, snapshot)(ConfigChange(cdn_weight=1), if_match=1)
    assert [v.config for v in repository.versions] == [DEFAULT, DEFAULT]


async def test_invalid_update_writes_nothing(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    with pytest.raises(InvalidConfig):
        await UpdateConfig(repository, snapshot)(
            ConfigChange(cdn_weight=0, origin_weight=0), if_match=None
        )
    assert len(repository.versions) == 1


async def test_rollback_copies_an_old_version_into_a_new_one(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    update = UpdateConfig(repository, snapshot)
    await update(ConfigChange(cdn_host="cdn2.example.com"), if_match=None)
    saved = await RollbackConfig(repository, snapshot)(1, if_match=None, comment=None)
    assert saved.version == 3
    assert saved.config == DEFAULT
    assert saved.comment == "rollback to version 1"


async def test_rollback_to_an_unknown_version_writes_nothing(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    with pytest.raises(VersionNotFound):
        await RollbackConfig(repository, snapshot)(42, if_match=None, comment=None)
    assert len(repository.versions) == 1


async def test_reload_ignores_a_version_older_than_the_one_served(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    await UpdateConfig(repository, snapshot)(ConfigChange(cdn_weight=1), if_match=None)
    repository.versions.pop()
    assert (await ReloadConfig(repository, snapshot)()).version == 2


OFF_CDN = Split(0, 1)
HALF = Split(1, 1)


def with_rules(**rules: Split) -> BalancerConfig:
    return replace(DEFAULT, server_rules=rules)


async def test_set_server_rule_adds_one_rule_and_keeps_everything_else(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    await UpdateConfig(repository, snapshot)(
        ConfigChange(cdn_host="cdn2.example.com", server_rules={"s1": HALF}), if_match=None
    )
    saved = await SetServerRule(repository, snapshot)(
        "s7", ServerRule(OFF_CDN), if_match=None, comment=None
    )
    assert saved.version == 3
    assert dict(saved.config.server_rules) == {"s1": HALF, "s7": OFF_CDN}
    assert saved.config.cdn_host == "cdn2.example.com"
    assert saved.comment == "set the rule of server s7"
    assert snapshot.version.version == 3


async def test_set_server_rule_keeps_a_rule_a_rival_wrote_a_moment_before(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    repository.rivals.append(with_rules(s1=HALF))  # lands between our read and our write
    saved = await SetServerRule(repository, snapshot)(
        "s7", ServerRule(OFF_CDN), if_match=None, comment="x"
    )
    assert [v.version for v in repository.versions] == [1, 2, 3]
    assert dict(saved.config.server_rules) == {"s1": HALF, "s7": OFF_CDN}
    assert saved.comment == "x"


async def test_set_server_rule_replaces_the_rule_of_the_same_server(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    set_rule = SetServerRule(repository, snapshot)
    await set_rule("s7", ServerRule(OFF_CDN), if_match=None, comment=None)
    saved = await set_rule("s7", ServerRule(HALF), if_match=2, comment=None)
    assert dict(saved.config.server_rules) == {"s7": HALF}


async def test_set_server_rule_with_a_bad_label_names_the_server_and_writes_nothing(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    for label in ("S7", "bad label", "-s7", "s" * 64, ""):
        with pytest.raises(InvalidConfig) as raised:
            await SetServerRule(repository, snapshot)(
                label, ServerRule(OFF_CDN), if_match=None, comment=None
            )
        assert raised.value.field == "server"
    assert len(repository.versions) == 1


async def test_set_server_rule_with_a_stale_if_match_writes_nothing(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    with pytest.raises(PreconditionFailed):
        await SetServerRule(repository, snapshot)(
            "s7", ServerRule(OFF_CDN), if_match=5, comment=None
        )
    assert len(repository.versions) == 1


async def test_remove_server_rule_removes_only_that_rule(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    await UpdateConfig(repository, snapshot)(
        ConfigChange(server_rules={"s1": HALF, "s7": OFF_CDN}), if_match=None
    )
    saved = await RemoveServerRule(repository, snapshot)("s7", if_match=None, comment=None)
    assert dict(saved.config.server_rules) == {"s1": HALF}
    assert saved.comment == "remove the rule of server s7"


async def test_remove_server_rule_of_a_server_without_one_is_not_found_and_writes_nothing(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    with pytest.raises(ServerRuleNotFound):
        await RemoveServerRule(repository, snapshot)("s7", if_match=None, comment=None)
    assert len(repository.versions) == 1


async def test_remove_server_rule_is_not_found_when_a_rival_removed_it_first(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    await SetServerRule(repository, snapshot)(
        "s7", ServerRule(OFF_CDN), if_match=None, comment=None
    )
    repository.rivals.append(with_rules())
    with pytest.raises(ServerRuleNotFound):
        await RemoveServerRule(repository, snapshot)("s7", if_match=None, comment=None)
    assert [v.version for v in repository.versions] == [1, 2, 3]


EU = CdnPool.of([("cdn-eu.example.com", 1)])


async def test_set_server_rule_stores_the_rules_own_pool_and_a_rule_without_one_drops_it(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    set_rule = SetServerRule(repository, snapshot)
    with_pool = await set_rule("s7", ServerRule(HALF, EU), if_match=None, comment=None)
    assert dict(with_pool.config.server_pools) == {"s7": EU}
    without = await set_rule("s7", ServerRule(OFF_CDN), if_match=None, comment=None)
    assert dict(without.config.server_rules) == {"s7": OFF_CDN}
    assert dict(without.config.server_pools) == {}


async def test_set_server_rule_keeps_the_pools_of_other_rules(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    set_rule = SetServerRule(repository, snapshot)
    await set_rule("s1", ServerRule(HALF, EU), if_match=None, comment=None)
    saved = await set_rule("s7", ServerRule(OFF_CDN), if_match=None, comment=None)
    assert dict(saved.config.server_pools) == {"s1": EU}


async def test_remove_server_rule_removes_its_pool_with_it(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    await SetServerRule(repository, snapshot)(
        "s7", ServerRule(HALF, EU), if_match=None, comment=None
    )
    saved = await RemoveServerRule(repository, snapshot)("s7", if_match=None, comment=None)
    assert dict(saved.config.server_rules) == {}
    assert dict(saved.config.server_pools) == {}


async def test_snapshot_tells_the_period_of_each_sequence_for_local_counting(
    repository: FakeConfigRepository, snapshot: ConfigSnapshot
) -> None:
    assert ConfigSnapshot().period("") == 1  # nothing loaded yet
    await UpdateConfig(repository, snapshot)(
        ConfigChange(server_rules={"s7": Split(2, 1)}), if_match=None
    )
    assert snapshot.period("") == 10  # the global 9:1
    assert snapshot.period("s7") == 3
    assert snapshot.period("s8") == 10  # no rule: counted on the global sequence anyway


async def test_a_version_is_served_only_once_the_sequences_it_counts_on_are_prepared() -> None:
    """What makes a new region or rule exact from its first request: the worker leases its
    sequence before the version that has it serves (tests/e2e/test_shared_sequence)."""
    snapshot = ConfigSnapshot()
    prepared: list[tuple[tuple[str, ...], int | None]] = []

    async def prepare(names: tuple[str, ...]) -> None:
        served = snapshot.current
        prepared.append((names, None if served is None else served.version.version))

    snapshot.before_serving(prepare)
    await snapshot.serve(version(1))
    regional = BalancerConfig(
        cdn_host="cdn.example.com",
        split=Split(9, 1),
        server_rules={"s7": Split(1, 1)},
        regions=(Region("eu", EU, ("DE",)),),
    )
    assert await snapshot.serve(version(2, regional))
    assert not await snapshot.serve(version(2, regional))  # not newer: nothing to do
    assert prepared == [(("",), None), (("", "s7", "region:eu"), 1)]
    assert snapshot.version.version == 2
