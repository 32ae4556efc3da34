import re
from typing import NamedTuple
from urllib.parse import quote

from app.domain.errors import InvalidVideoUrl

MAX_VIDEO_URL_LENGTH = 8192

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
_URL_SAFE = "-._~:/?#[]@!$&'()*+,;=%"
_DOT_SEGMENT = re.compile(r"/\.{1,2}(?:/|$)|/%2e(?:%2e|\.)?(?:/|$)|/\.%2e(?:/|$)", re.IGNORECASE)
# The shape nearly every real request has: lower-case host, no port, nothing to escape.
# A URL that does not fit it is not rejected; it goes through the full checks instead.
_COMMON = re.compile(
    r"(https?)://([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.([a-z0-9.-]{1,253})"
    r"(/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]+(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*)?)"
)


class VideoUrl(NamedTuple):
    """A validated video URL on an origin server: `<scheme>://<server>.<domain>[:port]<rest>`."""

    scheme: str
    server: str
    domain: str
    port: str
    rest: str

    @property
    def origin_url(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{self.server}.{self.domain}{port}{self.rest}"


# NamedTuple's generated __new__ is a Python-level call; the tuple constructor is not, and
# the redirect path builds one of these per request.
new_tuple = tuple.__new__


def parse_video_url(raw: str, origin_domains: frozenset[str]) -> VideoUrl:
    """Check `raw` against the URL rules and split it into parts, or raise InvalidVideoUrl.

    `raw` is already percent-decoded once (as it came out of the query string); escapes
    that remain are kept and characters that may not stand in a URL are escaped again.
    """
    common = _COMMON.fullmatch(raw)
    if common is not None and len(raw) <= MAX_VIDEO_URL_LENGTH:
        scheme, server, domain, rest = common.groups()
        if domain in origin_domains and "/." not in rest and "/%" not in rest:
            return new_tuple(VideoUrl, (scheme, server, domain, "", rest))
    return _parse_in_full(raw, origin_domains)


def _parse_in_full(raw: str, origin_domains: frozenset[str]) -> VideoUrl:  # noqa: PLR0912
    if not raw:
        raise InvalidVideoUrl("missing-video", "Query parameter 'video' is required.")
    if len(raw) > MAX_VIDEO_URL_LENGTH:
        raise InvalidVideoUrl(
            "video-too-long", f"The video URL is longer than {MAX_VIDEO_URL_LENGTH} characters."
        )
    if _FORBIDDEN.search(raw):
        raise InvalidVideoUrl(
            "invalid-characters", "The video URL contains control characters or a backslash."
        )
    scheme, sep, after_scheme = raw.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise InvalidVideoUrl(
            "unsupported-scheme",
            "The video URL must be absolute and start with http:// or https://.",
        )
    authority_end = len(after_scheme)
    for delimiter in "/?#":
        index = after_scheme.find(delimiter, 0, authority_end)
        if index != -1:
            authority_end = index
    authority = after_scheme[:authority_end].lower()
    rest = after_scheme[authority_end:]
    if "@" in authority:
        raise InvalidVideoUrl("userinfo-not-allowed", "The video URL must not contain user info.")
    host, _, port = authority.partition(":")
    server, _, domain = host.partition(".")
    if domain not in origin_domains or not _LABEL.fullmatch(server):
        raise InvalidVideoUrl(
            "host-not-allowed",
            f"The video host must be <server>.<domain> with a domain in: "
            f"{', '.join(sorted(origin_domains))}.",
        )
    if port and not (port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise InvalidVideoUrl("invalid-port", "The video URL has an invalid port.")
    path_end = len(rest)
    for delimiter in "?#":
        index = rest.find(delimiter)
        if index != -1 and index < path_end:
            path_end = index
    if path_end < 2 or rest[0] != "/":
        raise InvalidVideoUrl("missing-path", "The video URL must have a path to the video.")
    if _DOT_SEGMENT.search(rest, 0, path_end):
        raise InvalidVideoUrl(
            "invalid-path", "The video path must not contain '.' or '..' segments."
        )
    if _NEEDS_QUOTING.search(rest):
        rest = quote(rest, safe=_URL_SAFE)
    return VideoUrl(scheme, server, domain, port, rest)
