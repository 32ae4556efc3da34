from collections.abc import Callable

import structlog

from app.application.errors import ConfigNotLoaded
from app.application.ports import CountryLookup
from app.domain.config import ConfigVersion, FallbackCount, Router
from app.domain.regions import RegionMatcher

log = structlog.get_logger(__name__)


class ConfigSnapshot:
    """The configuration this worker serves, swapped whole when a newer version arrives or
    the set of CDN hosts known to be down changes."""

    __slots__ = ("_down_hosts", "_watchers", "countries", "current", "fallbacks")

    def __init__(self, countries: CountryLookup | None = None) -> None:
        self.countries: CountryLookup = countries or _no_country
        # The router serving now, None before the first version (`router` raises then).
        self.current: Router | None = None
        self._down_hosts: frozenset[str] = frozenset()
        self.fallbacks = FallbackCount()
        self._watchers: list[Callable[[ConfigVersion], None]] = []

    def watch(self, watcher: Callable[[ConfigVersion], None]) -> None:
        """Call `watcher(version)` with every version served from now on (and the current)."""
        self._watchers.append(watcher)
        if self.current is not None:
            watcher(self.current.version)

    @property
    def router(self) -> Router:
        router = self.current
        if router is None:
            raise ConfigNotLoaded("The configuration has not been loaded yet.")
        return router

    @property
    def loaded(self) -> bool:
        return self.current is not None

    @property
    def version(self) -> ConfigVersion:
        return self.router.version

    @property
    def down_hosts(self) -> frozenset[str]:
        return self._down_hosts

    def period(self, sequence: str) -> int:
        """How many consecutive numbers make one round of the split counted on `sequence`
        ("" the global split, a server label that server's rule, `region:<name>` that
        region's); 1 before a config."""
        router = self.current
        return 1 if router is None else router.period(sequence)

    def offer(self, version: ConfigVersion) -> bool:
        """Serve `version` if it is newer than the current one; True when it was taken."""
        current = self.current
        if current is not None and current.version.version >= version.version:
            return False
        regions = version.config.regions
        matcher = (
            RegionMatcher(
                [(region.countries, region.networks) for region in regions], self.countries
            )
            if regions
            else None
        )
        self._install(Router(version, self._down_hosts, self.fallbacks, matcher))
        for watcher in self._watchers:
            watcher(version)
        return True

    def mark_down(self, down_hosts: frozenset[str]) -> None:
        """Route around these CDN hosts (base URLs) from now on, and only these."""
        if down_hosts == self._down_hosts:
            return
        self._down_hosts = down_hosts
        router = self.current
        if router is not None:
            self._install(Router(router.version, down_hosts, self.fallbacks, router.matcher))

    def forget_regions(self) -> None:
        """The country database changed: addresses cached by the region matcher are stale."""
        router = self.current
        if router is not None and router.matcher is not None:
            router.matcher.forget()

    def _install(self, router: Router) -> None:
        before = _empty_pools(self.current)
        self.current = router
        after = _empty_pools(router)
        fallback = router.version.config.origin_fallback
        for pool in sorted(after - before):
            action = "origin" if fallback else "refuse (503)"
            if pool.startswith("regions."):
                action = f"default pool, then {action}"
            log.warning("cdn_pool_unhealthy", pool=pool, action=action)
        for pool in sorted(before - after):
            log.info("cdn_pool_recovered", pool=pool)


def _empty_pools(router: Router | None) -> set[str]:
    if router is None:
        return set()
    return {name for name, rotation in router.pools.items() if not rotation.healthy}


class _NoCountries:
    source = "none"

    def __call__(self, address: str) -> str | None:
        return None


_no_country = _NoCountries()
