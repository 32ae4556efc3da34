from datetime import datetime
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    SkipValidation,
    TypeAdapter,
    ValidationError,
    model_serializer,
)

from app.application.config_versions import ConfigChange, RateLimitChange, ServerRule
from app.application.documents import config_fields
from app.domain.access import Actor
from app.domain.config import ConfigVersion
from app.domain.errors import InvalidConfig
from app.domain.pacing import paced
from app.domain.pool import CdnPool
from app.domain.ratelimit import MAX_CAPACITY, RateLimit
from app.domain.regions import Region
from app.domain.split import Split
from app.domain.steering import SteeringSettings


class CdnHostBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    host: str = Field(description="Host name, optional http(s):// and port; no path.")
    weight: int = Field(1, description="Share of the CDN redirects, 1 to 1000.")
    pathway: str | None = Field(
        None,
        description="Content steering pathway id (letters, digits, `.`, `-`, `_`; unique in "
        "the pool), as the playlist's PATHWAY-ID names it; absent: not steered.",
        examples=["cdn-a"],
    )

    @model_serializer(mode="wrap")
    def _without_empty_pathway(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = serialize(self)
        if body.get("pathway") is None:
            body.pop("pathway", None)
        return body


class SteeringBody(BaseModel):
    """Content steering: players reload the steering manifest every `ttl_seconds`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = Field(None, description="false: /steering/* answers 404.")
    ttl_seconds: int | None = Field(None, description="The manifest's TTL, 1 to 3600.")

    def to_settings(self, field: str) -> SteeringSettings:
        values = self.model_dump(exclude_none=True)
        return SteeringSettings.of(values, field)


def _pool(hosts: list[CdnHostBody], field: str) -> CdnPool:
    return CdnPool.of(((entry.host, entry.weight, entry.pathway) for entry in hosts), field)


def _pool_body(pool: CdnPool) -> list[CdnHostBody]:
    return [
        CdnHostBody(host=host.host, weight=host.weight, pathway=host.pathway or None)
        for host in pool.hosts
    ]


def _steering_body(settings: SteeringSettings | None) -> "SteeringBody | None":
    if settings is None:
        return None
    return SteeringBody(enabled=settings.enabled, ttl_seconds=settings.ttl_seconds)


class ServerRuleBody(BaseModel):
    """One origin server's rule: its own split, replacing the global one for that server and
    counted on a sequence of its own, and optionally a CDN pool of its own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cdn_weight: int = Field(ge=0, examples=[0])
    origin_weight: int = Field(ge=0, examples=[1])
    cdn_hosts: list[CdnHostBody] | None = Field(
        None, description="A CDN pool of this server's own; without it, the global pool."
    )
    content_steering: SteeringBody | None = Field(
        None, description="Content steering of the rule's own pool; without it, the global one."
    )

    @model_serializer(mode="wrap")
    def _without_empty_pool(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = serialize(self)
        for name in ("cdn_hosts", "content_steering"):
            if body.get(name) is None:
                body.pop(name, None)
        return body

    def to_split(self) -> Split:
        return Split(self.cdn_weight, self.origin_weight)

    def to_steering(self, field: str) -> SteeringSettings | None:
        if self.content_steering is None:
            return None
        return self.content_steering.to_settings(field)

    def to_rule(self) -> ServerRule:
        pool = None if self.cdn_hosts is None else _pool(self.cdn_hosts, "cdn_hosts")
        return ServerRule(self.to_split(), pool, self.to_steering("content_steering"))

    @classmethod
    def of(
        cls,
        split: Split,
        pool: CdnPool | None = None,
        steering: SteeringSettings | None = None,
    ) -> "ServerRuleBody":
        return cls(
            cdn_weight=split.cdn_weight,
            origin_weight=split.origin_weight,
            cdn_hosts=None if pool is None else _pool_body(pool),
            content_steering=_steering_body(steering),
        )


class CdnHealthBody(BaseModel):
    """Health check settings; in a PATCH only those named change."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = None
    path: str | None = Field(None, description="Probed path, e.g. `/health`.")
    method: str | None = Field(None, description="HEAD or GET.")
    interval_seconds: float | None = Field(None, description="Seconds between probes.")
    timeout_seconds: float | None = Field(None, description="Below interval_seconds.")
    fall: int | None = Field(None, description="Failures in a row that take a host out.")
    rise: int | None = Field(None, description="Successes in a row that bring it back.")
    load: str | None = Field(
        None,
        description="Load reports read from the probe's answer: `off`, `agent` (HAProxy agent "
        "words in the body's first line, e.g. `up 75%`; needs GET) or `utilization` (the ORCA "
        '`endpoint-load-metrics` header, or a body `{"utilization": 0.7}`).',
    )
    slow_start_seconds: float | None = Field(
        None, description="A host back up ramps from 10% to its full weight over this; 0: off."
    )


class RegionBody(BaseModel):
    """Viewers in `networks` (most specific block of all regions first) or, failing that, in
    `countries` (first region in order) go to `cdn_hosts`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(description="A label: a-z, 0-9, '-', '_'; `default` is reserved.")
    countries: list[str] = Field([], description="ISO 3166-1 alpha-2 codes, e.g. `DE`.")
    networks: list[str] = Field([], description="CIDR blocks, e.g. `10.20.0.0/16`.")
    cdn_hosts: list[CdnHostBody] = Field(description="The region's CDN pool.")
    cdn_weight: int | None = Field(None, description="The region's split; both or neither.")
    origin_weight: int | None = Field(None, description="Without them: the global split.")
    content_steering: SteeringBody | None = Field(
        None, description="Content steering of the region's pool; without it, the global one."
    )

    def to_region(self, index: int) -> Region:
        steering = self.content_steering
        return Region.of(
            index,
            name=self.name,
            countries=self.countries,
            networks=self.networks,
            hosts=[(entry.host, entry.weight, entry.pathway) for entry in self.cdn_hosts],
            cdn_weight=self.cdn_weight,
            origin_weight=self.origin_weight,
            content_steering=None
            if steering is None
            else steering.to_settings(f"regions[{index}].content_steering"),
        )

    @model_serializer(mode="wrap")
    def _without_empty_split(self, serialize: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = serialize(self)
        if body.get("cdn_weight") is None:
            body.pop("cdn_weight", None)
            body.pop("origin_weight", None)
        if body.get("content_steering") is None:
            body.pop("content_steering", None)
        return body


class RateLimitBody(BaseModel):
    """A token bucket: `capacity` requests at once, `refill_per_second` on average."""

    model_config = ConfigDict(extra="forbid", strict=True)

    capacity: int = Field(ge=0, le=MAX_CAPACITY, description="Burst; 0 blocks the client.")
    refill_per_second: float = Field(gt=0, le=MAX_CAPACITY, description="Sustained rate.")

    def to_limit(self) -> RateLimit:
        return RateLimit(self.capacity, self.refill_per_second)


class ServerRulePut(ServerRuleBody):
    """The whole rule of one server (every field of the rule, not only those that change)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"cdn_weight": 0, "origin_weight": 1, "comment": "s7 is off the CDN"},
                {
                    "cdn_weight": 1,
                    "origin_weight": 1,
                    "cdn_hosts": [{"host": "127.0.0.1:8082", "weight": 1}],
                },
            ]
        },
    )

    comment: str | None = Field(None, max_length=1000, description="Why; kept in the history.")


class ConfigPatch(BaseModel):
    """Fields to change; the others keep their values. Nothing is written if any is invalid.

    The examples' CDN hosts are `make demo`'s stand-ins (127.0.0.1:8081 and :8082), which
    answer health checks, so trying them in /docs shows hosts that are up."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {"cdn_host": "cdn2.example.com", "comment": "move to the new CDN"},
                {"cdn_weight": 3, "origin_weight": 2},
                {"origin_every": 10},
                {
                    "cdn_hosts": [
                        {"host": "127.0.0.1:8081", "weight": 3},
                        {"host": "127.0.0.1:8082", "weight": 1},
                    ]
                },
                {
                    "cdn_health": {
                        "enabled": True,
                        "path": "/health",
                        "interval_seconds": 2,
                        "timeout_seconds": 1,
                    }
                },
                {"origin_fallback": False, "down_servers": ["s3"]},
                {
                    "regions": [
                        {
                            "name": "eu",
                            "countries": ["DE", "FR"],
                            "networks": ["10.20.0.0/16"],
                            "cdn_hosts": [{"host": "127.0.0.1:8082", "weight": 1}],
                        }
                    ]
                },
            ]
        },
    )

    cdn_host: str | None = Field(
        None, description="CDN host, optionally with scheme (http by default) and port."
    )
    cdn_weight: int | None = Field(None, description="CDN share of the split.")
    origin_weight: int | None = Field(None, description="Origin share of the split.")
    origin_every: int | None = Field(
        None, description="Shorthand: every N-th request to the origin (N-1:1)."
    )
    redirect_status: int | None = Field(None, description="301, 302, 307 or 308.")
    origin_domains: list[str] | None = Field(
        None, description="Accepted video hosts are <server>.<one of these>."
    )
    # The two long fields (10,000 rules, 64 regions of 10,000 networks in all) are checked
    # by `to_change`, entry by entry off the event loop, not by FastAPI in one call on it.
    server_rules: SkipValidation[dict[str, ServerRuleBody]] | None = Field(
        None, description="Per origin server splits that replace the global one."
    )
    cdn_hosts: list[CdnHostBody] | None = Field(
        None, description="CDN pool: 1 to 64 hosts with weights; `cdn_host` is its first."
    )
    cdn_health: CdnHealthBody | None = Field(None, description="Active health checks.")
    origin_fallback: bool | None = Field(
        None, description="No healthy CDN host: true sends to the origin, false answers 503."
    )
    down_servers: list[str] | None = Field(
        None, description="Origin servers taken out: all their requests go to the CDN."
    )
    rate_limit: RateLimitBody | None = Field(
        None, description="Every client's limit unless overridden in /limits; null: off."
    )
    regions: SkipValidation[list[RegionBody]] | None = Field(
        None, description="Pools by viewer network or country, replacing the list; [] clears."
    )
    content_steering: SteeringBody | None = Field(
        None, description="Content steering (GET /steering/hls, /steering/dash) of the pools."
    )
    comment: str | None = Field(None, description="Why; kept in the history.")

    def to_change(self) -> ConfigChange:
        values = {name: getattr(self, name) for name in self.model_fields_set}
        _check_long_fields(values)
        for name, value in values.items():
            if value is None and name not in ("comment", "rate_limit"):
                raise InvalidConfig(name, "must not be null; leave the field out to keep it")
        if not set(values) - {"comment"}:
            raise InvalidConfig("body", "name at least one field to change")
        for name in ("origin_domains", "down_servers"):
            if name in values:
                values[name] = tuple(values[name])
        if "server_rules" in values:
            _rule_values(values)
        if "cdn_hosts" in values:
            values["cdn_hosts"] = _pool(values["cdn_hosts"], "cdn_hosts")
        for name in ("cdn_health", "content_steering"):
            if name in values:
                values[name] = _settings(name, values[name])
        if "regions" in values:
            values["regions"] = tuple(
                region.to_region(index) for index, region in enumerate(paced(values["regions"]))
            )
        if "rate_limit" in values:
            limit = values["rate_limit"]
            values["rate_limit"] = RateLimitChange(None if limit is None else limit.to_limit())
        return ConfigChange(**values)


