from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from app.domain.cdn_health import HealthSettings
from app.domain.errors import InvalidConfig
from app.domain.pacing import paced
from app.domain.pool import MAX_HOSTS_IN_ALL, CdnPool
from app.domain.ratelimit import RateLimit
from app.domain.regions import Region, check_regions
from app.domain.split import Split
from app.domain.steering import SteeringSettings
from app.domain.syntax import domain_problem, is_server_label

REDIRECT_STATUSES = (301, 302, 307, 308)
MAX_ORIGIN_DOMAINS = 32
MAX_SERVER_RULES = 10_000


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
    content_steering: SteeringSettings = field(default_factory=SteeringSettings)
    # Steering settings of the servers whose rule has a pool of its own (else the global).
    server_steering: Mapping[str, SteeringSettings] = field(
        default_factory=lambda: MappingProxyType({})
    )

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
        self._check_steering()
        object.__setattr__(self, "regions", check_regions(self.regions))
        hosts = sum(len(pool.hosts) for pool in self._pools())
        if hosts > MAX_HOSTS_IN_ALL:
            raise InvalidConfig(
                "cdn_hosts",
                f"at most {MAX_HOSTS_IN_ALL} hosts over all pools (cdn_hosts, regions and "
                f"server rules together), not {hosts}",
            )

    def _check_steering(self) -> None:
        if not isinstance(self.content_steering, SteeringSettings):
            raise InvalidConfig("content_steering", "must be content steering settings")
        for server, settings in self.server_steering.items():
            field = f"server_rules.{server}.content_steering"
            if server not in self.server_pools:
                raise InvalidConfig(field, "needs a CDN pool of the rule's own (cdn_hosts)")
            if not isinstance(settings, SteeringSettings):
                raise InvalidConfig(field, "must be content steering settings")
        object.__setattr__(self, "server_steering", MappingProxyType(dict(self.server_steering)))

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
