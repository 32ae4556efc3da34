"""Hostile input for the property and regression tests, and the one check of a `Location`.

The strategies build URLs and query strings from fragments attackers use (dot segments
encoded at several levels, `;` parameters, backslashes, non-ASCII digits, case-folding
look-alikes, fullwidth forms, lone surrogates, IP-like hosts), mixed with arbitrary text.
`assert_safe_location` reads a `Location` the way a lenient server would: it decodes the
path repeatedly, applies NFKC, turns backslashes into slashes and drops `;` parameters
before it resolves dot segments.
"""

import ipaddress
import re
import unicodedata
from urllib.parse import unquote_to_bytes, urlsplit

from hypothesis import strategies as st
from publicsuffixlist import PublicSuffixList

from app.domain.config import BalancerConfig
from app.domain.router import Redirect
from app.domain.syntax import cdn_base_url

VIDEO_CODES = frozenset(
    {
        "missing-video",
        "video-too-long",
        "invalid-characters",
        "unsupported-scheme",
        "userinfo-not-allowed",
        "host-not-allowed",
        "invalid-port",
        "missing-path",
        "invalid-path",
    }
)

NON_ASCII_DIGITS = (
    "\N{SUPERSCRIPT TWO}",
    "\N{ARABIC-INDIC DIGIT EIGHT}\N{ARABIC-INDIC DIGIT ZERO}",
    "\N{FULLWIDTH DIGIT EIGHT}",
    "\N{DEVANAGARI DIGIT ONE}",
    "\N{MATHEMATICAL BOLD DIGIT ONE}",
)
LOOK_ALIKES = (
    "\N{LATIN SMALL LETTER LONG S}",
    "\N{LATIN SMALL LETTER DOTLESS I}",
    "\N{KELVIN SIGN}",
    "\N{LATIN CAPITAL LETTER I WITH DOT ABOVE}",
    "\N{FULLWIDTH FULL STOP}",
    "\N{IDEOGRAPHIC FULL STOP}",
    "\N{CYRILLIC SMALL LETTER ES}",
)

