import os
from collections.abc import Mapping
from dataclasses import dataclass

from adaptix import P, Retort, loader
from adaptix.load_error import AggregateLoadError, LoadError
from adaptix.struct_trail import get_trail

ENV_PREFIX = "BALANCER_"
MIN_TOKEN_LENGTH = 16


class SettingsError(ValueError):
    """The environment does not describe a runnable service."""


def _tokens(raw: str) -> tuple[str, ...]:
    tokens = tuple(token.strip() for token in raw.split(",") if token.strip())
    if any(len(token) < MIN_TOKEN_LENGTH for token in tokens):
        raise SettingsError(f"every admin token must have at least {MIN_TOKEN_LENGTH} characters")
    return tokens


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
    admin_token: tuple[str, ...] = ()
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


_retort = Retort(
    strict_coercion=False,
    recipe=[
        loader(P[Settings].admin_token, _tokens),
        loader(P[Settings].access_log, _flag),
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
