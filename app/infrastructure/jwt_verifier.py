"""Bearer JWTs from an identity provider, verified with PyJWT against the provider's JWKS."""

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import structlog

from app.application.errors import InvalidToken
from app.domain.access import Identity, highest_role

# Asymmetric only: the service holds public keys, which can sign nothing. An HMAC algorithm
# would make the shared secret (or, in the classic confusion attack, the public key read as
# one) enough to mint tokens; `none` signs nothing.
ALGORITHMS = ("RS256", "ES256", "EdDSA")
LEEWAY_SECONDS = 60
FETCH_TIMEOUT_SECONDS = 5.0
# Known keys are fetched again after this long, in the background (revoked keys go).
KEYS_LIFESPAN_SECONDS = 300.0

log = structlog.get_logger(__name__)


class JwksKeys:
    """The provider's public keys by `kid`, from a JWKS URL or file, kept in memory.

    A request never waits for a fetch while its key is known. An unknown `kid` (the provider
    rotated its keys) fetches the set again, at most once in `refetch_seconds`; concurrent
    requests share that fetch. The fetch runs in a thread, so the event loop never waits for
    the network. When the set cannot be read, the keys known keep working.
    """

    def __init__(
        self,
        source: str,
        *,
        refetch_seconds: float,
        lifespan_seconds: float = KEYS_LIFESPAN_SECONDS,
        timeout_seconds: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self._source = source
        self._is_url = urlsplit(source).scheme in ("http", "https")
        self._refetch_seconds = refetch_seconds
        self._lifespan_seconds = lifespan_seconds
        self._timeout_seconds = timeout_seconds
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._attempted = -math.inf
        self._loaded = -math.inf
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    async def find(self, kid: str | None) -> jwt.PyJWK | None:
        """The key `kid` names (with no `kid`, the set's only key), or None."""
        key = self._keys.get(kid)
        if key is not None:
            if time.monotonic() - self._loaded > self._lifespan_seconds:
                self._refresh_in_background()
            return key
        # Waits for a fetch under way (its set may hold the key), else fetches if allowed.
        async with self._lock:
            if kid not in self._keys and self._may_fetch():
                await self._fetch()
        return self._keys.get(kid)

    def _may_fetch(self) -> bool:
        return time.monotonic() - self._attempted >= self._refetch_seconds

    def _refresh_in_background(self) -> None:
        idle = self._background is None or self._background.done()
        if idle and self._may_fetch() and not self._lock.locked():
            self._background = asyncio.get_running_loop().create_task(self._fetch_locked())

    async def _fetch_locked(self) -> None:
        async with self._lock:
            await self._fetch()

    async def _fetch(self) -> None:
        self._attempted = time.monotonic()
        try:
            document = await asyncio.to_thread(self._read)
            # An empty set is an answer (every key revoked); PyJWKSet refuses it.
            found = [] if document == {"keys": []} else jwt.PyJWKSet.from_dict(document).keys
        except (jwt.PyJWTError, OSError, ValueError, TypeError, AttributeError) as error:
            log.warning("jwks_unavailable", source=self._source, error=str(error))
            return
        keys: dict[str | None, jwt.PyJWK] = {key.key_id: key for key in found}
        if len(found) == 1:
            keys[None] = found[0]
        if set(keys) != set(self._keys):
            log.info("jwks_loaded", source=self._source, kids=sorted(map(str, keys)))
        self._keys = keys
        self._loaded = time.monotonic()

    def _read(self) -> Any:
        if self._is_url:
            client = jwt.PyJWKClient(
                self._source, cache_jwk_set=False, cache_keys=False, timeout=self._timeout_seconds
            )
            return client.fetch_data()
        return json.loads(Path(self._source).read_text())


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def role_names(claims: dict[str, Any], path: str) -> list[str]:
    """The values of the roles claim at a dotted `path`: a list, or a space-separated
    string (`scope`)."""
    value = _claim(claims, path)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class JwtVerifier:
    """A TokenVerifier: the token's algorithm must be one of ALGORITHMS and the key its
    `kid` names; `exp` is required; `exp`, `nbf`, `iat`, `iss` and `aud` are checked with
    LEEWAY_SECONDS of clock skew."""

    def __init__(self, keys: JwksKeys, *, issuer: str, audience: str, roles_claim: str) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._roles_claim = roles_claim

    async def __call__(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken(f"not a JWT: {error}") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"the algorithm {algorithm!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("the kid is not a string")
        key = await self._keys.find(kid)
        if key is None:
            raise InvalidToken(f"no key has the kid {kid!r}")
        if key.algorithm_name != algorithm:
            raise InvalidToken(f"the key {kid!r} is for {key.algorithm_name}, not {algorithm}")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the sub is not a string")
        return Identity(
            name=subject,
            role=highest_role(role_names(claims, self._roles_claim)),
            issuer=claims["iss"],
        )
