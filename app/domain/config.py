from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import NamedTuple

from app.domain.errors import InvalidConfig, NoHealthyTarget
from app.domain.health import HealthSettings
from app.domain.pacing import paced
from app.domain.pool import MAX_HOSTS_IN_ALL, CdnPool, Rotation
from app.domain.ratelimit import RateLimit
from app.domain.regions import DEFAULT_REGION, Region, RegionMatcher, check_regions
from app.domain.split import CDN, ORIGIN, Split, Target
from app.domain.syntax import LABEL, domain_problem
from app.domain.video import common_parts, new_tuple, parse_video_url

REDIRECT_STATUSES = (301, 302, 307, 308)
MAX_ORIGIN_DOMAINS = 32
MAX_SERVER_RULES = 10_000
_MAX_SCHEDULE = 4096  # the longest split period whose targets a router lists


def is_server_label(value: object) -> bool:
    """`s1`, `edge-7`: one lower-case DNS label, the first part of an origin server's host."""
    return isinstance(value, str) and LABEL.fullmatch(value) is not None


def check_origin_domains(domains: Iterable[object], field: str = "origin_domains") -> None:
    """Allowed origin domains: 1 to 32 distinct, lower-case, private domain names."""
    domains = () if isinstance(domains, str) else tuple(domains)
    if not domains or len(domains) > MAX_ORIGIN_DOMAINS:
        raise InvalidConfig(field, f"must list from 1 to {MAX_ORIGIN_DOMAINS} domains")
    for domain in domains:
        problem = domain_problem(domain) if isinstance(domain, str) else "is not a string"
        if problem is not None:
            shown = domain[:100] if isinstance(domain, str) else domain
            raise InvalidConfig(field, f"{shown!r} {problem}")
    if len(set(domains)) != len(domains):
        raise InvalidConfig(field, "must not list a domain twice")


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """What admins set: where the CDN is, the CDN:origin split and the rules around them."""

    cdn_host: str
    split: Split
    redirect_status: int = 301
    origin_domains: tuple[str, ...] = ("origin-cluster",)
    server_rules: Mapping[str, Split] = field(default_factory=lambda: MappingProxyType({}))
    # None: a pool of one, `cdn_host`. Given: `cdn_host` becomes its first host.
    cdn_hosts: CdnPool | None = None
    cdn_health: HealthSettings = field(default_factory=HealthSettings)
    origin_fallback: bool = True
    down_servers: tuple[str, ...] = ()
    # Pools of their own for servers with a rule, keyed like `server_rules`.
    server_pools: Mapping[str, CdnPool] = field(default_factory=lambda: MappingProxyType({}))
    rate_limit: RateLimit | None = None  # every client's limit unless overridden; None: off
    # Pools by viewer network or country, in order; empty: every viewer gets the default pool.
    regions: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        if self.cdn_hosts is None:
            object.__setattr__(self, "cdn_hosts", CdnPool.single(self.cdn_host))
        elif isinstance(self.cdn_hosts, CdnPool):
            object.__setattr__(self, "cdn_host", self.cdn_hosts.first.host)
        else:
            raise InvalidConfig("cdn_hosts", "must be a pool")
        self._check_serving_rules()
        if self.redirect_status not in REDIRECT_STATUSES or type(self.redirect_status) is not int:
            raise InvalidConfig(
                "redirect_status", f"must be one of {', '.join(map(str, REDIRECT_STATUSES))}"
            )
        check_origin_domains(self.origin_domains)
        if len(self.server_rules) > MAX_SERVER_RULES:
            raise InvalidConfig("server_rules", f"at most {MAX_SERVER_RULES} rules")
        for server, split in paced(self.server_rules.items()):
            if not is_server_label(server):
                raise InvalidConfig("server_rules", f"{server!r} is not a server label like 's1'")
            if not isinstance(split, Split):
                raise InvalidConfig("server_rules", f"{server}: must be a split")
        object.__setattr__(self, "server_rules", MappingProxyType(dict(self.server_rules)))

    def _check_serving_rules(self) -> None:
        if self.rate_limit is not None and not isinstance(self.rate_limit, RateLimit):
            raise InvalidConfig("rate_limit", "must be a rate limit or null")
        if not isinstance(self.cdn_health, HealthSettings):
            raise InvalidConfig("cdn_health", "must be health check settings")
        if type(self.origin_fallback) is not bool:
            raise InvalidConfig("origin_fallback", "must be true or false")
        if len(self.down_servers) > MAX_SERVER_RULES:
            raise InvalidConfig("down_servers", f"at most {MAX_SERVER_RULES} servers")
        for server in paced(self.down_servers):
            if not is_server_label(server):
                raise InvalidConfig("down_servers", f"{server!r} is not a server label like 's1'")
        object.__setattr__(self, "down_servers", tuple(sorted(set(self.down_servers))))
        for server, pool in self.server_pools.items():
            if server not in self.server_rules:
                raise InvalidConfig(
                    f"server_rules.{server}.cdn_hosts", "needs a rule for the server"
                )
            if not isinstance(pool, CdnPool):
                raise InvalidConfig(f"server_rules.{server}.cdn_hosts", "must be a pool")
        object.__setattr__(self, "server_pools", MappingProxyType(dict(self.server_pools)))
        object.__setattr__(self, "regions", check_regions(self.regions))
        hosts = sum(len(pool.hosts) for pool in self._pools())
        if hosts > MAX_HOSTS_IN_ALL:
            raise InvalidConfig(
                "cdn_hosts",
                f"at most {MAX_HOSTS_IN_ALL} hosts over all pools (cdn_hosts, regions and "
                f"server rules together), not {hosts}",
            )

    @property
    def pool(self) -> CdnPool:
        assert self.cdn_hosts is not None  # set in __post_init__
        return self.cdn_hosts

    def probe_targets(self) -> tuple[str, ...]:
        """Base URLs of every CDN host the configuration can redirect to, each once."""
        return tuple(dict.fromkeys(url for pool in self._pools() for url in pool.base_urls))

    def host_weights(self) -> dict[str, int]:
        """Base URL -> configured weight of every CDN host, in the first pool that lists it
        (`cdn_hosts`, then the server rules', then the regions')."""
        weights: dict[str, int] = {}
        for pool in self._pools():
            for host in pool.hosts:
                weights.setdefault(host.base_url, host.weight)
        return weights

    def _pools(self) -> tuple[CdnPool, ...]:
        return (
            self.pool,
            *self.server_pools.values(),
            *(region.pool for region in self.regions),
        )


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
    region: str = DEFAULT_REGION  # the viewer's region
    cdn: str = ""  # the CDN host's base URL, "" for the origin


