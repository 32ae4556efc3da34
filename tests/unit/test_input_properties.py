"""Properties of every input rule, over generated hostile input (see tests/support/hostile.py).

No database: these drive the domain and the redirect front's parameter parsing directly,
and the configuration through the same path a PATCH body takes (pydantic body ->
ConfigChange -> BalancerConfig -> Router).
"""

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from hypothesis import assume, event, example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import InvalidConfig, InvalidVideoUrl
from app.domain.router import Router
from app.domain.split import Split
from app.domain.syntax import cdn_base_url, is_link_local, parse_number
from app.domain.video import (
    _COMMON,
    MAX_VIDEO_URL_LENGTH,
    VideoUrl,
    _parse_in_full,
    parse_video_url,
)
from app.presentation.api.etag import if_match_version
from app.presentation.api.schemas import ConfigPatch
from app.presentation.edge.redirect import video_param
from tests.support.hostile import (
    NON_ASCII_DIGITS,
    VIDEO_CODES,
    assert_allowed_domain,
    assert_safe_location,
    cdn_hosts,
    json_values,
    origin_domain_lists,
    path_segments,
    video_queries,
    video_urls,
)

BASE = BalancerConfig(
    cdn_host="https://cdn.example.com:8443",
    split=Split(1, 1),
    origin_domains=("origin-cluster", "origin.example.net"),
)


def router(config: BalancerConfig = BASE) -> Router:
    return Router(ConfigVersion(7, config, datetime(2026, 1, 1, tzinfo=UTC)))


def outcome(
    parse: Callable[[str, frozenset[str]], VideoUrl], raw: str, domains: frozenset[str]
) -> VideoUrl | str:
    """The parsed URL, or the code it was refused with."""
    try:
        return parse(raw, domains)
    except InvalidVideoUrl as error:
        return error.code


def _constant(number: int) -> Callable[[str], int]:
    return lambda _: number


def route_both_ways(config: BalancerConfig, raw: str) -> None:
    """Route `raw` to the CDN and to the origin; each is a known refusal or a safe redirect."""
    compiled = router(config)
    for number in (0, 1):  # 1:1 sends 0 to the CDN and 1 to the origin
        try:
            decision = compiled.redirect(raw, _constant(number))
        except InvalidVideoUrl as error:
            code = error.code
        else:
            event(f"redirect to {decision.target}")
            assert_safe_location(decision, config)
            continue
        event(code)
        assert code in VIDEO_CODES
        return


@given(video_urls())
@example("http://s1.origin-cluster/%2e%2e%2fs2%2fx.m3u8")
@example("http://s1.origin-cluster/a\ud800")
@example("http://s1.origin-cluster:\N{ARABIC-INDIC DIGIT EIGHT}\N{ARABIC-INDIC DIGIT ZERO}/v")
def test_any_video_url_is_refused_with_a_known_code_or_redirected_safely(raw: str) -> None:
    route_both_ways(BASE, raw)


@given(video_queries())
@example(b"video=http%3A%2F%2Fs1.origin-cluster%2Fv.m3u8&utm=a?b/../../x")
@example(b"video=http://s1.origin-cluster/%252e%252e%252fs2%252fx.m3u8")
def test_any_query_string_is_refused_with_a_known_code_or_redirected_safely(query: bytes) -> None:
    try:
        raw = video_param(query)
    except InvalidVideoUrl as error:
        code = error.code
    else:
        route_both_ways(BASE, raw)
        return
    assert code in VIDEO_CODES


@given(st.from_regex(_COMMON, fullmatch=True))
def test_the_fast_path_never_admits_what_the_full_checks_refuse(raw: str) -> None:
    match = _COMMON.fullmatch(raw)
    assert match is not None
    assume("/." not in match.group(4) and len(raw) <= MAX_VIDEO_URL_LENGTH)
    domains = frozenset({match.group(3)})  # the fast path takes it
    assert _parse_in_full(raw, domains) == parse_video_url(raw, domains)


@given(video_urls())
def test_the_fast_path_and_the_full_checks_agree_on_any_url(raw: str) -> None:
    domains = frozenset(BASE.origin_domains)
    assert outcome(parse_video_url, raw, domains) == outcome(_parse_in_full, raw, domains)


@given(
    st.text(st.characters(exclude_categories=()), max_size=30).filter(
        lambda url: url and not any(0xD800 <= ord(char) <= 0xDFFF for char in url)
    ),
    st.text(max_size=30),
)
def test_an_encoded_video_url_keeps_every_later_parameter_out(url: str, tail: str) -> None:
    query = "video=" + quote(url, safe="") + "&" + tail
    assert video_param(query.encode()) == url