def _settings(field: str, body: BaseModel) -> dict[str, Any]:
    """The settings a patch names (only those change)."""
    settings = body.model_dump(exclude_unset=True)
    for name, value in settings.items():
        if value is None:
            raise InvalidConfig(f"{field}.{name}", "must not be null")
    return settings


def _rule_values(values: dict[str, Any]) -> None:
    """`server_rules` of a patch as ConfigChange takes them: splits, pools and steering."""
    rules: dict[str, ServerRuleBody] = values["server_rules"]
    values["server_rules"] = {server: rule.to_split() for server, rule in paced(rules.items())}
    values["server_pools"] = {
        server: _pool(rule.cdn_hosts, f"server_rules.{server}.cdn_hosts")
        for server, rule in paced(rules.items())
        if rule.cdn_hosts is not None
    }
    values["server_steering"] = {
        server: rule.content_steering.to_settings(f"server_rules.{server}.content_steering")
        for server, rule in paced(rules.items())
        if rule.content_steering is not None
    }


_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
_LIST: TypeAdapter[list[Any]] = TypeAdapter(list[Any])
_RULES: TypeAdapter[dict[Any, ServerRuleBody]] = TypeAdapter(dict[Any, ServerRuleBody])
_REGIONS: TypeAdapter[dict[Any, RegionBody]] = TypeAdapter(dict[Any, RegionBody])
Entry = TypeVar("Entry")
# Entries checked in one call: a few hundred microseconds each, and ten times fewer calls
# than one per entry.
_BATCH = 256


