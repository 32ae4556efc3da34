import pytest

from app.application.errors import ConfigNotLoaded
from app.application.redirect import RedirectVideo
from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig
from app.domain.split import Split
from app.domain.video import parse_video_url
from tests.support.fakes import CountingSequence, redirect_for

VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8?token=abc&exp=1"


def test_cdn_redirect_puts_the_server_label_first_and_keeps_the_query() -> None:
    redirect, _ = redirect_for(BalancerConfig(cdn_host="cdn.example.com", split=Split(1, 0)))
    decision = redirect(VIDEO)
    assert (
        decision.location == "http://cdn.example.com/s1/video/1488/xcg2djHckad.m3u8?token=abc&exp=1"
    )
    assert (decision.target, decision.status, decision.server, decision.config_version) == (
        "cdn",
        301,
        "s1",
        3,
    )


def test_cdn_host_with_scheme_and_port_is_used_as_given() -> None:
    config = BalancerConfig(cdn_host="https://cdn.example.com:8443", split=Split(1, 0))
    redirect, _ = redirect_for(config)
    assert redirect(VIDEO).location.startswith("https://cdn.example.com:8443/s1/video/")


def test_origin_redirect_is_the_video_url_itself() -> None:
    redirect, _ = redirect_for(BalancerConfig(cdn_host="cdn.example.com", split=Split(0, 1)))
    decision = redirect(VIDEO)
    assert (decision.target, decision.location) == ("origin", VIDEO)


def test_ten_requests_at_9_to_1_send_exactly_one_to_the_origin() -> None:
    redirect, _ = redirect_for(BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1)))
    assert [redirect(VIDEO).target for _ in range(10)].count("origin") == 1


def test_configured_status_is_used() -> None:
    config = BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1), redirect_status=307)
    redirect, _ = redirect_for(config)
    assert redirect(VIDEO).status == 307


def test_a_server_with_a_rule_counts_on_its_own_sequence() -> None:
    config = BalancerConfig(
        cdn_host="cdn.example.com", split=Split(1, 0), server_rules={"s7": Split(0, 1)}
    )
    redirect, sequence = redirect_for(config)
    assert redirect("http://s7.origin-cluster/v.m3u8").target == "origin"
    assert redirect("http://s1.origin-cluster/v.m3u8").target == "cdn"
    assert sequence.numbers == {"s7": 1, "": 1}


def test_nothing_is_served_before_a_config_is_loaded() -> None:
    with pytest.raises(ConfigNotLoaded):
        RedirectVideo(ConfigSnapshot(), CountingSequence())(VIDEO)


@pytest.mark.parametrize("split", [Split(9, 1), Split(3, 2), Split(5000, 7)])
def test_redirects_follow_the_split_whether_or_not_its_period_is_listed(split: Split) -> None:
    redirect, _ = redirect_for(BalancerConfig(cdn_host="cdn.example.com", split=split))
    targets = [redirect(VIDEO).target for _ in range(10_000)]
    assert targets == [split.target(n) for n in range(10_000)]


@pytest.mark.parametrize(
    "video",
    [
        VIDEO,
        "https://s1.origin-cluster/v.m3u8",
        "HTTP://S1.Origin-Cluster:8080/v.m3u8",  # not the common shape: parsed in full
        "http://s1.origin-cluster/a%20b/v.m3u8",
        "http://s1.origin-cluster/v.m3u8?x=/./y",
    ],
)
def test_origin_redirects_keep_the_parsed_url_whatever_its_shape(video: str) -> None:
    redirect, _ = redirect_for(BalancerConfig(cdn_host="cdn.example.com", split=Split(0, 1)))
    expected = parse_video_url(video, frozenset({"origin-cluster"}))
    decision = redirect(video)
    assert decision.location == expected.origin_url
    assert decision.server == expected.server
    cdn, _ = redirect_for(BalancerConfig(cdn_host="cdn.example.com", split=Split(1, 0)))
    assert cdn(video).location == f"http://cdn.example.com/{expected.server}{expected.rest}"
