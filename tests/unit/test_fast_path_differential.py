"""The router's fast path (`common_parts`) against the full checks, over URLs built to sit
on the edge between the two: hosts that start or end with an allowed domain, a domain in
the path or the userinfo, ports, case, trailing dots, IDN, dot segments, lengths.

Whatever the fast path takes, the full checks must take with the same server and rest, and
the URL must be its own origin URL; the router must then answer exactly what it answers for
the URL the full checks produce. The strategies put a near miss of an allowed domain in
most examples, so that a fast path that compares domains loosely (`startswith`,
`endswith`, a substring, case-insensitively) fails in every run, explicit examples or not.
"""

from collections.abc import Callable
from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidVideoUrl
from app.domain.router import Redirect, Router
from app.domain.split import Split
from app.domain.video import MAX_VIDEO_URL_LENGTH, VideoUrl, _parse_in_full, common_parts

# Allowed-domain sets where one domain is a prefix, a suffix or a part of another host.
DOMAIN_SETS = (
    frozenset({"origin-cluster"}),
    frozenset({"origin-cluster", "origin.example.net"}),
    frozenset({"example.net"}),
    frozenset({"cluster", "origin-cluster.evil"}),
)
_NEAR_MISSES: tuple[Callable[[str], str], ...] = (
    lambda domain: domain,
    lambda domain: domain,
    lambda domain: f"{domain}.evil.example",
    lambda domain: f"{domain}x",
    lambda domain: f"{domain}-x",
    lambda domain: f"{domain}.",
    lambda domain: f"{domain}..",
    lambda domain: f"{domain}.evil",
    lambda domain: f"x{domain}",
    lambda domain: f"evil.{domain}",
    lambda domain: f"x-{domain}",
    lambda domain: domain.upper(),
    lambda domain: domain[:-1],
    lambda domain: domain.rsplit(".", 1)[0],
    lambda domain: f"xn--{domain}",
    lambda domain: domain.replace("o", "\N{CYRILLIC SMALL LETTER O}", 1),
    lambda domain: domain.replace(".", "\N{IDEOGRAPHIC FULL STOP}"),
    lambda domain: domain.replace("s", "\N{LATIN SMALL LETTER LONG S}"),
)


