import pytest

from app.application.config_versions import ConfigChange
from app.domain.config import BalancerConfig
from app.domain.errors import InvalidConfig
from app.domain.split import Split
from app.domain.syntax import cdn_base_url

BASE = BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1))


@pytest.mark.parametrize(
    ("cdn_host", "base"),
    [
        ("cdn.example.com", "http://cdn.example.com"),
        ("https://cdn.example.com", "https://cdn.example.com"),
        ("HTTPS://CDN.Example.com/", "https://cdn.example.com"),
        ("cdn.example.com:8080", "http://cdn.example.com:8080"),
        ("10.0.0.7", "http://10.0.0.7"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("192.168.1.20", "http://192.168.1.20"),
        # the neighbours of 169.254.0.0/16, which is refused
        ("169.253.255.255", "http://169.253.255.255"),
        ("169.255.0.0", "http://169.255.0.0"),
        ("localhost", "http://localhost"),
        ("cdn.example.com:08443", "http://cdn.example.com:8443"),
        ("xn--80ak6aa92e.example", "http://xn--80ak6aa92e.example"),
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
        "cdn.example\N{LATIN SMALL LETTER LONG S}.com",
        "cdn.\N{LATIN SMALL LETTER DOTLESS I}mages.com",
        "cdn.example.\N{KELVIN SIGN}z",
        "cdn\N{FULLWIDTH FULL STOP}example.com",
        "cdn.example.com:\N{SUPERSCRIPT TWO}",
        "cdn.example.com:\N{ARABIC-INDIC DIGIT EIGHT}\N{ARABIC-INDIC DIGIT ZERO}",
        "cdn.example.com:\N{FULLWIDTH DIGIT EIGHT}",
        "cdn.example.com:" + "9" * 5000,
        "xn--zz.example.com",
        "cdn.0x7f",
        "1.2.3",
        "010.0.0.7",
        "[::1]",
    ],
)
def test_cdn_hosts_that_cannot_serve_are_refused(cdn_host: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        BalancerConfig(cdn_host=cdn_host, split=Split(9, 1))
    assert error.value.field == "cdn_host"


@pytest.mark.parametrize(
    "cdn_host",
    ["169.254.169.254", "169.254.0.0", "https://169.254.255.255:8443", "169.254.170.2"],
)
def test_link_local_cdn_hosts_are_refused_naming_the_range(cdn_host: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        BalancerConfig(cdn_host=cdn_host, split=Split(9, 1))
    assert error.value.field == "cdn_host"
    assert "link-local" in error.value.detail


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"redirect_status": 200}, "redirect_status"),
        ({"redirect_status": 303}, "redirect_status"),
        ({"origin_domains": ()}, "origin_domains"),
        ({"origin_domains": ("Origin-Cluster",)}, "origin_domains"),
        ({"origin_domains": ("bad domain",)}, "origin_domains"),
        ({"origin_domains": ("com",)}, "origin_domains"),
        ({"origin_domains": ("co.uk",)}, "origin_domains"),
        ({"origin_domains": ("github.io",)}, "origin_domains"),
        ({"origin_domains": ("kawasaki.jp",)}, "origin_domains"),
        ({"origin_domains": ("anything.kawasaki.jp",)}, "origin_domains"),
        ({"origin_domains": ("0.0.1",)}, "origin_domains"),
        ({"origin_domains": ("0.1",)}, "origin_domains"),
        ({"origin_domains": ("127.0.0.1",)}, "origin_domains"),
        ({"origin_domains": ("origin.0x7f",)}, "origin_domains"),
        ({"origin_domains": ("1.origin-cluster",)}, "origin_domains"),
        ({"origin_domains": ("origin-cluster", "origin-cluster")}, "origin_domains"),
        ({"origin_domains": ("origin-clu\N{LATIN SMALL LETTER LONG S}ter",)}, "origin_domains"),
        ({"origin_domains": ("xn--zz",)}, "origin_domains"),
        ({"origin_domains": "origin-cluster"}, "origin_domains"),
        ({"server_rules": {"S 1": Split(0, 1)}}, "server_rules"),
    ],
)
def test_other_settings_are_validated(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1), **changes)  # type: ignore[arg-type]
    assert error.value.field == field


@pytest.mark.parametrize(
    "domains",
    [
        ("origin-cluster",),
        ("origin.example.net", "cdn-origin.internal"),
        ("foo.github.io",),
        ("xn--80ak6aa92e.example",),
        ("s3.example.co.uk",),
    ],
)
def test_private_domains_are_accepted_as_origin_domains(domains: tuple[str, ...]) -> None:
    config = BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1), origin_domains=domains)
    assert config.origin_domains == domains


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
