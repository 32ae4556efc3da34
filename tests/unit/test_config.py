import pytest

from app.application.config import ConfigChange
from app.domain.config import BalancerConfig, cdn_base_url
from app.domain.errors import InvalidConfig
from app.domain.split import Split

BASE = BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1))


@pytest.mark.parametrize(
    ("cdn_host", "base"),
    [
        ("cdn.example.com", "http://cdn.example.com"),
        ("https://cdn.example.com", "https://cdn.example.com"),
        ("HTTPS://CDN.Example.com/", "https://cdn.example.com"),
        ("cdn.example.com:8080", "http://cdn.example.com:8080"),
        ("10.0.0.7", "http://10.0.0.7"),
        ("localhost", "http://localhost"),
    ],
)
def test_cdn_host_becomes_a_base_url(cdn_host: str, base: str) -> None:
    assert cdn_base_url(cdn_host) == base


@pytest.mark.parametrize(
    "cdn_host",
    [
        "",
        " ",
        "cdn example.com",
        "cdn.example.com/path",
        "cdn..example.com",
        "..",
        "ftp://cdn.example.com",
        "user@cdn.example.com",
        "cdn.example.com:0",
        "cdn.example.com:http",
        "http://",
        "cdn.example.com\r\nX: y",
        "-cdn.example.com",
    ],
)
def test_cdn_hosts_that_cannot_serve_are_refused(cdn_host: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        BalancerConfig(cdn_host=cdn_host, split=Split(9, 1))
    assert error.value.field == "cdn_host"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"redirect_status": 200}, "redirect_status"),
        ({"redirect_status": 303}, "redirect_status"),
        ({"origin_domains": ()}, "origin_domains"),
        ({"origin_domains": ("Origin-Cluster",)}, "origin_domains"),
        ({"origin_domains": ("bad domain",)}, "origin_domains"),
        ({"server_rules": {"S 1": Split(0, 1)}}, "server_rules"),
    ],
)
def test_other_settings_are_validated(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1), **changes)  # type: ignore[arg-type]
    assert error.value.field == field


def test_a_change_keeps_what_it_does_not_name() -> None:
    changed = ConfigChange(cdn_host="cdn2.example.com").apply(BASE)
    assert changed == BalancerConfig(cdn_host="cdn2.example.com", split=Split(9, 1))


def test_one_weight_can_change_alone() -> None:
    assert ConfigChange(origin_weight=3).apply(BASE).split == Split(9, 3)


def test_origin_every_sets_both_weights() -> None:
    assert ConfigChange(origin_every=4).apply(BASE).split == Split(3, 1)


def test_origin_every_with_weights_is_ambiguous_and_refused() -> None:
    with pytest.raises(InvalidConfig) as error:
        ConfigChange(origin_every=4, cdn_weight=1).apply(BASE)
    assert error.value.field == "origin_every"


def test_both_weights_zero_is_refused() -> None:
    with pytest.raises(InvalidConfig):
        ConfigChange(cdn_weight=0, origin_weight=0).apply(BASE)


def test_over_long_comment_is_refused() -> None:
    with pytest.raises(InvalidConfig) as error:
        ConfigChange(cdn_weight=1, comment="x" * 1001).apply(BASE)
    assert error.value.field == "comment"