class FallbackCount:
    """Requests of this worker that found no healthy CDN host: sent to the origin (in all,
    and by the viewer's region), or refused; and by region, requests sent to the default
    pool because the region's had none."""

    __slots__ = ("origin", "origin_by_region", "refused", "regions")

    def __init__(self) -> None:
        self.origin = 0
        self.origin_by_region: dict[str, int] = {}
        self.refused = 0
        self.regions: dict[str, int] = {}


class RouteExplanation(NamedTuple):
    """What a client at `address` would get, without taking a sequence number."""

    address: str
    country: str | None
    region: str
    matched_by: str  # "network", "country" or "default"
    pool: tuple[str, ...]  # healthy base URLs of the pool that would serve it
    target: str
    location: str
    server: str


class _Rule:
    __slots__ = ("down", "rotation", "split")

    def __init__(self, split: Split | None, rotation: Rotation, *, down: bool) -> None:
        self.split = split
        self.rotation = rotation
        self.down = down


class _RegionRoute:
    __slots__ = ("key", "name", "period", "rotation", "schedule", "split")

    def __init__(self, region: Region, split: Split, rotation: Rotation) -> None:
        self.name = region.name
        self.key = f"region:{region.name}"  # the region's own sequence
        self.split = region.split or split
        self.period = self.split.cdn_weight + self.split.origin_weight
        self.schedule = self.split.schedule() if self.period <= _MAX_SCHEDULE else ()
        self.rotation = rotation


