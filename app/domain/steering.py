"""Content steering (HLS Content Steering, DASH-IF Content Steering): the order in which a
playing viewer's player should try the pathways (CDN hosts) of its pool, and the signed
session token that keeps a viewer on the pathway it was given while that one stays up."""

import hashlib
import hmac
from base64 import urlsafe_b64decode, urlsafe_b64encode
from binascii import Error as Base64Error
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from app.domain.errors import InvalidConfig
from app.domain.pool import CdnPool, Rotation
from app.domain.syntax import PATHWAY

MAX_TTL_SECONDS = 3600
MAX_TOKEN_LENGTH = 512
_MAC_BYTES = 16
_SEPARATOR = "~"  # in no pathway id, pool name or session id


@dataclass(frozen=True, slots=True, kw_only=True)
class SteeringSettings:
    """Whether a pool's viewers get steering manifests, and how often players reload them."""

    enabled: bool = False
    ttl_seconds: int = 10

    def __post_init__(self) -> None:
        if type(self.enabled) is not bool:
            raise InvalidConfig("content_steering.enabled", "must be true or false")
        if type(self.ttl_seconds) is not int or not 1 <= self.ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidConfig(
                "content_steering.ttl_seconds",
                f"must be an integer from 1 to {MAX_TTL_SECONDS} seconds",
            )

    @classmethod
    def of(cls, values: Mapping[str, object], field: str) -> "SteeringSettings":
        """Validate a document; errors name `field` (`regions[0].content_steering`)."""
        unknown = set(values) - {"enabled", "ttl_seconds"}
        if unknown:
            raise InvalidConfig(f"{field}.{min(unknown)}", "is not a content steering setting")
        try:
            return cls(**values)  # type: ignore[arg-type]
        except InvalidConfig as error:
            name = error.field.rpartition(".")[2]
            raise InvalidConfig(f"{field}.{name}", error.detail.partition(": ")[2]) from None

    def document(self) -> dict[str, object]:
        return {"enabled": self.enabled, "ttl_seconds": self.ttl_seconds}


class SteeringPlan(NamedTuple):
    """One steering manifest's content: pathways in the order the player should try them."""

    pool: str  # the pool's name, as the router names it (`regions.eu.cdn_hosts`)
    settings: SteeringSettings
    pathways: tuple[str, ...]  # healthy ones first, head first, then those that are down

    @property
    def head(self) -> str:
        return self.pathways[0] if self.pathways else ""


class SteeringPool:
    """The pathways of one pool with the hosts known to be down, compiled with the router.

    A viewer's first manifest takes its head from a smooth weighted round robin over the
    healthy pathways (so over many viewers the heads follow the weights exactly, as
    redirects do); a later one keeps the head it had while that pathway is healthy. The
    rest follow by weight (heaviest first, then in configured order), and the pathways that
    are down come last: a player still needs a last resort.
    """

    __slots__ = (
        "_by_url",
        "_down",
        "_heads",
        "_healthy",
        "_rotation",
        "name",
        "pathways",
        "settings",
    )

    def __init__(
        self,
        name: str,
        pool: CdnPool,
        down: frozenset[str],
        settings: SteeringSettings,
        percents: Mapping[str, int] | None = None,
    ) -> None:
        """`percents`: the share of its configured weight each host gets now (base URL ->
        percent, 100 when absent), from load reports and slow start, as the router's."""
        self.name = name
        self.settings = settings
        steered = tuple(host for host in pool.hosts if host.pathway)
        self.pathways = frozenset(host.pathway for host in steered)
        healthy = [host for host in steered if host.base_url not in down]
        shares = percents or {}
        # By effective weight; stable: equal weights keep their configured order.
        healthy.sort(key=lambda host: -host.weight * shares.get(host.base_url, 100))
        self._healthy = tuple(host.pathway for host in healthy)
        # Drained (0%: up, but no new viewers): no viewer keeps one as its head.
        self._heads = frozenset(
            host.pathway for host in healthy if shares.get(host.base_url, 100) > 0
        )
        self._down = tuple(host.pathway for host in steered if host.base_url in down)
        self._by_url = {host.base_url: host.pathway for host in steered}
        self._rotation = Rotation(CdnPool(steered), down, percents) if healthy else None

    @property
    def has_healthy(self) -> bool:
        return bool(self._healthy)

    def plan(self, sticky: str = "") -> SteeringPlan:
        """The order for a viewer whose head was `sticky` ("" for a new viewer)."""
        head = sticky if sticky and sticky in self._heads else ""
        if not head and self._rotation is not None:
            head = self._by_url[self._rotation.next() or ""]
        if head:
            order = (head, *(pathway for pathway in self._healthy if pathway != head))
        else:
            order = self._healthy
        return SteeringPlan(self.name, self.settings, (*order, *self._down))

    def peek(self) -> str:
        """The head a new viewer would get next, without moving the rotation."""
        if self._rotation is None:
            return self._down[0] if self._down else ""
        return self._by_url[self._rotation.peek() or ""]


class Session(NamedTuple):
    """What a steering session token says: who, in which pool, on which head pathway."""

    session: str
    pool: str
    pathway: str


class SessionTokens:
    """Session tokens signed with HMAC-SHA256: a client can read its own token (it holds
    nothing secret) but cannot make one the balancer accepts for another session, pool or
    pathway. A token that does not verify is no token at all."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a steering secret needs at least 16 bytes")
        self._key = secret

    def issue(self, session: Session) -> str:
        payload = _SEPARATOR.join(session).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def read(self, token: str) -> Session | None:
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        encoded, dot, mac = token.partition(".")
        try:
            payload = _unb64(encoded)
            given = _unb64(mac)
        except (Base64Error, ValueError):
            return None
        if not dot or not hmac.compare_digest(given, self._mac(payload)):
            return None
        parts = payload.decode(errors="replace").split(_SEPARATOR)
        if len(parts) != 3 or (parts[2] and not PATHWAY.fullmatch(parts[2])):
            return None
        return Session(*parts)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return urlsafe_b64decode(text + "=" * (-len(text) % 4))