def _each(
    field: str, container: TypeAdapter[Any], value: object, entries: TypeAdapter[dict[Any, Entry]]
) -> list[Entry]:
    """`value`, an object or a list, its entries checked (`entries`) a batch at a time;
    errors as FastAPI reports those of a body."""
    try:
        found = container.validate_python(value, strict=True)
    except ValidationError as error:
        raise RequestValidationError(_located(error, (field,))) from None
    items = list(found.items() if isinstance(found, dict) else enumerate(found))
    checked: list[Entry] = []
    errors: list[Any] = []
    for start in paced(range(0, len(items), _BATCH)):
        try:
            checked += entries.validate_python(dict(items[start : start + _BATCH])).values()
        except ValidationError as error:
            errors += _located(error, (field,))
    if errors:
        raise RequestValidationError(errors)
    return checked


def _check_long_fields(values: dict[str, Any]) -> None:
    if values.get("server_rules") is not None:
        rules = values["server_rules"]
        checked = _each("server_rules", _OBJECT, rules, _RULES)
        values["server_rules"] = dict(zip(rules, checked, strict=True))
    if values.get("regions") is not None:
        values["regions"] = _each("regions", _LIST, values["regions"], _REGIONS)


def _located(error: ValidationError, where: tuple[Any, ...]) -> list[Any]:
    return [{**item, "loc": ("body", *where, *item["loc"])} for item in error.errors()]


