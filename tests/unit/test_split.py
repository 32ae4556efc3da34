import pytest

from app.domain.errors import InvalidConfig
from app.domain.split import Split, Target


def origins(split: Split, start: int, count: int) -> int:
    return sum(split.target(n) is Target.ORIGIN for n in range(start, start + count))


def test_every_tenth_goes_to_origin_when_split_is_9_to_1() -> None:
    split = Split(9, 1)
    assert [split.target(n) for n in range(10)] == [Target.CDN] * 9 + [Target.ORIGIN]
    assert all(origins(split, start, 10) == 1 for start in range(1000))


def test_any_five_consecutive_hold_exactly_two_origins_when_split_is_3_to_2() -> None:
    split = Split(3, 2)
    assert all(origins(split, start, 5) == 2 for start in range(1000))


@pytest.mark.parametrize(("cdn", "origin"), [(9, 1), (3, 2), (1, 1), (7, 5), (1, 99), (999, 1)])
def test_origin_share_is_exact_over_every_window_of_one_period(cdn: int, origin: int) -> None:
    split = Split(cdn, origin)
    period = cdn + origin
    for start in range(0, 5 * period, max(1, period // 7)):
        assert origins(split, start, period) == origin


def test_origin_choices_are_spread_not_bunched_when_split_is_1_to_1() -> None:
    split = Split(1, 1)
    assert [split.target(n) for n in range(4)] == [Target.CDN, Target.ORIGIN] * 2


def test_all_cdn_when_origin_weight_is_0() -> None:
    assert origins(Split(1, 0), 0, 1000) == 0


def test_all_origin_when_cdn_weight_is_0() -> None:
    assert origins(Split(0, 1), 0, 1000) == 1000


def test_sequence_numbers_past_one_period_keep_the_pattern() -> None:
    split = Split(9, 1)
    base = 10**15
    assert origins(split, base, 10) == 1


@pytest.mark.parametrize(
    ("cdn", "origin", "field"),
    [
        (0, 0, "origin_weight"),
        (-1, 1, "cdn_weight"),
        (1, -5, "origin_weight"),
        (1.5, 1, "cdn_weight"),
        (True, 1, "cdn_weight"),
        (10**9, 1, "cdn_weight"),
    ],
)
def test_invalid_weights_are_refused(cdn: object, origin: object, field: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        Split(cdn, origin)  # type: ignore[arg-type]
    assert error.value.field == field


def test_origin_every_n_means_n_minus_1_to_1() -> None:
    assert Split.origin_every(10) == Split(9, 1)
    assert Split.origin_every(1) == Split(0, 1)
    with pytest.raises(InvalidConfig):
        Split.origin_every(0)


@pytest.mark.parametrize(("cdn", "origin"), [(9, 1), (3, 2), (0, 1), (1, 0), (7, 5)])
def test_schedule_lists_the_target_of_every_number_of_a_period(cdn: int, origin: int) -> None:
    split = Split(cdn, origin)
    schedule = split.schedule()
    assert len(schedule) == cdn + origin
    assert all(schedule[n % len(schedule)] is split.target(n) for n in range(-50, 50))
