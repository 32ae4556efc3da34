import pytest

from app.application.config import ConfigChange, ReloadConfig, RollbackConfig, UpdateConfig
from app.application.errors import PreconditionFailed, VersionNotFound
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig
from app.domain.errors import InvalidConfig
from app.domain.split import Split
from tests.unit.fakes import DEFAULT, FakeConfigRepository


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