class ConfigBody(BaseModel):
    version: int
    cdn_host: str
    cdn_weight: int
    origin_weight: int
    redirect_status: int
    origin_domains: list[str]
    server_rules: dict[str, ServerRuleBody]
    cdn_hosts: list[CdnHostBody]
    cdn_health: CdnHealthBody
    origin_fallback: bool
    down_servers: list[str]
    rate_limit: RateLimitBody | None
    regions: list[RegionBody]
    content_steering: SteeringBody
    comment: str | None
    created_at: datetime


def config_document(stored: ConfigVersion) -> dict[str, Any]:
    """`stored` as `ConfigBody` has it, in plain dicts and lists (`to_json` writes the same
    bytes as the model would): 5 ms for the largest configuration, where building the
    models, which validate each of its 10,000 rules, took 35."""
    return {
        "version": stored.version,
        **config_fields(stored.config),
        "comment": stored.comment,
        "created_at": stored.created_at,
    }


class CdnHostHealth(BaseModel):
    host: str = Field(description="The host's base URL, as redirects use it.")
    healthy: bool
    since: datetime | None = Field(description="When it entered this state; null: never probed.")
    last_check: datetime | None
    last_error: str | None
    consecutive_failures: int
    configured_weight: int = Field(
        description="The host's weight in the first pool listing it (cdn_hosts, rules, regions)."
    )
    effective_weight: float = Field(
        description="What the rotations give it now: configured weight times its load report's "
        "share and slow start; 0 while down or drained."
    )
    reported: dict[str, str | int | float] | None = Field(
        description="The last load report read: `state`, `weight_percent`, `utilization`; "
        "null: none (or load reports are off)."
    )
    load_error: str | None = Field(description="Why the last load report was ignored.")


class ActorBody(BaseModel):
    """Who made a change: a static token's name, or a JWT's `sub` with its `iss`."""

    name: str = Field(description="The token's name, or the JWT's `sub`.")
    issuer: str | None = Field(description="The JWT's `iss`; null for a static token.")
    address: str | None = Field(description="The client address the change came from.")

    @classmethod
    def of(cls, actor: Actor | None) -> "ActorBody | None":
        if actor is None:
            return None
        return cls(name=actor.name, issuer=actor.issuer, address=actor.address)


class ConfigHistoryItem(ConfigBody):
    actor: ActorBody | None = Field(
        description="Who stored this version; null for versions stored before actors were "
        "recorded, or written outside the API."
    )


class ConfigHistoryPage(BaseModel):
    items: list[ConfigHistoryItem]
    next_before: int | None = Field(
        description="Pass as `before` for the next page; null on the last page."
    )


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    comment: str | None = Field(None, max_length=1000, description="Why; kept in the history.")


class BalanceRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"video": "http://s1.origin-cluster/video/1488/x.m3u8"}]},
    )

    video: str = Field(description="The video URL on an origin server.")


class RouteBody(BaseModel):
    ip: str
    country: str | None = Field(description="From the country database; null: unknown.")
    region: str = Field(description="The region's name, or `default`.")
    matched_by: str = Field(description="`network`, `country` or `default`.")
    pool: list[str] = Field(description="Healthy hosts of the pool that would serve it.")
    target: str = Field(description="`cdn` or `origin`: what the next number would give.")
    location: str | None = Field(description="null: the request would be refused (503).")
    country_source: str = Field(description="`iptocc` or `maxmind:<file>`.")


class BalanceDecision(BaseModel):
    redirect_url: str
    target: str = Field(description="`cdn` or `origin`.")
    server: str = Field(description="The origin server label, e.g. `s1`.")
    config_version: int
    region: str = Field("default", description="The client's region, or `default`.")


PROBLEM_RESPONSE: dict[str, Any] = {
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str
