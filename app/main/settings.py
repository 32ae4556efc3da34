import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from adaptix import P, Retort, loader
from adaptix.load_error import AggregateLoadError, LoadError
from adaptix.struct_trail import get_trail

from app.domain.access import Role, StaticToken

ENV_PREFIX = "BALANCER_"
MIN_TOKEN_LENGTH = 16
MIN_TOKEN_BITS = 64
GENERATE_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
# Words that mark a value someone was meant to replace. Where one occurs the rest of the
# token must be strong on its own, so a random token that happens to hold `test` passes.
_PLACEHOLDER = re.compile(
    r"change[-_. ]?(?:me|it)|example|placeholder|secret|passw(?:or)?d|pass|token|dummy"
    r"|sample|default|replace|insert|your|test|demo|admin|qwerty|letmein|x{3,}",
    re.IGNORECASE,
)


class SettingsError(ValueError):
    """The environment does not describe a runnable service."""


def token_bits(token: str) -> float:
    """A conservative estimate of a token's entropy in bits.

    Each character counts the Shannon entropy of the token's own character frequencies
    (so `aaaa` and `abab` count little), except one that continues a run of equal or
    consecutive characters (`aaa`, `abc`, `321`), which counts nothing; a token made of
    one part repeated (`Summer24!Summer24!`) counts that part once. A
    `secrets.token_urlsafe(32)` scores about 170-240 bits; `change-me-admin` about 20.
    """
    for period in range(1, len(token) // 2 + 1):
        if token[period:] == token[:-period]:
            token = token[:period]
            break
    length = len(token)
    counts = Counter(token).values()
    per_char = sum(n / length * math.log2(length / n) for n in counts)
    codes = [ord(char) for char in token]
    predictable = sum(
        1
        for i in range(2, length)
        if codes[i] - codes[i - 1] == codes[i - 1] - codes[i - 2]
        and abs(codes[i] - codes[i - 1]) <= 1
    )
    return (length - predictable) * per_char


def token_weakness(token: str) -> str | None:
    """Why an admin token must not be used, or None for a strong one."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"has {len(token)} characters; at least {MIN_TOKEN_LENGTH} are required"
    words = sorted({match.lower() for match in _PLACEHOLDER.findall(token)})
    bits = token_bits(_PLACEHOLDER.sub("", token))
    if bits >= MIN_TOKEN_BITS:
        return None
    if words:
        return f"looks like a placeholder (it contains {', '.join(map(repr, words))})"
    return (
        f"is too predictable: about {bits:.0f} bits of entropy where {MIN_TOKEN_BITS} are "
        "required (repeated or consecutive characters, or too few different ones)"
    )


_NAMED = re.compile(r"([A-Za-z0-9._@-]{1,64}):([a-z]+):(.+)")


def static_token(entry: str) -> StaticToken:
    """`name:role:token`, or a plain token (today's form), which is an admin's named after
    its fingerprint. SettingsError for an unknown role."""
    named = _NAMED.fullmatch(entry)
    if named is None:
        digest = hashlib.sha256(entry.encode()).hexdigest()[:12]
        return StaticToken(f"token-{digest}", Role.ADMIN, entry)
    name, role, secret = named.groups()
    if role not in Role.__members__.values():
        roles = ", ".join(Role)
        raise SettingsError(f"token {name!r} has the role {role!r}; the roles are {roles}")
    return StaticToken(name, Role(role), secret)


def _admin_tokens(raw: str) -> tuple[str, ...]:
    return _tokens(raw, secret=lambda entry: static_token(entry).secret)


def _metrics_tokens(raw: str) -> tuple[str, ...]:
    return _tokens(raw, secret=lambda entry: entry)


def _tokens(raw: str, secret: Callable[[str], str]) -> tuple[str, ...]:
    tokens = tuple(token.strip() for token in raw.split(",") if token.strip())
    for number, token in enumerate(tokens, start=1):
        weakness = token_weakness(secret(token))
        if weakness is not None:
            which = f"token {number} of {len(tokens)}" if len(tokens) > 1 else "the token"
            raise SettingsError(f"{which} {weakness}; generate one with: {GENERATE_COMMAND}")
    return tokens


def _service_url(raw: str) -> str:
    """A database or Redis URL, refused while its password is still a placeholder."""
    password = urlsplit(raw).password
    if password and re.search(r"change[-_. ]?me|placeholder", password, re.IGNORECASE):
        raise SettingsError("the password in the URL is a placeholder; set a real one")
    return raw


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{raw!r} is not a boolean")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service reads from the environment (`BALANCER_<FIELD>`), read once."""

    database_url: str
    redis_url: str
    # Entries `name:role:token` or plain tokens (admins); both variables are read, merged.
    admin_token: tuple[str, ...] = ()
    admin_tokens: tuple[str, ...] = ()
    # Bearer JWTs from an identity provider: its JWKS (an http(s) URL or a file), the `iss`
    # and `aud` it must carry and the claim (a dotted path) that holds the roles.
    jwt_jwks: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_roles_claim: str = "roles"
    # An unknown `kid` fetches the JWKS again, at most once in this many seconds.
    jwt_jwks_refetch_seconds: float = 10.0
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container listens on every interface
    port: int = 8000
    workers: int = os.cpu_count() or 1
    log_level: str = "info"
    log_format: str = "json"
    access_log: bool = False
    sequence_key: str = "balancer:sequence"
    sequence_block: int = 1000
    resync_seconds: float = 5.0
    db_timeout_seconds: float = 2.0
    redis_timeout_seconds: float = 0.5
    forwarded_allow_ips: str = "127.0.0.1"
    max_body_bytes: int = 16 * 1024
    max_header_bytes: int = 64 * 1024
    keep_alive_seconds: int = 5
    read_timeout_seconds: float = 10.0
    # Plain `GET /?...` redirects answered by the service's own protocol; off: every request
    # through uvicorn's ASGI handling (the same answers, slower).
    fast_path: bool = True
    cdn_health_key: str = "balancer:cdn-health"
    cdn_prober_lease_seconds: float = 5.0
    rate_limit_key: str = "balancer:ratelimit"
    rate_limit_max_clients: int = 100_000
    rate_limit_idle_seconds: float = 60.0
    # An IPv6 client is the block of this many leading bits holding its address.
    rate_limit_ipv6_prefix: int = 64
    # A MaxMind DB country file (GeoLite2-Country, DB-IP lite); empty: iptocc's bundled data.
    geoip_database: str = ""
    metrics: bool = True  # count redirects for /metrics and /stats
    metrics_token: tuple[str, ...] = ()  # when set, /metrics requires one of these
    # Where the instance's workers publish their figures; `serve` picks a fresh one.
    metrics_dir: str = ""
    stats_key: str = "balancer:stats"
    # PostgreSQL unreachable at start-up: retry this long, then exit (status 3).
    startup_timeout_seconds: float = 60.0
    # On SIGTERM: /ready answers 503 but requests are served this long (the load balancer
    # stops sending), then the listener closes and in-flight requests get the shutdown timeout.
    drain_seconds: float = 5.0
    shutdown_timeout_seconds: int = 10
    # Signs content steering session tokens; every instance of a cluster needs the same one
    # for a viewer to keep its pathway across them. Empty: `serve` makes one per instance.
    steering_secret: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SettingsError("BALANCER_PORT must be from 1 to 65535")
        if self.workers < 1:
            raise SettingsError("BALANCER_WORKERS must be at least 1")
        if not 1 <= self.sequence_block <= 1_000_000:
            raise SettingsError("BALANCER_SEQUENCE_BLOCK must be from 1 to 1000000")
        if self.log_format not in ("json", "console"):
            raise SettingsError("BALANCER_LOG_FORMAT must be json or console")
        if self.resync_seconds <= 0:
            raise SettingsError("BALANCER_RESYNC_SECONDS must be positive")
        if not 0 <= self.max_body_bytes <= 16 * 1024 * 1024:
            raise SettingsError("BALANCER_MAX_BODY_BYTES must be from 0 to 16777216")
        if not 4096 <= self.max_header_bytes <= 1024 * 1024:
            raise SettingsError("BALANCER_MAX_HEADER_BYTES must be from 4096 to 1048576")
        if self.keep_alive_seconds < 1:
            raise SettingsError("BALANCER_KEEP_ALIVE_SECONDS must be at least 1")
        if self.read_timeout_seconds <= 0:
            raise SettingsError("BALANCER_READ_TIMEOUT_SECONDS must be positive")
        if not 0.3 <= self.cdn_prober_lease_seconds <= 600:
            raise SettingsError("BALANCER_CDN_PROBER_LEASE_SECONDS must be from 0.3 to 600")
        self._check_rate_limits()
        self._check_lifecycle()
        self._check_jwt()
        if self.steering_secret and len(self.steering_secret) < 16:
            raise SettingsError("BALANCER_STEERING_SECRET must have at least 16 characters")

    def _check_rate_limits(self) -> None:
        if not 2 <= self.rate_limit_max_clients <= 100_000_000:
            raise SettingsError("BALANCER_RATE_LIMIT_MAX_CLIENTS must be from 2 to 100000000")
        if self.rate_limit_idle_seconds <= 0:
            raise SettingsError("BALANCER_RATE_LIMIT_IDLE_SECONDS must be positive")
        if not 48 <= self.rate_limit_ipv6_prefix <= 128:
            raise SettingsError("BALANCER_RATE_LIMIT_IPV6_PREFIX must be from 48 to 128")

    def _check_jwt(self) -> None:
        if not self.jwt_jwks:
            return
        if not self.jwt_issuer or not self.jwt_audience:
            raise SettingsError(
                "BALANCER_JWT_JWKS needs BALANCER_JWT_ISSUER and BALANCER_JWT_AUDIENCE: a token "
                "is accepted only from its issuer and for this service"
            )
        scheme = urlsplit(self.jwt_jwks).scheme
        if scheme not in ("http", "https") and not os.path.isfile(self.jwt_jwks):
            raise SettingsError(
                f"BALANCER_JWT_JWKS: {self.jwt_jwks} is neither an http(s) URL nor a file"
            )
        if not self.jwt_roles_claim.strip(". "):
            raise SettingsError("BALANCER_JWT_ROLES_CLAIM must name a claim")
        if self.jwt_jwks_refetch_seconds < 0:
            raise SettingsError("BALANCER_JWT_JWKS_REFETCH_SECONDS must be 0 or more")

    @property
    def static_tokens(self) -> tuple[StaticToken, ...]:
        """Every admin token of both variables, with its name and role."""
        return tuple(static_token(entry) for entry in (*self.admin_token, *self.admin_tokens))

    def _check_lifecycle(self) -> None:
        if self.startup_timeout_seconds < 0:
            raise SettingsError("BALANCER_STARTUP_TIMEOUT_SECONDS must be 0 or more")
        if not 0 <= self.drain_seconds <= 600:
            raise SettingsError("BALANCER_DRAIN_SECONDS must be from 0 to 600")
        if not 1 <= self.shutdown_timeout_seconds <= 600:
            raise SettingsError("BALANCER_SHUTDOWN_TIMEOUT_SECONDS must be from 1 to 600")


def _geoip_file(raw: str) -> str:
    path = raw.strip()
    if path and not os.path.isfile(path):
        raise SettingsError(f"{path} is not a readable file")
    return path


_retort = Retort(
    strict_coercion=False,
    recipe=[
        loader(P[Settings].admin_token, _admin_tokens),
        loader(P[Settings].admin_tokens, _admin_tokens),
        loader(P[Settings].database_url, _service_url),
        loader(P[Settings].redis_url, _service_url),
        loader(P[Settings].access_log, _flag),
        loader(P[Settings].metrics, _flag),
        loader(P[Settings].fast_path, _flag),
        loader(P[Settings].metrics_token, _metrics_tokens),
        loader(P[Settings].geoip_database, _geoip_file),
    ],
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `BALANCER_*` variables; raises SettingsError naming what is wrong."""
    environ = os.environ if environ is None else environ
    data = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and not key.startswith(f"{ENV_PREFIX}TEST_")
    }
    known = set(Settings.__dataclass_fields__)
    data = {key: value for key, value in data.items() if key in known}
    for required in ("database_url", "redis_url"):
        if not data.get(required):
            raise SettingsError(f"{ENV_PREFIX}{required.upper()} is required")
    try:
        return _retort.load(data, Settings)
    except LoadError as error:
        raise SettingsError("; ".join(_describe(error))) from error


def _describe(error: BaseException) -> list[str]:
    """adaptix reports a tree of load errors; name the variable behind each leaf."""
    if isinstance(error, AggregateLoadError):
        return [line for inner in error.exceptions for line in _describe(inner)]
    variable = "".join(str(part) for part in get_trail(error)).upper()
    reason = getattr(error, "msg", None) or str(error) or type(error).__name__
    return [f"{ENV_PREFIX}{variable}: {reason}"]
