"""Content steering: the manifest a playing viewer's player reloads every TTL seconds."""

import secrets
from typing import NamedTuple

from app.application.errors import ConfigNotLoaded
from app.application.metrics import Tally
from app.application.snapshot import ConfigSnapshot
from app.domain.errors import BalancerError
from app.domain.steering import Session, SessionTokens, SteeringPlan
from app.domain.syntax import parse_number

# Reported throughputs above this (bits per second) are not believed: 1 Tbit/s.
MAX_THROUGHPUT = 10**12
_MAX_REPORTED = 64  # pathways a report may list (a pool has at most 64)


class SteeringDisabled(BalancerError):
    """Content steering is off for the viewer's pool."""

    code = "steering-disabled"


class SteeringAnswer(NamedTuple):
    """A steering manifest's content, and the viewer's session token for its next reload."""

    plan: SteeringPlan
    token: str

    @property
    def ttl(self) -> int:
        return self.plan.settings.ttl_seconds


class SteerPlayer:
    """Order the pathways of a viewer's pool for its player: the pool its redirects come
    from (region, server rule, global), healthy pathways first, the viewer's head kept while
    it stays healthy. What the player reports (its pathway, its throughput) is counted
    when it names a pathway of the pool, and ignored otherwise (see `_count`).

    Synchronous like RedirectVideo: no I/O, ever; it is as cheap as a redirect.
    """

    __slots__ = ("_snapshot", "_tally", "_tokens")

    def __init__(
        self, snapshot: ConfigSnapshot, tokens: SessionTokens, tally: Tally | None
    ) -> None:
        self._snapshot = snapshot
        self._tokens = tokens
        self._tally = tally

    def __call__(
        self,
        *,
        server: str = "",
        client: str = "",
        token: str = "",
        pathway: str = "",
        throughput: str = "",
    ) -> SteeringAnswer:
        """`server`: the origin server label whose rule may name a pool ("": none);
        `client`: the viewer's address; the rest as the player sent them."""
        router = self._snapshot.current
        if router is None:
            raise ConfigNotLoaded("The configuration has not been loaded yet.")
        pool = router.steering_pool(server, client)
        if not pool.settings.enabled:
            raise SteeringDisabled("Content steering is off for this viewer's CDN pool.")
        session = self._tokens.read(token)
        if session is None or session.pool != pool.name:
            sticky = ""
            session_id = session.session if session is not None else secrets.token_urlsafe(9)
        else:
            sticky, session_id = session.pathway, session.session
        plan = pool.plan(sticky)
        if self._tally is not None:
            self._count(pool.pathways, pathway, throughput)
        return SteeringAnswer(plan, self._tokens.issue(Session(session_id, pool.name, plan.head)))

    def _count(self, known: frozenset[str], pathways: str, throughputs: str) -> None:
        """HLS sends one pathway and its throughput (`cdn-a`, `5000000`); dash.js sends every
        service location of the MPD, quoted, and a throughput for each it has measured
        (`"cdn-a,cdn-b"`, `4800000,`). The request counts for the first known pathway with
        a throughput (the one in use), else the first known one, else ""."""
        assert self._tally is not None
        names = pathways.removeprefix('"').removesuffix('"').split(",")[:_MAX_REPORTED]
        figures = throughputs.split(",")[:_MAX_REPORTED]
        measured = []
        for index, name in enumerate(names):
            if name not in known:
                continue
            value = _throughput(figures[index]) if index < len(figures) else None
            if value is not None:
                measured.append((name, value))
        first = next((name for name in names if name in known), "")
        self._tally.steered(measured[0][0] if measured else first)
        for name, value in measured:
            self._tally.throughput(name, value)


class SteeringTag(NamedTuple):
    """What to put in a multivariant playlist and an MPD to make the balancer their
    steering server."""

    pathway: str  # the pathway a new viewer would start on ("": the pool has none)
    ttl: int


class DescribeSteering:
    """The initial pathway a viewer of `server` at `client` would get, for the playlist tag."""

    def __init__(self, snapshot: ConfigSnapshot) -> None:
        self._snapshot = snapshot

    async def __call__(self, server: str, client: str) -> SteeringTag:
        pool = self._snapshot.router.steering_pool(server, client)
        if not pool.settings.enabled:
            raise SteeringDisabled("Content steering is off for this viewer's CDN pool.")
        return SteeringTag(pool.peek(), pool.settings.ttl_seconds)


def _throughput(text: str) -> float | None:
    """A reported throughput in bits per second: ASCII digits, at most MAX_THROUGHPUT
    (hls.js and dash.js send integers); None for anything else."""
    if not text:
        return None
    value = parse_number(text, MAX_THROUGHPUT)
    return None if value is None else float(value)
