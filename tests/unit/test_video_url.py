import pytest

from app.domain.errors import InvalidVideoUrl
from app.domain.video import MAX_VIDEO_URL_LENGTH, parse_video_url

DOMAINS = frozenset({"origin-cluster"})


@pytest.mark.parametrize(
    ("raw", "server", "origin_url"),
    [
        (
            "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8",
            "s1",
            "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8",
        ),
        ("https://s2.origin-cluster/v.m3u8", "s2", "https://s2.origin-cluster/v.m3u8"),
        (
            "http://s123456.origin-cluster/a/b.ts?token=abc&exp=1",
            "s123456",
            "http://s123456.origin-cluster/a/b.ts?token=abc&exp=1",
        ),
        ("HTTP://S1.Origin-Cluster/Video/X.m3u8", "s1", "http://s1.origin-cluster/Video/X.m3u8"),
        ("http://s1.origin-cluster:8080/v.m3u8", "s1", "http://s1.origin-cluster:8080/v.m3u8"),
        ("http://s1.origin-cluster:0080/v.m3u8", "s1", "http://s1.origin-cluster:80/v.m3u8"),
        ("http://s1.origin-cluster:/v.m3u8", "s1", "http://s1.origin-cluster/v.m3u8"),
        (
            "http://s1.origin-cluster/my%20film.m3u8",
            "s1",
            "http://s1.origin-cluster/my%20film.m3u8",
        ),
        ("http://s1.origin-cluster/my film.m3u8", "s1", "http://s1.origin-cluster/my%20film.m3u8"),
        (
            "http://s1.origin-cluster/фильм.m3u8",
            "s1",
            "http://s1.origin-cluster/%D1%84%D0%B8%D0%BB%D1%8C%D0%BC.m3u8",
        ),
        (
            "http://edge-7.origin-cluster/v.m3u8?sig=a+b/c==",
            "edge-7",
            "http://edge-7.origin-cluster/v.m3u8?sig=a+b/c==",
        ),
    ],
)
def test_valid_urls_are_accepted_and_normalised(raw: str, server: str, origin_url: str) -> None:
    video = parse_video_url(raw, DOMAINS)
    assert video.server == server
    assert video.origin_url == origin_url