def _mostly(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`good` four times in five: most URLs have the common shape but for their host."""
    return st.sampled_from([good, good, good, good, bad]).flatmap(lambda part: part)


_SERVERS = _mostly(
    st.sampled_from(["s1", "edge-7", "0", "a" * 63])
    | st.from_regex(r"[a-z0-9][a-z0-9-]{0,4}", fullmatch=True),
    st.sampled_from(["S1", "a" * 64, "-s1", "s1-", "xn--p1ai", "s_1", "1.2", ""]),
)
_SCHEMES = _mostly(
    st.sampled_from(["http://", "https://"]),
    st.sampled_from(["HTTP://", "hTtPs://", "ftp://", "http:/", "//"]),
)
_USERINFO = _mostly(st.just(""), st.sampled_from(["user@", "s1.origin-cluster@", "a:b@", "@"]))
_PORTS = _mostly(
    st.just(""), st.sampled_from([":80", ":8080", ":", ":0", ":65536", ":08080", ":8080x"])
)
_PATHS = _mostly(
    st.sampled_from(["/v.m3u8", "/video/1488/xcg2djHckad.m3u8", "/s1.origin-cluster/v"])
    # the common shape but for a dot segment, which only the full checks refuse
    | st.sampled_from(["/./v", "/../s2/v", "/v/..", "/a/./b", "/.", "/.."])
    | st.from_regex(
        r"/[A-Za-z0-9_~!$&'()*+,;=:@-][A-Za-z0-9._~!$&'()*+,;=:@/-]{0,20}", fullmatch=True
    ),
    st.sampled_from(
        [
            "/",
            "",
            "/.",
            "/./v",
            "/../s2/v",
            "/a/.hidden/v",
            "/%2e%2e/v",
            "/a%2Fb",
            "/фильм",
            "/a b",
            "/a\\b",
            "//evil.example/v",
        ]
    ),
)
_TAILS = _mostly(
    st.sampled_from(["", "?token=a&exp=1", "?"]),
    st.sampled_from(["?a=/../x", "?x=%2e", "#f", "?a#b", "?%zz", "? "]),
)


@st.composite
def edge_urls(draw: st.DrawFn) -> tuple[str, frozenset[str]]:
    """A URL on the edge of one allowed-domain set, and that set."""
    domains = draw(st.sampled_from(DOMAIN_SETS))
    domain = draw(st.sampled_from(sorted(domains)))
    host = draw(_SERVERS) + "." + draw(st.sampled_from(_NEAR_MISSES))(domain)
    if draw(st.integers(0, 9)) == 0:  # an allowed host moved into the path
        host = f"evil.example/{draw(_SERVERS)}.{domain}"
    url = draw(_SCHEMES) + draw(_USERINFO) + host + draw(_PORTS) + draw(_PATHS) + draw(_TAILS)
    if draw(st.integers(0, 19)) == 0:  # around the length limit
        url += "/" + "a" * (MAX_VIDEO_URL_LENGTH - len(url) - 1 + draw(st.integers(0, 2)))
    return url, domains


def _full(raw: str, domains: frozenset[str]) -> VideoUrl | str:
    try:
        return _parse_in_full(raw, domains)
    except InvalidVideoUrl as error:
        return error.code


def _router(domains: frozenset[str]) -> Router:
    config = BalancerConfig(
        cdn_host="https://cdn.example.com", split=Split(1, 1), origin_domains=tuple(domains)
    )
    return Router(ConfigVersion(7, config, datetime(2026, 1, 1, tzinfo=UTC)))


def _routed(router: Router, raw: str, number: int) -> Redirect | str:
    try:
        return router.redirect(raw, lambda _: number)
    except InvalidVideoUrl as error:
        return error.code


@settings(max_examples=600)
@given(edge_urls())
@example(("http://s1.origin-cluster.evil.example/v.m3u8", frozenset({"origin-cluster"})))
@example(("http://s1.origin-clusterx/v.m3u8", frozenset({"origin-cluster"})))
@example(("http://s1.evil.example.net/v.m3u8", frozenset({"example.net"})))
@example(("http://evil.example/s1.origin-cluster/v", frozenset({"origin-cluster"})))
@example(("http://s1.origin-cluster./v.m3u8", frozenset({"origin-cluster"})))
@example(("http://s1.ORIGIN-CLUSTER/v.m3u8", frozenset({"origin-cluster"})))
@example(("http://s1.origin-cluster/./v.m3u8", frozenset({"origin-cluster"})))
def test_the_fast_path_takes_only_what_the_full_checks_take_as_it_is(
    case: tuple[str, frozenset[str]],
) -> None:
    raw, domains = case
    fast = common_parts(raw, domains)
    if fast is None:
        return
    full = _full(raw, domains)
    assert isinstance(full, VideoUrl), f"the fast path took {raw!r}, the full checks: {full}"
    assert (full.server, full.rest) == fast
    assert full.origin_url == raw


@settings(max_examples=300)
@given(edge_urls(), st.integers(0, 1))
@example(("http://s1.origin-cluster.evil.example/v.m3u8", frozenset({"origin-cluster"})), 1)
@example(("http://s1.evil.example.net/v.m3u8", frozenset({"example.net"})), 1)
def test_the_router_answers_as_it_would_for_the_fully_checked_url(
    case: tuple[str, frozenset[str]], number: int
) -> None:
    """1:1 sends 0 to the CDN and 1 to the origin: both locations are compared."""
    raw, domains = case
    router = _router(domains)
    full = _full(raw, domains)
    routed = _routed(router, raw, number)
    if isinstance(full, str):
        assert routed == full
        return
    assert routed == _routed(router, full.origin_url, number)
    assert isinstance(routed, Redirect)
    if routed.target == "origin":
        assert routed.location == full.origin_url
    else:
        assert routed.location == f"https://cdn.example.com/{full.server}{full.rest}"
