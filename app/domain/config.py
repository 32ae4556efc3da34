import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import NamedTuple

from app.domain.errors import InvalidConfig
from app.domain.split import CDN, Split
from app.domain.video import new_tuple, parse_video_url

REDIRECT_STATUSES = (301, 302, 307, 308)
MAX_ORIGIN_DOMAINS = 32
MAX_SERVER_RULES = 10_000

_HOST = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?",
    re.IGNORECASE,
)
_SERVER = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def cdn_base_url(cdn_host: str) -> str:
    """`cdn.example.com` -> `http://cdn.example.com`; a scheme and a port may be given."""
    if not isinstance(cdn_host, str) or not cdn_host:
        raise InvalidConfig("cdn_host", "must be a non-empty host name")
    scheme, sep, authority = cdn_host.partition("://")
    if not sep:
        scheme, authority = "http", cdn_host
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidConfig("cdn_host", "the scheme must be http or https")
    host, colon, port = authority.removesuffix("/").partition(":")
    if len(host) > 253 or not _HOST.fullmatch(host):
        raise InvalidConfig(
            "cdn_host", "must be a host name with an optional scheme and port, and no path"
        )
    if colon and not (port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise InvalidConfig("cdn_host", "the port must be a number from 1 to 65535")
    return f"{scheme}://{host.lower()}{colon}{port}"


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """What admins set: where the CDN is, the CDN:origin split and the rules around them."""

    cdn_host: str
    split: Split
    redirect_status: int = 301
    origin_domains: tuple[str, ...] = ("origin-cluster",)
    server_rules: Mapping[str, Split] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        cdn_base_url(self.cdn_host)
        if self.redirect_status not in REDIRECT_STATUSES or type(self.redirect_status) is not int:
            raise InvalidConfig(
                "redirect_status", f"must be one of {', '.join(map(str, REDIRECT_STATUSES))}"
            )
        if not self.origin_domains or len(self.origin_domains) > MAX_ORIGIN_DOMAINS:
            raise InvalidConfig(
                "origin_domains", f"must list from 1 to {MAX_ORIGIN_DOMAINS} domains"
            )
        for domain in self.origin_domains:
            if not isinstance(domain, str) or len(domain) > 253 or not _HOST.fullmatch(domain):
                raise InvalidConfig("origin_domains", f"{domain!r} is not a domain name")
            if domain != domain.lower():
                raise InvalidConfig("origin_domains", f"{domain!r} must be lower case")
        if len(self.server_rules) > MAX_SERVER_RULES:
            raise InvalidConfig("server_rules", f"at most {MAX_SERVER_RULES} rules")
        for server, split in self.server_rules.items():
            if not isinstance(server, str) or not _SERVER.fullmatch(server):
                raise InvalidConfig("server_rules", f"{server!r} is not a server label like 's1'")
            if not isinstance(split, Split):
                raise InvalidConfig("server_rules", f"{server}: must be a split")
        object.__setattr__(self, "server_rules", MappingProxyType(dict(self.server_rules)))


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    """One stored version of the configuration; the highest version is the active one."""

    version: int
    config: BalancerConfig
    created_at: datetime
    comment: str | None = None


class Redirect(NamedTuple):
    """Where one player goes, and why."""

    target: str
    location: str
    status: int
    server: str
    config_version: int


class Router:
    """A configuration version compiled for the redirect path: all that can be derived, once."""

    __slots__ = ("_cdn_base", "_domains", "_rules", "_split", "_status", "_version", "version")

    def __init__(self, version: ConfigVersion) -> None:
        config = version.config
        self.version = version
        self._version = version.version
        self._cdn_base = cdn_base_url(config.cdn_host)
        self._domains = frozenset(config.origin_domains)
        self._split = config.split
        self._rules = dict(config.server_rules)
        self._status = config.redirect_status

    def redirect(self, raw_video: str, next_number: Callable[[str], int]) -> Redirect:
        """Route one request. `next_number(name)` hands out the sequence named `name`:
        "" for the global split, the server label for a server with its own rule."""
        video = parse_video_url(raw_video, self._domains)
        server = video.server
        rule = self._rules.get(server) if self._rules else None
        if rule is None:
            target = self._split.target(next_number(""))
        else:
            target = rule.target(next_number(server))
        location = f"{self._cdn_base}/{server}{video.rest}" if target is CDN else video.origin_url
        return new_tuple(Redirect, (target, location, self._status, server, self._version))