@given(
    st.from_regex(r"[a-z0-9/._-]{1,20}\?[a-z0-9=&?/.]{0,30}", fullmatch=True),
    st.sampled_from(["", "x=1&", "video=&", "other=a?b&"]),
)
def test_an_unencoded_video_url_with_its_own_query_keeps_all_of_it(rest: str, prefix: str) -> None:
    url = "http://s1.origin-cluster/" + rest
    assert video_param((prefix + "video=" + url).encode()) == url


@given(st.text(st.characters(exclude_categories=()), max_size=20), st.integers(0, 10**9))
@example("\N{SUPERSCRIPT TWO}", 9)
@example("9" * 5000, 10**9)
def test_numbers_from_outside_are_ascii_digits_of_bounded_length(text: str, maximum: int) -> None:
    number = parse_number(text, maximum)
    if number is None:
        return
    assert text.isascii()
    assert text.isdigit()
    assert len(text) <= len(str(maximum))
    assert 0 <= number <= maximum


@given(
    st.text(st.characters(exclude_categories=()), max_size=12)
    | st.sampled_from(NON_ASCII_DIGITS).map(lambda digits: f'"{digits}"')
    | st.just('"' + "9" * 5000 + '"')
)
def test_if_match_is_a_version_or_none(header: str) -> None:
    version = if_match_version(header)
    assert version is None or 0 <= version < 2**31


def _patch_config(body: dict[str, object]) -> BalancerConfig | None:
    """The PATCH path without HTTP: None when the body is refused as it would be with 422."""
    try:
        patch = ConfigPatch.model_validate_json(json.dumps(body))
        return patch.to_change().apply(BASE)
    except (ValidationError, InvalidConfig):
        return None


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "cdn_host": cdn_hosts() | json_values(),
            "cdn_hosts": st.lists(
                st.fixed_dictionaries({"host": cdn_hosts(), "weight": st.integers(0, 3)}),
                max_size=3,
            )
            | json_values(),
            "origin_domains": origin_domain_lists() | json_values(),
            "redirect_status": st.sampled_from([301, 302, 303, 307, 308, "301"]) | json_values(),
            "cdn_weight": st.integers(-1, 3) | json_values(),
            "origin_weight": st.integers(-1, 3),
        },
    ),
    st.data(),
)
@example(body={"origin_domains": ["com"]}, data=None)
@example(body={"cdn_host": "cdn.example\N{LATIN SMALL LETTER LONG S}.com"}, data=None)
@example(body={"cdn_hosts": [{"host": "https://169.254.169.254:8443"}]}, data=None)
def test_any_patch_body_is_refused_or_gives_a_config_whose_redirects_are_safe(
    body: dict[str, object], data: st.DataObject | None
) -> None:
    config = _patch_config(body)
    if config is None:
        return
    base = cdn_base_url(config.cdn_host)
    assert base.isascii()
    for domain in config.origin_domains:
        assert_allowed_domain(domain)
    assert len(set(config.origin_domains)) == len(config.origin_domains)
    for host in config.probe_targets():
        assert host.isascii()
        assert not is_link_local(urlsplit(host).hostname or "")
    config = replace(config, split=Split(1, 1), server_rules={}, server_pools={}, down_servers=())
    for domain in config.origin_domains:
        route_both_ways(config, f"http://s1.{domain}/v.m3u8")
    if data is not None:
        route_both_ways(config, data.draw(video_urls()))
        evil = data.draw(st.sampled_from(["evil", "127", "1", "0x7f"]))
        for domain in config.origin_domains:
            route_both_ways(config, f"https://{evil}.{domain}:8080/v.m3u8")


@given(origin_domain_lists())
@example(["com"])
@example(["0.0.1"])
@example(["origin-cluster", "origin-cluster"])
def test_origin_domains_are_refused_or_let_no_foreign_host_through(domains: list[str]) -> None:
    try:
        config = BalancerConfig(
            cdn_host="cdn.example.com", split=Split(1, 1), origin_domains=tuple(domains)
        )
    except InvalidConfig as error:
        field = error.field
    else:
        assert len(set(domains)) == len(domains)
        for domain in domains:
            assert_allowed_domain(domain)
            for server in ("s1", "127", "0x7f", "evil"):
                route_both_ways(config, f"http://{server}.{domain}/v.m3u8")
        return
    assert field == "origin_domains"


@given(path_segments(hostile=True))
@example("%252e%252e")
@example("..;")
@example("\N{FULLWIDTH FULL STOP}\N{FULLWIDTH FULL STOP}")
def test_a_path_segment_is_accepted_only_if_every_decoding_of_it_is_plain(segment: str) -> None:
    route_both_ways(BASE, f"http://s1.origin-cluster/a/{segment}/v.m3u8")