_SCHEMES = (
    st.sampled_from(["http://", "https://", "HTTP://", "hTtPs://"]),
    st.sampled_from(["ftp://", "javascript:", "//", "", "http:/", "http:\\\\"]),
)
_SERVERS = (
    st.sampled_from(["s1", "S1", "edge-7", "127", "0x7f", "xn--p1ai"])
    | st.from_regex(r"[a-z0-9]{1,3}", fullmatch=True),
    st.sampled_from(["-s1", "s_1", "s%31", "a.b", "", "[::1]"] + [f"s{c}" for c in LOOK_ALIKES]),
)
_DOMAINS = (
    st.sampled_from(["origin-cluster", "ORIGIN-CLUSTER", "origin.example.net"]),
    st.sampled_from(
        [
            "origin-cluster.",
            "origin-cluster.evil.example",
            "origin-clusterx",
            "evil.com",
            "0.0.1",
            "origin-clu\N{LATIN SMALL LETTER LONG S}ter",
            "origin\N{FULLWIDTH FULL STOP}cluster",
        ]
    ),
)
_USERINFO = (st.just(""), st.sampled_from(["user@", "s1.origin-cluster@", "a:b@"]))
_PORTS = (
    st.sampled_from(["", "", ":", ":80", ":8080", ":0080"]),
    st.sampled_from(
        [":0", ":65536", ":-1", ":1e3", ":8080 ", ":" + "9" * 5000]
        + [f":{digits}" for digits in NON_ASCII_DIGITS]
        + [f":8{digits}" for digits in NON_ASCII_DIGITS]
    )
    | st.integers(0, 10**7).map(lambda port: f":{port}"),
)
_PLAIN_ATOMS = st.sampled_from(["v.m3u8", "video", "1488", "a", "x-y_z~", "%20", "фильм", "a;b"])
# One group per kind of trick, so that each kind is drawn often, not one item in sixty.
_HOSTILE_ATOMS = st.one_of(
    st.sampled_from([".", "..", "...", "..;", ".;x=1", ".. ", " ..", ".hidden", "..name"]),
    st.sampled_from(["%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "%252e", "%25252e", "%2e%2e%3b"]),
    st.sampled_from(["%2f", "%2F", "%5c", "%5C", "%252f", "\\", ";", ";x=1", "%3b", "%u002e"]),
    st.sampled_from(["%00", "%0a", "%0D", "%7f", "\x00", "\r\n", "\x7f", "\u0085", "\u2028"]),
    st.sampled_from(["%", "%%", "%25", "%ff", "%c0%ae", "%c0%af", "%ef%bc%8e", "%e2%80%a8"]),
    st.sampled_from(
        [
            "\N{FULLWIDTH FULL STOP}",
            "\N{FULLWIDTH SOLIDUS}",
            "\N{FULLWIDTH REVERSE SOLIDUS}",
            "\N{TWO DOT LEADER}",
            "\N{ONE DOT LEADER}",
            "\N{FULLWIDTH PERCENT SIGN}2e",
            "\N{LATIN SMALL LIGATURE FI}lm",
            *LOOK_ALIKES,
            *NON_ASCII_DIGITS,
        ]
    ),
    st.sampled_from(["\ud800", "\udfff", "a\udc80", "?", "#", "&", "+", " "]),
    st.text(st.characters(exclude_categories=()), max_size=3),
)
_SEGMENT_ATOMS = st.one_of(_PLAIN_ATOMS, _PLAIN_ATOMS, _PLAIN_ATOMS, _HOSTILE_ATOMS)


def path_segments(*, hostile: bool = False) -> st.SearchStrategy[str]:
    """One path segment: plain and hostile fragments (only hostile ones with `hostile`),
    percent-encoded 0 to 3 times."""
    atoms = _HOSTILE_ATOMS if hostile else _SEGMENT_ATOMS
    return st.lists(atoms, min_size=1, max_size=3).map("".join).flatmap(percent_encoded)


_TAILS = st.sampled_from(
    ["", "", "?token=a&exp=1", "?", "?a=/../../x", "?x=%2e%2e%2f", "#frag", "#/../x", "?a#b"]
)


@st.composite
def percent_encoded(draw: st.DrawFn, text: str) -> str:
    """`text` with some characters percent-encoded, 0 to 3 times over, hex in mixed case."""
    for _ in range(draw(st.integers(0, 3))):
        chosen = draw(st.sets(st.sampled_from("./\\;%?#&: "), max_size=5))
        non_ascii = draw(st.booleans())
        upper = draw(st.booleans())
        out = []
        for char in text:
            if char in chosen or (non_ascii and not char.isascii()):
                encoded = char.encode("utf-8", "surrogatepass")
                out.append("".join(f"%{byte:02X}" if upper else f"%{byte:02x}" for byte in encoded))
            else:
                out.append(char)
        text = "".join(out)
    return text


def _part(draw: st.DrawFn, choices: tuple[st.SearchStrategy[str], st.SearchStrategy[str]]) -> str:
    """Mostly a well-formed part, one time in five a hostile one: each rule gets reached."""
    good, bad = choices
    return draw(draw(st.sampled_from([good, good, good, good, bad])))


@st.composite
def video_urls(draw: st.DrawFn) -> str:
    """A video URL as an attacker would shape it, or sometimes arbitrary text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(st.characters(exclude_categories=()), max_size=40))
    path = "".join("/" + segment for segment in draw(st.lists(path_segments(), max_size=4)))
    return (
        _part(draw, _SCHEMES)
        + _part(draw, _USERINFO)
        + _part(draw, _SERVERS)
        + "."
        + _part(draw, _DOMAINS)
        + _part(draw, _PORTS)
        + path
        + draw(_TAILS)
    )


@st.composite
def video_queries(draw: st.DrawFn) -> bytes:
    """A query string with a `video` parameter in it, encoded or not, among others."""
    url = draw(video_urls())
    if draw(st.booleans()):
        url = draw(percent_encoded(url))
    prefix = draw(st.sampled_from(["", "x=1&", "video=&", "videos=1&", "video&", "a=b?c&"]))
    tail = draw(
        st.sampled_from(["", "&x=1", "&video=http://evil.com/x", "&a=b?c", "&video=", "&x=%2e"])
    )
    query = prefix + "video=" + url + tail
    return query.encode("utf-8", "surrogatepass")


_LABELS = (
    st.sampled_from(["cdn", "example", "com", "edge-1", "xn--p1ai", "CDN"])
    | st.from_regex(r"[a-z][a-z0-9-]{0,3}[a-z0-9]", fullmatch=True),
    st.sampled_from(["0", "127", "0x7f", "xn--zz", "xn--abc-", "-a", "a-", "a_b", ""])
    | st.sampled_from(LOOK_ALIKES).map(lambda char: f"cdn{char}"),
)


@st.composite
def host_names(draw: st.DrawFn) -> str:
    return ".".join(_part(draw, _LABELS) for _ in range(draw(st.integers(1, 4))))


@st.composite
def cdn_hosts(draw: st.DrawFn) -> str:
    """A `cdn_host` value: optional scheme, a host of hostile labels, an optional port."""
    scheme = _part(draw, (st.sampled_from(["", "http://", "HTTPS://"]), st.just("ftp://")))
    host = draw(
        host_names()
        | st.sampled_from(["10.0.0.7", "010.0.0.7", "1.2.3", "[::1]", "169.254.169.254"])
    )
    tail = _part(draw, (st.sampled_from(["", "/"]), st.sampled_from(["/x", " ", "?", "#", "@x"])))
    return scheme + host + _part(draw, _PORTS) + tail


def origin_domains() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["com", "co.uk", "github.io", "kawasaki.jp", "x.kawasaki.jp", "onion"]),
        st.sampled_from(["0.0.1", "1", "0x7f", "a.0x1f", "0.1", "127.0.0.1", "1.example"]),
        st.sampled_from(["origin-cluster", "origin.example.net", "xn--p1ai.example", "internal"]),
        host_names(),
    )


@st.composite
def origin_domain_lists(draw: st.DrawFn) -> list[str]:
    """Lists of candidate origin domains, sometimes with one listed twice."""
    domains: list[str] = draw(st.lists(origin_domains(), max_size=4))
    twice = draw(st.booleans())
    if domains and twice:
        domains.append(draw(st.sampled_from(domains)))
    return domains


def json_values() -> st.SearchStrategy[object]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(st.characters(exclude_categories=()), max_size=8)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    )


# --- the property every redirect must have ------------------------------------------------

_PUBLIC_SUFFIXES = PublicSuffixList(accept_unknown=False)


def _decoded_forms(segment: str) -> list[str]:
    """A segment as servers that decode and normalise it (repeatedly) may see it."""
    forms = [segment]
    raw = segment.encode()
    for _ in range(6):
        raw = unquote_to_bytes(raw)
        text = unicodedata.normalize("NFKC", raw.decode("utf-8", "replace"))
        forms.append(text)
        raw = text.encode()
    return forms


def _is_dot_segment(segment: str) -> bool:
    name = segment.partition(";")[0].rstrip(" ")
    return bool(name) and not name.strip(".")


def has_no_dot_segment(path: str) -> bool:
    """No segment is `.` or `..` however many times it is decoded (the documented rule)."""
    return not any(
        _is_dot_segment(part)
        for segment in path.split("/")
        for form in _decoded_forms(segment)
        for part in form.replace("\\", "/").split("/")
    )


def resolved_path(path: str) -> list[str] | None:
    """The path's segments as a lenient server resolves them; None when it climbs above `/`."""
    fully = _decoded_forms(path)[-1].replace("\\", "/")
    resolved: list[str] = []
    for segment in fully.split("/")[1:]:
        if _is_dot_segment(segment):
            if segment.partition(";")[0].rstrip(" ") == ".":
                continue
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(segment)
    return resolved


def assert_allowed_domain(domain: str) -> None:
    """A domain that may follow `<server>.`: no public suffix, nothing an IP parser takes."""
    assert domain.isascii()
    assert domain == domain.lower()
    assert not _PUBLIC_SUFFIXES.is_public(domain), domain
    last = domain.rsplit(".", 1)[-1]
    assert not re.fullmatch(r"[0-9]+|0x[0-9a-f]*", last), domain
    for label in ("1", "127", "a"):
        try:
            ipaddress.ip_address(f"{label}.{domain}")
        except ValueError:
            continue
        raise AssertionError(f"{label}.{domain} is an IP address")


def assert_safe_location(decision: Redirect, config: BalancerConfig) -> None:
    """ASCII, no control or space, a host we own, and a path that stays where it belongs."""
    location = decision.location
    assert location.isascii(), location
    assert not any(char <= " " or char == "\x7f" for char in location), location
    parts = urlsplit(location)
    assert parts.scheme in ("http", "https")
    assert "@" not in parts.netloc
    assert parts.port is None or 1 <= parts.port <= 65535  # .port raises on a bad port
    assert has_no_dot_segment(parts.path), location
    segments = resolved_path(parts.path)
    assert segments is not None, location
    server = decision.server
    if decision.target == "cdn":
        bases = {urlsplit(base)[:2] for base in config.probe_targets()}
        assert cdn_base_url(config.cdn_host) in config.probe_targets()
        assert (parts.scheme, parts.netloc) in bases, location
        assert parts.path.startswith(f"/{server}/"), location
        assert len(segments) >= 2, location
        assert segments[0] == server, location
    else:
        assert parts.hostname is not None
        label, _, domain = parts.hostname.partition(".")
        assert label == server
        assert domain in config.origin_domains, location