class Router:
    """A configuration version compiled for the redirect path with the CDN hosts known to be
    down: all that can be derived, once. A health change compiles a new one."""

    __slots__ = (
        "_cdn_base",
        "_domains",
        "_fallback",
        "_fallbacks",
        "_match",
        "_period",
        "_regions",
        "_retry_after",
        "_rotation",
        "_rules",
        "_split",
        "_status",
        "_targets",
        "_version",
        "down_hosts",
        "matcher",
        "percents",
        "pools",
        "probe_targets",
        "sequences",
        "version",
    )

    def __init__(
        self,
        version: ConfigVersion,
        down_hosts: frozenset[str] = frozenset(),
        fallbacks: FallbackCount | None = None,
        matcher: RegionMatcher | None = None,
        percents: Mapping[str, int] | None = None,
    ) -> None:
        """`matcher` holds the regions of `version` (None: viewers are not told apart);
        `percents` the share of its configured weight each host gets now (base URL ->
        percent; 100 when absent), from the hosts' load reports and slow start."""
        config = version.config
        self.down_hosts = down_hosts  # as given, health checks on or off
        self.percents: Mapping[str, int] = percents or {}
        if not config.cdn_health.enabled:
            down_hosts = frozenset()
            percents = None
        self.version = version
        self._version = version.version
        self._domains = frozenset(config.origin_domains)
        self._split = config.split
        # The global split's targets over one period when it is short: an index instead of
        # Split.target()'s arithmetic and call (measured: 0.7k instructions a request).
        self._period = config.split.cdn_weight + config.split.origin_weight
        self._targets = config.split.schedule() if self._period <= _MAX_SCHEDULE else ()
        self._status = config.redirect_status
        self._fallback = config.origin_fallback
        self._fallbacks = fallbacks or FallbackCount()
        self._retry_after = config.cdn_health.retry_after
        self._rotation = Rotation(config.pool, down_hosts, percents)
        # The one healthy host of the global pool ("" otherwise): a pool of one costs nothing.
        self._cdn_base = self._rotation.only
        self.pools: dict[str, Rotation] = {"cdn_hosts": self._rotation}
        rules: dict[str, _Rule] = {}
        for server, split in paced(config.server_rules.items()):
            rules[server] = _Rule(
                split, self._rule_rotation(config, server, down_hosts, percents), down=False
            )
        for server in paced(config.down_servers):
            rotation = rules[server].rotation if server in rules else self._rotation
            rules[server] = _Rule(None, rotation, down=True)
        self._rules = rules
        self.matcher = matcher
        # The matcher while regions are configured, else None: one attribute test per request.
        self._match = matcher if config.regions else None
        regions = []
        for region in paced(config.regions):
            rotation = Rotation(region.pool, down_hosts, percents)
            self.pools[f"regions.{region.name}.cdn_hosts"] = rotation
            regions.append(_RegionRoute(region, config.split, rotation))
        self._regions = tuple(regions)
        # The names `redirect` passes to `next_number`.
        self.sequences = ("", *config.server_rules, *(region.key for region in regions))
        # Asked for by every health refresh and metrics flush: 8,192 hosts at most.
        self.probe_targets = config.probe_targets()

    def reweigh(self, percents: Mapping[str, int]) -> None:
        """Apply new load percents (base URL -> percent) in place, the down hosts as they
        are: only the rotations of pools whose members' percents moved are laid out again,
        and nothing else of the router is compiled again."""
        self.percents = percents
        if not self.version.config.cdn_health.enabled:
            return
        for rotation in self.pools.values():
            rotation.reweigh(percents)
        self._cdn_base = self._rotation.only

    def period(self, sequence: str) -> int:
        """How many consecutive numbers make one round of the split counted on `sequence`
        (a name `redirect` passes to `next_number`)."""
        split = self._split
        rule = self._rules.get(sequence)
        if rule is not None and rule.split is not None:
            split = rule.split
        else:
            for region in self._regions:
                if region.key == sequence:
                    split = region.split
        return split.cdn_weight + split.origin_weight

    def _rule_rotation(
        self,
        config: BalancerConfig,
        server: str,
        down_hosts: frozenset[str],
        percents: Mapping[str, int] | None,
    ) -> Rotation:
        pool = config.server_pools.get(server)
        if pool is None:
            return self._rotation
        rotation = Rotation(pool, down_hosts, percents)
        self.pools[f"server_rules.{server}.cdn_hosts"] = rotation
        return rotation

    def redirect(
        self, raw_video: str, next_number: Callable[[str], int], client: str = ""
    ) -> Redirect:
        """Route one request. `next_number(name)` hands out the sequence named `name`:
        "" for the global split, the server label for a server with its own rule,
        `region:<name>` for a region. `client` is the viewer's address (for regions)."""
        common = common_parts(raw_video, self._domains)
        if common is None:
            video = parse_video_url(raw_video, self._domains)
            server, rest, origin_url = video.server, video.rest, video.origin_url
        else:
            (server, rest), origin_url = common, raw_video
        rule = self._rules.get(server) if self._rules else None
        if self._match is not None:
            return self._redirect_in_region(
                server, rest, origin_url, rule, next_number=next_number, index=self._match(client)
            )
        target: Target
        if rule is None:
            number = next_number("")
            if self._targets:
                target = self._targets[number % self._period]
            else:
                target = self._split.target(number)
            base = (self._cdn_base or self._rotation.next()) if target is CDN else None
        elif rule.down:
            target = CDN
            base = rule.rotation.next()
            if base is None:
                raise self._server_down(server)
        else:
            assert rule.split is not None
            target = rule.split.target(next_number(server))
            base = rule.rotation.next() if target is CDN else None
        if base:
            location = f"{base}/{server}{rest}"
        elif target is CDN:
            target, location = self._without_cdn(origin_url, DEFAULT_REGION)
            base = ""
        else:
            location = origin_url
            base = ""
        return new_tuple(
            Redirect,
            (target, location, self._status, server, self._version, DEFAULT_REGION, base),
        )

    def _redirect_in_region(
        self,
        server: str,
        rest: str,
        origin_url: str,
        rule: "_Rule | None",
        *,
        next_number: Callable[[str], int],
        index: int | None,
    ) -> Redirect:
        """Regions decide the pool (`index`: the client's region, None for the default);
        a server rule's split still beats the region's, and a down server still goes to the
        CDN. A region without a healthy host lends its viewers the pool they would have
        without regions."""
        region = None if index is None else self._regions[index]
        rotation = self._rotation if rule is None else rule.rotation
        if region is not None:
            if region.rotation.healthy:
                rotation = region.rotation
            else:
                regions = self._fallbacks.regions
                regions[region.name] = regions.get(region.name, 0) + 1
        target = self._target(server, rule, region, next_number)
        name = DEFAULT_REGION if region is None else region.name
        base: str | None = ""
        if target is CDN:
            base = rotation.next()
            if base:
                location = f"{base}/{server}{rest}"
            elif rule is not None and rule.down:
                raise self._server_down(server)
            else:
                target, location = self._without_cdn(origin_url, name)
                base = ""
        else:
            location = origin_url
        return new_tuple(
            Redirect, (target, location, self._status, server, self._version, name, base)
        )

    def explain(
        self,
        address: str,
        raw_video: str,
        peek_number: Callable[[str], int],
        country_of: Callable[[str], str | None],
    ) -> RouteExplanation:
        """Where `redirect` would send a client at `address` next, from this worker's point of
        view, without taking a sequence number or moving a rotation."""
        video = parse_video_url(raw_video, self._domains)
        server = video.server
        rule = self._rules.get(server)
        if self.matcher is not None and self._match is not None:
            index, matched_by, country = self.matcher.explain(address)
        else:
            index, matched_by, country = None, DEFAULT_REGION, country_of(address)
        region = None if index is None else self._regions[index]
        rotation = self._rotation if rule is None else rule.rotation
        if region is not None and region.rotation.healthy:
            rotation = region.rotation
        target = self._target(server, rule, region, peek_number)
        base = rotation.peek() if target is CDN else None
        if base:
            location = f"{base}/{server}{video.rest}"
        elif target is CDN and self._fallback and not (rule is not None and rule.down):
            target, location = ORIGIN, video.origin_url
        elif target is CDN:
            location = ""  # the request would be refused with 503
        else:
            location = video.origin_url
        return RouteExplanation(
            address=address,
            country=country,
            region=DEFAULT_REGION if region is None else region.name,
            matched_by=matched_by,
            pool=rotation.healthy,
            target=target.value,
            location=location,
            server=server,
        )

    def _target(
        self,
        server: str,
        rule: "_Rule | None",
        region: "_RegionRoute | None",
        number: Callable[[str], int],
    ) -> Target:
        """Which split decides: a down server goes to the CDN, else the server's own split,
        else the region's, else the global one (on the sequence `number` hands out)."""
        if rule is not None and rule.down:
            return CDN
        if rule is not None:
            assert rule.split is not None
            return rule.split.target(number(server))
        if region is not None:
            sequence = number(region.key)
            if region.schedule:
                return region.schedule[sequence % region.period]
            return region.split.target(sequence)
        sequence = number("")
        if self._targets:
            return self._targets[sequence % self._period]
        return self._split.target(sequence)

    def _server_down(self, server: str) -> NoHealthyTarget:
        """The refusal for a down origin server with no healthy CDN host to send it to."""
        self._fallbacks.refused += 1
        return NoHealthyTarget(
            "no-healthy-target",
            f"Origin server {server} is down and no CDN host is healthy.",
            self._retry_after,
        )

    def _without_cdn(self, origin_url: str, region: str) -> tuple[Target, str]:
        if self._fallback:
            fallbacks = self._fallbacks
            fallbacks.origin += 1
            fallbacks.origin_by_region[region] = fallbacks.origin_by_region.get(region, 0) + 1
            return ORIGIN, origin_url
        self._fallbacks.refused += 1
        raise NoHealthyTarget(
            "no-healthy-cdn", "No CDN host of the pool is healthy.", self._retry_after
        )
