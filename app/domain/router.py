from collections.abc import Callable, Mapping
from typing import NamedTuple

from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.errors import NoHealthyTarget
from app.domain.pacing import paced
from app.domain.pool import Rotation
from app.domain.regions import DEFAULT_REGION, Region, RegionMatcher
from app.domain.split import CDN, ORIGIN, Split, Target
from app.domain.steering import SteeringPool
from app.domain.video import common_parts, new_tuple, parse_video_url

_MAX_SCHEDULE = 4096  # the longest split period whose targets a router lists
# Videos a router remembers parsed (see `_Video`): emptied when full, and long URLs not kept,
# so the memo stays small whatever is sent (4,096 x 512 characters at most).
VIDEO_MEMO_SIZE = 4096
VIDEO_MEMO_KEY_LENGTH = 512
# CDN locations the remembered videos keep in all (a video has one per base URL it went to).
LOCATION_MEMO_SIZE = 8192


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


class _Video:
    """A valid video URL as this router routes it: its server label, the rest after the
    host, its origin URL and the server's rule; and its CDN locations by base URL, made
    once (the same string object each time, so what is built from it downstream can be
    remembered by it too)."""

    __slots__ = ("locations", "origin_url", "rest", "rule", "server")

    def __init__(self, server: str, rest: str, origin_url: str, rule: "_Rule | None") -> None:
        self.server = server
        self.rest = rest
        self.origin_url = origin_url
        self.rule = rule
        self.locations: dict[str, str] = {}


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
        "_locations_left",
        "_match",
        "_period",
        "_regions",
        "_retry_after",
        "_rotation",
        "_rules",
        "_split",
        "_status",
        "_steered",
        "_targets",
        "_version",
        "_videos",
        "down_hosts",
        "matcher",
        "percents",
        "pools",
        "probe_targets",
        "sequences",
        "steering_pools",
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
        # The matcher's bound `__call__` while regions are configured, else None: one
        # attribute test per request (bound, because an instance with `__call__` takes
        # CPython's slow call path).
        self._match = matcher.__call__ if config.regions and matcher is not None else None
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
        self.steering_pools = _steering_pools(config, down_hosts, percents)
        # Whether any pool has pathways: a load change lays out its steering pools again.
        self._steered = any(pool.pathways for pool in self.steering_pools.values())
        # Raw video URL -> what `redirect` derives from it alone: a URL asked for again skips
        # parsing and validation. Per router, so a new version or health change starts empty;
        # only valid URLs are kept, each under its own exact text.
        self._videos: dict[str, _Video] = {}
        self._locations_left = LOCATION_MEMO_SIZE  # what their `locations` may still take

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
        if self._steered:
            self.steering_pools = _steering_pools(self.version.config, self.down_hosts, percents)

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
        video = self._videos.get(raw_video) or self._video(raw_video)
        server = video.server
        rule = video.rule
        if self._match is not None:
            return self._redirect_in_region(video, next_number, self._match(client))
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
            location = video.locations.get(base) or self._location(video, base)
        elif target is CDN:
            target, location = self._without_cdn(video.origin_url, DEFAULT_REGION)
            base = ""
        else:
            location = video.origin_url
            base = ""
        return new_tuple(
            Redirect,
            (target, location, self._status, server, self._version, DEFAULT_REGION, base),
        )

    def _video(self, raw_video: str) -> _Video:
        """Parse and check `raw_video` (InvalidVideoUrl if it is not valid), remembered."""
        common = common_parts(raw_video, self._domains)
        if common is None:
            parsed = parse_video_url(raw_video, self._domains)
            server, rest, origin_url = parsed.server, parsed.rest, parsed.origin_url
        else:
            (server, rest), origin_url = common, raw_video
        video = _Video(server, rest, origin_url, self._rules.get(server) if self._rules else None)
        if len(raw_video) <= VIDEO_MEMO_KEY_LENGTH:
            videos = self._videos
            if len(videos) >= VIDEO_MEMO_SIZE:
                videos.clear()
                self._locations_left = LOCATION_MEMO_SIZE
            videos[raw_video] = video
        return video

    def _location(self, video: _Video, base: str) -> str:
        """The redirect of `video` to `base`, a CDN host's base URL, remembered while the
        memo has room."""
        location = f"{base}/{video.server}{video.rest}"
        if self._locations_left:
            self._locations_left -= 1
            video.locations[base] = location
        return location

    def _redirect_in_region(
        self, video: _Video, next_number: Callable[[str], int], index: int | None
    ) -> Redirect:
        """Regions decide the pool (`index`: the client's region, None for the default);
        a server rule's split still beats the region's, and a down server still goes to the
        CDN. A region without a healthy host lends its viewers the pool they would have
        without regions."""
        server, rule = video.server, video.rule
        region = None if index is None else self._regions[index]
        rotation = self._rotation if rule is None else rule.rotation
        if region is not None:
            if region.rotation.healthy:
                rotation = region.rotation
            else:
                regions = self._fallbacks.regions
                regions[region.name] = regions.get(region.name, 0) + 1
        if rule is None and region is not None and region.schedule:  # `_target`, inlined
            target = region.schedule[next_number(region.key) % region.period]
        else:
            target = self._target(server, rule, region, next_number)
        name = DEFAULT_REGION if region is None else region.name
        base: str | None = ""
        if target is CDN:
            base = rotation.next()
            if base:
                location = video.locations.get(base) or self._location(video, base)
            elif rule is not None and rule.down:
                raise self._server_down(server)
            else:
                target, location = self._without_cdn(video.origin_url, name)
                base = ""
        else:
            location = video.origin_url
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

    def steering_pool(self, server: str, client: str = "") -> SteeringPool:
        """The pool whose pathways a viewer of `server` at `client` is steered over: the
        pool its redirects come from (its region's while that has a healthy host, else the
        server rule's own, else the global one)."""
        if self._match is not None:
            index = self._match(client)
            if index is not None and self._regions[index].rotation.healthy:
                return self.steering_pools[f"regions.{self._regions[index].name}.cdn_hosts"]
        rule = self.steering_pools.get(f"server_rules.{server}.cdn_hosts") if server else None
        return rule or self.steering_pools["cdn_hosts"]

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


def _steering_pools(
    config: BalancerConfig, down: frozenset[str], percents: Mapping[str, int] | None
) -> dict[str, SteeringPool]:
    """Each pool's pathways, named as `Router.pools` names the pool, with its settings and
    the hosts' effective weights."""
    default = config.content_steering
    pools = {"cdn_hosts": SteeringPool("cdn_hosts", config.pool, down, default, percents)}
    for server, pool in paced(config.server_pools.items()):
        name = f"server_rules.{server}.cdn_hosts"
        settings = config.server_steering.get(server, default)
        pools[name] = SteeringPool(name, pool, down, settings, percents)
    for region in paced(config.regions):
        name = f"regions.{region.name}.cdn_hosts"
        pools[name] = SteeringPool(name, region.pool, down, region.steering or default, percents)
    return pools