def test_any_of_several_allowed_domains_is_accepted() -> None:
    domains = frozenset({"origin-cluster", "origin.example.net"})
    assert parse_video_url("http://s9.origin.example.net/v.m3u8", domains).server == "s9"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "missing-video"),
        ("ftp://s1.origin-cluster/v.m3u8", "unsupported-scheme"),
        ("javascript:alert(1)", "unsupported-scheme"),
        ("//s1.origin-cluster/v.m3u8", "unsupported-scheme"),
        ("s1.origin-cluster/v.m3u8", "unsupported-scheme"),
        ("http://evil.example/v.m3u8", "host-not-allowed"),
        ("http://s1.origin-cluster.evil.example/v.m3u8", "host-not-allowed"),
        ("http://origin-cluster/v.m3u8", "host-not-allowed"),
        ("http://a.b.origin-cluster/v.m3u8", "host-not-allowed"),
        ("http://s1.origin-cluster./v.m3u8", "host-not-allowed"),
        ("http://s1.origin-clusterx/v.m3u8", "host-not-allowed"),
        ("http://s%31.origin-cluster/v.m3u8", "host-not-allowed"),
        ("http://s1.origin-cluster@evil.example/v.m3u8", "userinfo-not-allowed"),
        ("http://user:pass@s1.origin-cluster/v.m3u8", "userinfo-not-allowed"),
        ("http://s1.origin-cluster\\@evil.example/v.m3u8", "invalid-characters"),
        ("http://evil.example\\.s1.origin-cluster/v.m3u8", "invalid-characters"),
        ("http://s1.origin-cluster/v.m3u8\r\nSet-Cookie: a=b", "invalid-characters"),
        ("http://s1.origin-cluster/v\x00.m3u8", "invalid-characters"),
        ("http://s1.origin-cluster:99999/v.m3u8", "invalid-port"),
        ("http://s1.origin-cluster:\N{SUPERSCRIPT TWO}/v.m3u8", "invalid-port"),
        (
            "http://s1.origin-cluster:\N{ARABIC-INDIC DIGIT EIGHT}\N{ARABIC-INDIC DIGIT ZERO}/v",
            "invalid-port",
        ),
        ("http://s1.origin-cluster:\N{FULLWIDTH DIGIT EIGHT}/v.m3u8", "invalid-port"),
        ("http://s1.origin-cluster:" + "9" * 5000 + "/v.m3u8", "invalid-port"),
        ("http://s\N{KELVIN SIGN}.origin-cluster/v.m3u8", "host-not-allowed"),
        ("http://s1.origin-clu\N{LATIN SMALL LETTER LONG S}ter/v.m3u8", "host-not-allowed"),
        ("http://s1.origin-cluster/a\ud800.m3u8", "invalid-characters"),
        ("http://s1.origin-cluster/%2e%2e%2fs2%2fx.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%252e%252e%252fs2%252fx.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%25252e%25252e/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%2525252e%2525252e/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/..%2fs2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/.%2e/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%2E./s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/..;/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/.;x=1/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/..%3b/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/.. /s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/a%5c..%5cs2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/a%2fb.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%c0%ae%c0%ae/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/a%00.m3u8", "invalid-path"),
        (
            "http://s1.origin-cluster/\N{FULLWIDTH FULL STOP}\N{FULLWIDTH FULL STOP}/x",
            "invalid-path",
        ),
        ("http://s1.origin-cluster/a\N{FULLWIDTH SOLIDUS}b.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/\N{TWO DOT LEADER}/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%ef%bc%8e%ef%bc%8e/x.m3u8", "invalid-path"),
        # `?` and `#` end a path wherever they are decoded: `..?` is `..` to such a server
        ("http://s1.origin-cluster/..%3F/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/..%3fx/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/..%253F/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/.%23/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/..%23/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/..%2523/s2/x.m3u8", "invalid-path"),
        # IIS-style %uXXXX escapes
        ("http://s1.origin-cluster/%u002e%u002e/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%U002E%U002E/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/.%u002e/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%25u002e%25u002e/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/a%u002fb.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/a%u005c..%u005cb.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/%uff0e%uff0e/s2/x.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/a%ud800.m3u8", "invalid-path"),
        ("http://s1.origin-cluster", "missing-path"),
        ("http://s1.origin-cluster/", "missing-path"),
        ("http://s1.origin-cluster?x=1", "missing-path"),
        ("http://s1.origin-cluster/a/../../etc/passwd", "invalid-path"),
        ("http://s1.origin-cluster/a/%2e%2e/b", "invalid-path"),
        ("http://s1.origin-cluster/./v.m3u8", "invalid-path"),
        ("http://s1.origin-cluster/" + "a" * MAX_VIDEO_URL_LENGTH, "video-too-long"),
    ],
)
def test_urls_that_are_not_ours_are_refused_with_a_reason(raw: str, code: str) -> None:
    with pytest.raises(InvalidVideoUrl) as error:
        parse_video_url(raw, DOMAINS)
    assert error.value.code == code


def test_dots_inside_names_are_not_dot_segments() -> None:
    video = parse_video_url("http://s1.origin-cluster/a/.hidden/..name/v.m3u8", DOMAINS)
    assert video.rest == "/a/.hidden/..name/v.m3u8"


@pytest.mark.parametrize(
    "rest",
    [
        "/my%2520film.m3u8",  # a literal "%20" in the file name, encoded once more
        "/a;b/v.m3u8",
        "/a/%20../v.m3u8",
        "/a/v.m3u8?next=/../x&p=%2e%2e%2f",  # the query is not a path
        "/what%3F.m3u8",  # a `?` or `#` in a name: what is before it is not a dot segment
        "/a%23b/c%3F../v.m3u8",
        "/%u0041%uzzzz.m3u8",
    ],
)
def test_escapes_and_parameters_that_stay_in_their_segment_are_kept(rest: str) -> None:
    assert parse_video_url("http://s1.origin-cluster" + rest, DOMAINS).rest == rest
