import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from app.application.errors import ConfigNotLoaded
from app.application.offload import off_loop
from app.application.ports import CountryLookup
from app.domain.config import ConfigVersion
from app.domain.regions import RegionMatcher
from app.domain.router import FallbackCount, Router

log = structlog.get_logger(__name__)

# Called with the sequences a new version counts on, and awaited, before it is served.
Preparer = Callable[[tuple[str, ...]], Awaitable[None]]


class ConfigSnapshot:
    """The configuration this worker serves, swapped whole when a newer version arrives or
    the set of CDN hosts known to be down changes."""

    __slots__ = (
        "_down_hosts",
        "_percents",
        "_preparers",
        "_serving",
        "_watchers",
        "countries",
        "current",
        "fallbacks",
    )

    def __init__(self, countries: CountryLookup | None = None) -> None:
        self.countries: CountryLookup = countries or _no_country
        # The router serving now, None before the first version (`router` raises then).
        self.current: Router | None = None
        self._down_hosts: frozenset[str] = frozenset()
        # Base URL -> percent of its configured weight, for hosts not at 100.
        self._percents: Mapping[str, int] = {}
        self.fallbacks = FallbackCount()
        self._watchers: list[Callable[[ConfigVersion], None]] = []
        self._preparers: list[Preparer] = []
        self._serving = asyncio.Lock()

    def watch(self, watcher: Callable[[ConfigVersion], None]) -> None:
        """Call `watcher(version)` with every version served from now on (and the current)."""
        self._watchers.append(watcher)
        if self.current is not None:
            watcher(self.current.version)

    def before_serving(self, prepare: Preparer) -> None:
        """Await `prepare(sequences)` with the sequences of every version `serve` takes,
        before the version is served."""
        self._preparers.append(prepare)

    @property
    def sequences(self) -> tuple[str, ...]:
        """The sequences the served version counts on ("" alone before a config)."""
        router = self.current
        return ("",) if router is None else router.sequences

    @property
    def probe_targets(self) -> tuple[str, ...]:
        """`probe_targets()` of the served configuration, as compiled with it."""
        router = self.current
        return () if router is None else router.probe_targets

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

    @property
    def percents(self) -> Mapping[str, int]:
        return self._percents

    def period(self, sequence: str) -> int:
        """How many consecutive numbers make one round of the split counted on `sequence`
        ("" the global split, a server label that server's rule, `region:<name>` that
        region's); 1 before a config."""
        router = self.current
        return 1 if router is None else router.period(sequence)

    def offer(self, version: ConfigVersion) -> bool:
        """Serve `version` if it is newer than the current one; True when it was taken.
        Compiled here and now, without the preparers: for tests and small configurations."""
        if not self._newer(version):
            return False
        self._take(self.compile(version, self._down_hosts, self._percents))
        return True

    async def serve(self, version: ConfigVersion) -> bool:
        """Serve `version` if it is newer than the current one; True when it was taken.

        The largest configuration takes tens of milliseconds to compile (lookup tables of
        10,000 networks, 10,000 rules, every pool's rotation): that runs in a thread, so
        the event loop keeps answering redirects meanwhile (it waits for the interpreter
        lock a switch interval, 5 ms, at most). Then the preparers lease the sequences it
        counts on, and only then is it swapped in. One version at a time.
        """
        async with self._serving:
            if not self._newer(version):
                return False
            router = await off_loop(self.compile, version, self._down_hosts, self._percents)
            for prepare in self._preparers:
                await prepare(router.sequences)
            if router.down_hosts != self._down_hosts:  # a health change came meanwhile
                router = self._recompile(router)
            elif router.percents != self._percents:  # a load change
                router.reweigh(self._percents)
            self._take(router)
            return True

    def compile(
        self,
        version: ConfigVersion,
        down_hosts: frozenset[str],
        percents: Mapping[str, int] | None = None,
    ) -> Router:
        """`version` compiled for the redirect path; touches nothing of what is served."""
        regions = version.config.regions
        matcher = (
            RegionMatcher(
                [(region.countries, region.networks) for region in regions], self.countries
            )
            if regions
            else None
        )
        return Router(version, down_hosts, self.fallbacks, matcher, percents)

    def _newer(self, version: ConfigVersion) -> bool:
        current = self.current
        return current is None or current.version.version < version.version

    def _take(self, router: Router) -> None:
        self._install(router)
        for watcher in self._watchers:
            watcher(router.version)

    def _recompile(self, router: Router) -> Router:
        return Router(
            router.version, self._down_hosts, self.fallbacks, router.matcher, self._percents
        )

    def mark_down(
        self, down_hosts: frozenset[str], percents: Mapping[str, int] | None = None
    ) -> None:
        """Route around these CDN hosts (base URLs) from now on, and only these; give the
        hosts in `percents` that share of their configured weight (the others all of it)."""
        percents = percents or {}
        if down_hosts == self._down_hosts and percents == self._percents:
            return
        same_hosts = down_hosts == self._down_hosts
        self._down_hosts = down_hosts
        self._percents = percents
        router = self.current
        if router is not None and same_hosts:
            # Load reports move every round: the largest configuration compiles in 40 ms,
            # its rotations alone are laid out again in 1 ms a pool whose reports moved.
            router.reweigh(percents)
        elif router is not None:
            self._install(self._recompile(router))

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
