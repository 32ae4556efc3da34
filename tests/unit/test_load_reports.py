"""Load reports: HAProxy agent words, ORCA utilization, and the weights they give."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.application.snapshot import ConfigSnapshot
from app.domain.cdn_health import HealthSettings, HostState
from app.domain.config import BalancerConfig
from app.domain.errors import InvalidConfig
from app.domain.load import (
    MAX_REPORT_BYTES,
    LoadReport,
    parse_agent,
    parse_orca,
    parse_utilization_body,
    read_report,
    slow_start_percent,
)
from app.domain.pool import CdnPool, Rotation
from app.domain.regions import Region, RegionMatcher
from app.domain.router import Router
from app.domain.split import Split
from tests.support.fakes import CountingSequence, version

A, B, C = "http://cdn-a.example.com", "http://cdn-b.example.com", "http://cdn-c.example.com"
VIDEO = "http://s1.origin-cluster/video/1.m3u8"
AGENT = HealthSettings(method="GET", load="agent", fall=3, rise=2)


@pytest.mark.parametrize(
    ("line", "state", "percent"),
    [
        (b"75%", None, 75),
        (b"up 80%", "up", 80),
        (b"UP\t80%", "up", 80),
        (b"ready,50%", "ready", 50),
        (b"drain", "drain", None),
        (b"maint", "maint", None),
        (b"down #disk full", "down", None),
        (b"fail", "down", None),
        (b"up drain", "drain", None),
        (b"up maxconn:30 256%", "up", 256),
        (b"0%", None, 0),
        (b'{"state": "drain", "weight_percent": 75}', "drain", 75),
        (b'{"weight_percent": 40}', None, 40),
        (b'{"state": "MAINT"}', "maint", None),
    ],
)
def test_agent_words_are_read_as_haproxy_reads_them(
    line: bytes, state: str | None, percent: int | None
) -> None:
    assert parse_agent(line) == LoadReport(state=state, weight_percent=percent)


@pytest.mark.parametrize(
    "line",
    [
        b"257%",
        b"-5%",
        b"1000%",
        b"up 50% 60%",
        b"OK",
        b"healthy",
        b"\xff\xfe",
        b"{",
        b"[1]",
        b'{"state": "sleeping"}',
        b'{"weight_percent": 300}',
        b'{"weight_percent": 1.5}',
        b'{"weight_percent": true}',
        b'{"other": 1}',
        b"5" * (MAX_REPORT_BYTES + 1),
    ],
)
def test_agent_garbage_is_an_error_report_not_an_exception(line: bytes) -> None:
    report = parse_agent(line)
    assert report is not None
    assert report.error
    assert report.percent() == 100


def test_an_empty_body_line_reports_nothing() -> None:
    assert parse_agent(b"") is None
    assert parse_agent(b"  \r") is None
    assert parse_agent(b"# only a comment") is None


@given(st.integers(0, 256))
def test_every_percentage_from_0_to_256_scales_the_weight(percent: int) -> None:
    report = parse_agent(f"up {percent}%".encode())
    assert report == LoadReport(state="up", weight_percent=percent)
    assert report.percent() == percent


@given(st.binary(max_size=2 * MAX_REPORT_BYTES))
def test_any_bytes_give_a_report_none_or_an_error_never_an_exception(raw: bytes) -> None:
    for report in (
        parse_agent(raw),
        parse_orca(raw),
        parse_utilization_body(raw),
        read_report("agent", raw, raw),
        read_report("utilization", raw, raw),
    ):
        if report is not None and report.error is None:
            assert 0 <= report.percent() <= 256
        elif report is not None:
            assert (report.state, report.weight_percent, report.utilization) == (None, None, None)


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=200))
def test_any_ascii_line_parses_without_an_exception(text: str) -> None:
    parse_agent(text.encode())
    parse_orca(text.encode())


@pytest.mark.parametrize(
    ("header", "utilization"),
    [
        (b"TEXT cpu_utilization=0.72", 0.72),
        (b"TEXT cpu_utilization=0.72, application_utilization=0.8", 0.8),
        (b"TEXT application_utilization=0.3,cpu_utilization=0.9, rps_fractional=10", 0.3),
        (b"TEXT named_metrics.queue=3, cpu_utilization=1.5", 1.5),
        (b'JSON {"cpu_utilization": 0.2}', 0.2),
        (b'JSON {"cpu_utilization": 0.2, "application_utilization": 0.6}', 0.6),
        (b"TEXT cpu_utilization=0", 0.0),
    ],
)
def test_orca_text_and_json_forms_prefer_application_utilization(
    header: bytes, utilization: float
) -> None:
    assert parse_orca(header) == LoadReport(utilization=utilization)


@pytest.mark.parametrize(
    "header",
    [
        b"TEXT cpu_utilization=abc",
        b"TEXT cpu_utilization=-0.1",
        b"TEXT cpu_utilization=nan",
        b"TEXT cpu_utilization=inf",
        b"TEXT mem_utilization=0.5",
        b"TEXT cpu_utilization",
        b"JSON {not json}",
        b'JSON {"cpu_utilization": NaN}',
        b'JSON {"cpu_utilization": "0.5"}',
        b"JSON [0.5]",
        b"BIN CgkJAAAAAAAA4D8=",
        b"cpu_utilization=0.5",
        b"",
    ],
)
def test_malformed_orca_headers_are_errors(header: bytes) -> None:
    report = parse_orca(header)
    assert report.error
    assert report.utilization is None


@given(st.floats(min_value=0, max_value=10, allow_nan=False))
def test_the_share_is_one_minus_utilization_at_least_5_percent(utilization: float) -> None:
    report = parse_orca(f"TEXT cpu_utilization={utilization!r}".encode())
    assert report.utilization == pytest.approx(utilization)
    expected = round(100 * max(0.05, 1 - min(utilization, 0.95)))
    assert report.percent() == expected
    assert 5 <= report.percent() <= 100


def test_utilization_one_and_above_counts_as_095() -> None:
    assert LoadReport(utilization=1.0).percent() == 5
    assert LoadReport(utilization=7.0).percent() == 5
    assert LoadReport(utilization=0.2).percent() == 80
    assert LoadReport(utilization=0.6).percent() == 40


def test_a_utilization_body_is_read_and_a_plain_health_page_is_not_a_report() -> None:
    assert parse_utilization_body(b'{"utilization": 0.72}') == LoadReport(utilization=0.72)
    assert parse_utilization_body(b"OK") is None
    assert parse_utilization_body(b'{"status": "ok"}') is None
    assert parse_utilization_body(b'{"utilization": "high"}').error  # type: ignore[union-attr]
    assert read_report("utilization", None, b'{"utilization": 0.5}') == LoadReport(utilization=0.5)
    # The header wins over the body.
    assert read_report("utilization", b"TEXT cpu_utilization=0.1", b'{"utilization": 0.9}') == (
        LoadReport(utilization=0.1)
    )
    assert read_report("off", b"TEXT cpu_utilization=0.1", b"50%") is None


def test_slow_start_ramps_from_10_percent_to_all_linearly() -> None:
    assert slow_start_percent(100, 0.0, 0.0, 10) == 10
    assert slow_start_percent(100, 0.0, 5.0, 10) == 55
    assert slow_start_percent(100, 0.0, 10.0, 10) == 100
    assert slow_start_percent(50, 0.0, 0.0, 10) == 5
    assert slow_start_percent(5, 0.0, 0.0, 10) == 1  # never cut to 0
    assert slow_start_percent(0, 0.0, 0.0, 10) == 0
    assert slow_start_percent(100, None, 0.0, 10) == 100
    assert slow_start_percent(100, 0.0, 0.0, 0) == 100


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"load": "weights"}, "cdn_health.load"),
        ({"load": "agent"}, "cdn_health.method"),  # HEAD has no body to carry the words
        ({"slow_start_seconds": -1}, "cdn_health.slow_start_seconds"),
        ({"slow_start_seconds": 3601}, "cdn_health.slow_start_seconds"),
        ({"slow_start_seconds": "10"}, "cdn_health.slow_start_seconds"),
        ({"slow_start_seconds": True}, "cdn_health.slow_start_seconds"),
    ],
)
def test_bad_load_settings_are_refused(values: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as refused:
        HealthSettings(**values)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_load_settings_default_to_off_and_no_slow_start() -> None:
    settings = HealthSettings()
    assert (settings.load, settings.slow_start_seconds) == ("off", 0.0)
    assert HealthSettings(load="utilization").load == "utilization"
    assert (
        HealthSettings(method="GET", load="agent", slow_start_seconds=30).slow_start_seconds == 30
    )


def observe(
    state: HostState, *reports: LoadReport | None, settings: HealthSettings = AGENT
) -> HostState:
    for now, report in enumerate(reports, start=1):
        state = state.observe(None, float(now), settings, report)
    return state


def test_maint_and_down_take_a_host_out_at_once_and_up_needs_rise() -> None:
    up = observe(HostState(), LoadReport(state="up"))
    assert up.healthy
    out = observe(up, LoadReport(state="maint"))
    assert not out.healthy  # fall is 3: no wait
    assert out.last_error == "reported maint"
    assert not observe(out, LoadReport(state="up")).healthy
    assert observe(out, LoadReport(state="up"), LoadReport(state="ready")).healthy


def test_drain_keeps_the_host_up_at_weight_0() -> None:
    drained = observe(HostState(), LoadReport(state="drain"))
    assert drained.healthy
    assert drained.weight_percent == 0


def test_a_garbage_report_changes_nothing_but_load_error() -> None:
    half = observe(HostState(), LoadReport(weight_percent=50))
    garbage = observe(half, parse_agent(b"OK"))
    assert garbage.healthy
    assert garbage.weight_percent == 50
    assert garbage.reported == LoadReport(weight_percent=50)
    assert garbage.load_error
    assert observe(garbage, LoadReport(weight_percent=50)).load_error is None


def test_a_host_without_a_report_keeps_its_configured_weight() -> None:
    assert observe(HostState(), LoadReport(weight_percent=50), None).weight_percent == 100


def test_reports_are_ignored_when_load_is_off() -> None:
    off = HealthSettings()
    state = observe(HostState(), LoadReport(state="maint"), settings=off)
    assert state.healthy  # load off: no report is ever passed, and none would count
    assert (state.weight_percent, state.reported, state.load_error) == (100, None, None)


def test_a_recovered_host_ramps_up_over_slow_start() -> None:
    settings = HealthSettings(method="GET", load="agent", rise=1, fall=1, slow_start_seconds=10)
    down = HostState().observe("status 500", 0.0, settings)
    back = down.observe(None, 100.0, settings)
    assert back.healthy
    assert back.weight_percent == 10
    assert back.observe(None, 105.0, settings).weight_percent == 55
    assert back.observe(None, 110.0, settings).weight_percent == 100
    # A host up since probes began does not ramp.
    assert HostState().observe(None, 0.0, settings).weight_percent == 100


def shares(rotation: Rotation, count: int) -> Counter[str | None]:
    return Counter(rotation.next() for _ in range(count))


def test_percents_scale_the_rotation_and_drained_hosts_take_none() -> None:
    pool = CdnPool.of([(A, 1), (B, 1), (C, 1)])
    assert shares(Rotation(pool, percents={B: 50, C: 0}), 300) == {A: 200, B: 100}
    assert shares(Rotation(pool, percents={A: 80, B: 40}), 1100) == {A: 400, B: 200, C: 500}


def test_drained_hosts_take_viewers_only_when_every_other_host_is_down_or_drained() -> None:
    pool = CdnPool.of([(A, 2), (B, 1), (C, 1)])
    assert shares(Rotation(pool, frozenset({A}), {B: 0, C: 0}), 300) == {B: 150, C: 150}
    assert shares(Rotation(pool, frozenset({A, B}), {C: 0}), 10) == {C: 10}
    assert shares(Rotation(pool, frozenset(), {B: 0, C: 0}), 10) == {A: 10}


@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=64),
    st.data(),
)
def test_scaled_weights_always_fit_a_schedule_and_keep_every_member(
    weights: list[int], data: st.DataObject
) -> None:
    pool = CdnPool.of([(f"cdn{index}.example.com", weight) for index, weight in enumerate(weights)])
    percents = {host.base_url: data.draw(st.integers(1, 256)) for host in pool.hosts}
    rotation = Rotation(pool, percents=percents)
    assert rotation._length > 0  # precomputed: the redirect path indexes, never steps
    assert rotation._length <= 1000
    assert set(rotation._schedule) == set(pool.base_urls)


def test_percents_choose_the_cdn_host_and_leave_the_origin_share_exact() -> None:
    config = BalancerConfig(
        cdn_host="x",
        split=Split(9, 1),
        cdn_hosts=CdnPool.of([(A, 1), (B, 1), (C, 1)]),
        server_rules={"s2": Split(1, 0)},
        server_pools={"s2": CdnPool.of([(A, 1), (B, 1)])},
        regions=(
            Region.of(
                0,
                name="eu",
                countries=[],
                networks=["10.0.0.0/8"],
                hosts=[(A, 1), (C, 1)],
            ),
        ),
    )
    matcher = RegionMatcher([((), ("10.0.0.0/8",))], lambda address: None)
    route = Router(version(1, config), matcher=matcher, percents={A: 100, B: 50, C: 0})
    sequence = CountingSequence()
    picked = Counter(route.redirect(VIDEO, sequence.next).cdn for _ in range(3000))
    assert picked == {"": 300, A: 1800, B: 900}
    rule = Counter(route.redirect(VIDEO.replace("s1", "s2"), sequence.next).cdn for _ in range(30))
    assert rule == {A: 20, B: 10}
    region = Counter(route.redirect(VIDEO, sequence.next, "10.1.2.3").cdn for _ in range(100))
    assert region == {A: 90, "": 10}


def test_64_hosts_with_nearly_equal_reports_still_get_a_short_schedule() -> None:
    pool = CdnPool.of([(f"cdn{index}.example.com", 1) for index in range(64)])
    percents = {url: 100 - index % 2 for index, url in enumerate(pool.base_urls)}
    rotation = Rotation(pool, percents=percents)
    assert 0 < rotation._length <= 1000
    picked = Counter(rotation._schedule)
    assert set(picked) == set(pool.base_urls)
    assert max(picked.values()) - min(picked.values()) <= 1


def test_a_load_change_reweighs_the_served_router_in_place_and_a_health_change_compiles() -> None:
    config = BalancerConfig(
        cdn_host="x",
        split=Split(1, 0),
        cdn_hosts=CdnPool.of([(A, 1), (B, 1)]),
        cdn_health=HealthSettings(),
    )
    snapshot = ConfigSnapshot()
    snapshot.offer(version(1, config))
    served = snapshot.router
    snapshot.mark_down(frozenset(), {B: 0})
    assert snapshot.router is served
    sequence = CountingSequence()
    assert {served.redirect(VIDEO, sequence.next).cdn for _ in range(10)} == {A}
    snapshot.mark_down(frozenset({A}), {B: 0})
    assert snapshot.router is not served
    # B drained, A down: the drained host takes the viewers rather than none at all.
    assert {snapshot.router.redirect(VIDEO, sequence.next).cdn for _ in range(10)} == {B}
    snapshot.mark_down(frozenset(), {})
    picked = Counter(snapshot.router.redirect(VIDEO, sequence.next).cdn for _ in range(10))
    assert picked == {A: 5, B: 5}
