from app.domain.cdn_health import HealthSettings, HostState

SETTINGS = HealthSettings(fall=3, rise=2)


def run(state: HostState, outcomes: str, start: float = 0.0) -> list[HostState]:
    """`outcomes`: "." a passed probe, "x" a failed one, one second apart."""
    states = []
    for offset, outcome in enumerate(outcomes):
        state = state.observe(None if outcome == "." else "refused", start + offset, SETTINGS)
        states.append(state)
    return states


def test_a_healthy_host_goes_down_after_fall_failures_in_a_row() -> None:
    states = run(HostState(), "xx.xxx")
    assert [s.healthy for s in states] == [True, True, True, True, True, False]
    assert states[-1].since == 5
    assert states[-1].last_error == "refused"
    assert states[-1].consecutive_failures == 3


def test_a_down_host_comes_back_after_rise_successes_in_a_row() -> None:
    down = run(HostState(), "xxx")[-1]
    states = run(down, ".x..", start=10)
    assert [s.healthy for s in states] == [False, False, False, True]
    assert states[-1].since == 13
    assert states[-1].last_error is None


def test_since_is_kept_while_the_state_holds() -> None:
    states = run(HostState(), "...")
    assert [s.since for s in states] == [0, 0, 0]
    assert states[-1].last_check == 2
