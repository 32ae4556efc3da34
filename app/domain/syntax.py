"""What text from outside may look like where it names a number, a host or a port.

One rule each, shared by video URLs, configuration values and headers. Everything here is
ASCII on purpose: `str.isdigit()` and `int()` accept superscript, Arabic-Indic and
fullwidth digits, and a regular expression compiled with `re.IGNORECASE` matches the long
s, the dotless i and the Kelvin sign against `s`, `i` and `k`; such characters would reach
a `Location` header raw.
"""

import re
from encodings import idna
from functools import cache, lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

from publicsuffixlist import PublicSuffixList

from app.domain.errors import InvalidConfig

MAX_PORT = 65535
MAX_HOST_LENGTH = 253

_DIGITS = re.compile(r"[0-9]+")
LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Dot-separated labels, in one match: a CDN host of five labels costs 0.6 us, not 2.9.
_HOST = re.compile(rf"(?:{LABEL.pattern}\.)*{LABEL.pattern}")
# WHATWG URL parsers read a host whose last label is a number (`0.0.1`, `x.0x7f`) as IPv4.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


# A content steering pathway id: what players send back in `_HLS_pathway` and metrics label.
PATHWAY = re.compile(r"[A-Za-z0-9._-]{1,64}")


def parse_number(text: str, maximum: int) -> int | None:
    """`text` as an integer from 0 to `maximum`: ASCII digits only, never longer than
    `maximum` written out (so `int()` never sees thousands of digits); None otherwise."""
    if len(text) > len(str(maximum)) or not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= maximum else None


def parse_port(text: str) -> int | None:
    """A TCP port from 1 to 65535 in ASCII digits; None otherwise."""
    port = parse_number(text, MAX_PORT)
    return port if port else None


def host_problem(host: str, *, allow_ip: bool) -> str | None:
    """What is wrong with `host` as a lower-case DNS name, or None when nothing is.

    Labels are ASCII letters, digits and inner hyphens; an international name is written
    as its `xn--` A-label, which must be valid Punycode. A name ending in a numeric label is
    an IPv4 address to a browser: with `allow_ip` it must be a plain dotted quad, without
    it it is refused.
    """
    if not host.isascii():
        return "must be ASCII; write an international name as its xn-- A-label"
    if len(host) > MAX_HOST_LENGTH or not _HOST.fullmatch(host):
        return (
            f"must be a host name of at most {MAX_HOST_LENGTH} characters: dot-separated "
            "labels of a-z, 0-9 and inner hyphens"
        )
    if "xn--" in host and any(
        label.startswith("xn--") and not _is_a_label(label) for label in host.split(".")
    ):
        return "has an xn-- label that is not a valid A-label"
    if _NUMERIC_LABEL.fullmatch(host.rpartition(".")[2]) and not (allow_ip and _is_ipv4(host)):
        return (
            "ends in a number, so it must be an IPv4 address like 10.0.0.7"
            if allow_ip
            else "must not be numeric or look like an IP address"
        )
    return None


def is_link_local(address: str) -> bool:
    """`address` is an IP address in 169.254.0.0/16 or fe80::/10 (also written as an
    IPv4-mapped IPv6 address). Cloud metadata services answer there; no CDN does."""
    try:
        ip = ip_address(address.partition("%")[0])  # a scope (`fe80::1%eth0`) aside
    except ValueError:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_link_local
    return ip.is_link_local


def is_server_label(value: object) -> bool:
    """`s1`, `edge-7`: one lower-case DNS label, the first part of an origin server's host."""
    return isinstance(value, str) and _is_label(value)


@lru_cache(maxsize=16_384)
def _is_label(text: str) -> bool:
    # Cached: a config's 10,000 rule labels are checked from its body, then by the config.
    return LABEL.fullmatch(text) is not None


def domain_problem(domain: str) -> str | None:
    """What is wrong with `domain` as an allowed origin domain (`<server>.<domain>`).

    Besides being a host name, it must not be IP-like (with a numeric label, `0.0.1` would
    let `127.0.0.1` through) and not a public suffix from the Public Suffix List (`com`,
    `co.uk`, `github.io`): anyone can register a name under those. Names the list does not
    know, such as `origin-cluster`, are private and allowed.
    """
    if domain != domain.lower():
        return "must be lower case"
    problem = host_problem(domain, allow_ip=False)
    if problem is not None:
        return problem
    if any(_DIGITS.fullmatch(label) for label in domain.split(".")):
        return "must not have an all-numeric label"
    if _public_suffixes().is_public(domain):
        return "is a public suffix (anyone can register a name under it)"
    return None


@cache
def _public_suffixes() -> PublicSuffixList:
    # Loaded on first use (a few ms) from the list the package ships; unknown names are
    # private, not public.
    return PublicSuffixList(accept_unknown=False)


@lru_cache(maxsize=4096)  # 5 to 20 us each (Punycode and nameprep in Python)
def _is_a_label(label: str) -> bool:
    """`xn--...` is the A-label of a valid international label: it decodes, and encodes back
    to itself (IDNA 2003 nameprep, as Python ships it)."""
    try:
        return idna.ToASCII(label[4:].encode("ascii").decode("punycode")) == label.encode()
    except UnicodeError:
        return False


def _is_ipv4(host: str) -> bool:
    try:
        IPv4Address(host)  # refuses leading zeros, hex and short forms
    except ValueError:
        return False
    return True


def cdn_base_url(cdn_host: str, field: str = "cdn_host") -> str:
    """`cdn.example.com` -> `http://cdn.example.com`; a scheme and a port may be given.

    The one rule for a host that redirects are sent to; `field` names it in the error.
    """
    if not isinstance(cdn_host, str) or not cdn_host:
        raise InvalidConfig(field, "must be a non-empty host name")
    try:
        return _base_url(cdn_host)
    except ValueError as error:
        raise InvalidConfig(field, str(error)) from None


@lru_cache(maxsize=16_384)
def _base_url(cdn_host: str) -> str:
    # Cached: the same hosts come back in every version a worker reads (each reload,
    # each history page), and an international name costs 70 us to check.
    if not cdn_host.isascii():
        raise ValueError("must be ASCII; write an international name as its xn-- A-label")
    scheme, sep, authority = cdn_host.partition("://")
    if not sep:
        scheme, authority = "http", cdn_host
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("the scheme must be http or https")
    host, colon, port = authority.removesuffix("/").lower().partition(":")
    problem = host_problem(host, allow_ip=True)
    if problem is not None:
        raise ValueError(
            f"must be a host name with an optional scheme and port, and no path: {problem}"
        )
    # (the only spelling of such an address that host_problem admits: IPv4, no leading zeros)
    if host.startswith("169.254.") and is_link_local(host):
        raise ValueError(
            "must not be a link-local address (169.254.0.0/16): cloud metadata services "
            "answer there, no CDN does"
        )
    if not colon:
        return f"{scheme}://{host}"
    number = parse_port(port)
    if number is None:
        raise ValueError("the port must be a number from 1 to 65535 in ASCII digits")
    return f"{scheme}://{host}:{number}"
