import secrets
import uuid
from collections.abc import Callable

import pytest

from app.main.settings import (
    MIN_TOKEN_BITS,
    Settings,
    SettingsError,
    load_settings,
    token_bits,
    token_weakness,
)
from loadtest.support import redis_keys, serve_until_exit

REQUIRED = {"BALANCER_DATABASE_URL": "postgresql://db/x", "BALANCER_REDIS_URL": "redis://r"}
STRONG = "Vq7rYk2LmXw9PbT4nZc6HdJ3sGf8EaR5"
ROTATED = "Jm4tWq8ZrNx2KbV6pYc9LfD3hSg7TeA5"


def test_settings_come_from_balancer_variables_with_defaults() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "BALANCER_PORT": "9000",
            "BALANCER_ADMIN_TOKEN": f"{STRONG}, {ROTATED}",
            "BALANCER_ACCESS_LOG": "true",
            "OTHER": "ignored",
        }
    )
    assert settings.port == 9000
    assert settings.admin_token == (STRONG, ROTATED)
    assert settings.access_log is True
    assert settings.sequence_block == 1000
    assert settings.max_body_bytes == 16 * 1024
    assert settings.max_header_bytes == 64 * 1024
    assert settings.read_timeout_seconds == 10.0
    assert settings.metrics is True
    assert settings.metrics_token == ()


def test_metrics_can_be_turned_off_and_put_behind_a_token() -> None:
    settings = load_settings(
        {**REQUIRED, "BALANCER_METRICS": "false", "BALANCER_METRICS_TOKEN": ROTATED}
    )

    assert settings.metrics is False
    assert settings.metrics_token == (ROTATED,)
    assert settings.startup_timeout_seconds == 60.0
    assert settings.drain_seconds == 5.0
    assert settings.shutdown_timeout_seconds == 10
    assert settings.rate_limit_ipv6_prefix == 64


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"BALANCER_REDIS_URL": "redis://r"}, "BALANCER_DATABASE_URL"),
        ({**REQUIRED, "BALANCER_PORT": "eighty"}, "BALANCER_PORT: Bad string format"),
        ({**REQUIRED, "BALANCER_PORT": "70000"}, "BALANCER_PORT"),
        ({**REQUIRED, "BALANCER_WORKERS": "0"}, "BALANCER_WORKERS"),
        ({**REQUIRED, "BALANCER_ADMIN_TOKEN": "short"}, "16 are required"),
        ({**REQUIRED, "BALANCER_LOG_FORMAT": "xml"}, "BALANCER_LOG_FORMAT"),
        ({**REQUIRED, "BALANCER_MAX_BODY_BYTES": "-1"}, "BALANCER_MAX_BODY_BYTES"),
        ({**REQUIRED, "BALANCER_MAX_HEADER_BYTES": "100"}, "BALANCER_MAX_HEADER_BYTES"),
        ({**REQUIRED, "BALANCER_READ_TIMEOUT_SECONDS": "0"}, "BALANCER_READ_TIMEOUT_SECONDS"),
        ({**REQUIRED, "BALANCER_KEEP_ALIVE_SECONDS": "0"}, "BALANCER_KEEP_ALIVE_SECONDS"),
        ({**REQUIRED, "BALANCER_METRICS": "maybe"}, "BALANCER_METRICS: 'maybe' is not a boolean"),
        ({**REQUIRED, "BALANCER_METRICS_TOKEN": "metrics-token"}, "BALANCER_METRICS_TOKEN"),
        ({**REQUIRED, "BALANCER_STARTUP_TIMEOUT_SECONDS": "-1"}, "STARTUP_TIMEOUT"),
        ({**REQUIRED, "BALANCER_DRAIN_SECONDS": "-0.5"}, "BALANCER_DRAIN_SECONDS"),
        ({**REQUIRED, "BALANCER_SHUTDOWN_TIMEOUT_SECONDS": "0"}, "SHUTDOWN_TIMEOUT"),
        ({**REQUIRED, "BALANCER_SHUTDOWN_TIMEOUT_SECONDS": "1.5"}, "SHUTDOWN_TIMEOUT"),
        ({**REQUIRED, "BALANCER_RATE_LIMIT_IPV6_PREFIX": "47"}, "IPV6_PREFIX must be from 48"),
        ({**REQUIRED, "BALANCER_RATE_LIMIT_IPV6_PREFIX": "129"}, "IPV6_PREFIX must be from 48"),
        ({**REQUIRED, "BALANCER_RATE_LIMIT_IPV6_PREFIX": "/64"}, "IPV6_PREFIX"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ)


@pytest.mark.parametrize("prefix", [48, 56, 64, 128])
def test_the_ipv6_client_prefix_is_read_from_48_to_128(prefix: int) -> None:
    environ = {**REQUIRED, "BALANCER_RATE_LIMIT_IPV6_PREFIX": str(prefix)}
    assert load_settings(environ).rate_limit_ipv6_prefix == prefix


PLACEHOLDERS = [
    "change-me-to-a-long-random-admin-token",  # what .env.example used to ship
    "CHANGE_ME_CHANGE_ME_CHANGE_ME",
    "changeme-changeme-2024",
    "test-admin-token-0123456789",
    "second-admin-token-abcdef",
    "your-secret-token-goes-here",
    "placeholder-placeholder-1",
    "my-super-secret-password-1",
    "example-example-example",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "insert-your-admin-token",
    "dummy-token-for-production",
    "qwertyuiopasdfghjkl",
]
PREDICTABLE = [
    "a" * 40,
    "abababababababababababab",
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789012345678901234567",
    "abcdefghijklmnopqrstuvwxyz0123456789",
    "9876543210zyxwvutsrqponmlkjihgfedcba",
    "Summer2024!Summer2024!Summer2024!",
    "0123012301230123012301230123",
    "1111111111111111aaaaaaaaaaaaaaa",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
]
STRONG_TOKENS = [
    STRONG,
    ROTATED,
    "b5c0f9e2a7d1493e8c6f2a0d9e7b1c34",  # a uuid4 without dashes
    "6f1b3e8a-2c9d-4e7f-a0b5-d3c8e1f92a47",  # a uuid4
    "correct-horse-battery-staple-orange-window",  # six words: long enough to count
    "change-me-" + "Qx7vT2pLk9WmR4nZyB3cF8dH6sJ1aE5g",  # a placeholder word does not count...
    "test" + "Qx7vT2pLk9WmR4nZyB3cF8dH6sJ1aE5g",  # ...but does not spoil a random token
]


@pytest.mark.parametrize("token", PLACEHOLDERS)
def test_placeholder_tokens_are_refused_with_the_words_named(token: str) -> None:
    weakness = token_weakness(token)
    assert weakness is not None
    assert weakness.startswith("looks like a placeholder (it contains '"), weakness


@pytest.mark.parametrize("token", PREDICTABLE)
def test_predictable_tokens_are_refused_for_their_entropy(token: str) -> None:
    weakness = token_weakness(token)
    assert weakness is not None
    assert weakness.startswith("is too predictable: about"), weakness
    assert token_bits(token) < MIN_TOKEN_BITS


@pytest.mark.parametrize("token", STRONG_TOKENS)
def test_strong_tokens_are_accepted(token: str) -> None:
    assert token_weakness(token) is None, token_weakness(token)


@pytest.mark.parametrize(
    ("make", "count"),
    [
        (lambda: secrets.token_urlsafe(32), 20_000),
        (lambda: secrets.token_urlsafe(24), 2_000),
        (lambda: secrets.token_hex(32), 2_000),
        (lambda: secrets.token_hex(16), 2_000),
        (lambda: str(uuid.uuid4()), 2_000),
    ],
    ids=["token_urlsafe(32)", "token_urlsafe(24)", "token_hex(32)", "token_hex(16)", "uuid4"],
)
def test_generated_tokens_always_pass(make: Callable[[], str], count: int) -> None:
    weakest = min(token_bits(make()) for _ in range(count))
    # token_urlsafe(32) scores 175-240 bits: far from the limit, not just above it
    assert weakest >= MIN_TOKEN_BITS, weakest


def test_message_names_the_variable_the_token_and_the_remedy_but_never_the_token() -> None:
    token = "change-me-to-a-long-random-admin-token"
    with pytest.raises(SettingsError) as refused:
        load_settings({**REQUIRED, "BALANCER_ADMIN_TOKEN": f"{STRONG},{token}"})
    message = str(refused.value)
    assert message.startswith("BALANCER_ADMIN_TOKEN: token 2 of 2 looks like a placeholder")
    assert "'change-me'" in message
    assert "secrets.token_urlsafe(32)" in message
    assert token not in message


@pytest.mark.parametrize(
    "variable",
    ["BALANCER_DATABASE_URL", "BALANCER_REDIS_URL"],
)
def test_placeholder_password_in_a_service_url_is_refused(variable: str) -> None:
    url = {
        "BALANCER_DATABASE_URL": "postgresql://balancer:{}@db/x",
        "BALANCER_REDIS_URL": "redis://:{}@r:6379/0",
    }[variable]
    with pytest.raises(
        SettingsError, match=f"{variable}: the password in the URL is a placeholder"
    ):
        load_settings({**REQUIRED, variable: url.format("change-me-postgres-password")})
    assert load_settings({**REQUIRED, variable: url.format(secrets.token_urlsafe(24))})


def test_serve_exits_with_code_2_and_a_clear_message_for_a_placeholder_token() -> None:
    environ = {
        **REQUIRED,
        "BALANCER_ADMIN_TOKEN": "change-me-to-a-long-random-admin-token",
        "PATH": "/usr/bin:/bin",
    }
    result = serve_until_exit(environ)
    assert result.returncode == 2
    assert "error: BALANCER_ADMIN_TOKEN: the token looks like a placeholder" in result.stderr


def test_a_run_of_the_tests_or_the_harness_has_every_redis_key_under_its_own_prefix() -> None:
    key_settings = {
        f"BALANCER_{name.upper()}"
        for name in Settings.__dataclass_fields__
        if name.endswith("_key")
    }
    keys = redis_keys("run-1")

    assert set(keys) == key_settings
    assert all(key.startswith("run-1") for key in keys.values())
    assert len(set(keys.values())) == len(keys)
    assert not set(keys.values()) & set(redis_keys("run-2").values())


def test_named_tokens_of_both_variables_are_merged_with_their_roles() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "BALANCER_ADMIN_TOKEN": f"{STRONG},ops.alice:operator:{ROTATED}",
            "BALANCER_ADMIN_TOKENS": f"oncall:reader:{STRONG[::-1]}",
        }
    )
    named = [(token.name, str(token.role), token.secret) for token in settings.static_tokens]
    assert named[1:] == [("ops.alice", "operator", ROTATED), ("oncall", "reader", STRONG[::-1])]
    # A plain entry, today's form, stays an admin's, named after its fingerprint.
    assert named[0][1:] == ("admin", STRONG)
    assert named[0][0].startswith("token-")


def test_a_named_token_with_an_unknown_role_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"'root'.*reader, operator, admin"):
        load_settings({**REQUIRED, "BALANCER_ADMIN_TOKENS": f"bob:root:{STRONG}"})


def test_a_named_token_with_a_weak_secret_is_refused() -> None:
    with pytest.raises(SettingsError, match="BALANCER_ADMIN_TOKENS"):
        load_settings({**REQUIRED, "BALANCER_ADMIN_TOKENS": "bob:reader:change-me-please"})


def test_a_jwks_needs_an_issuer_and_an_audience() -> None:
    with pytest.raises(SettingsError, match="BALANCER_JWT_ISSUER and BALANCER_JWT_AUDIENCE"):
        load_settings({**REQUIRED, "BALANCER_JWT_JWKS": "https://idp.example/jwks"})
    settings = load_settings(
        {
            **REQUIRED,
            "BALANCER_JWT_JWKS": "https://idp.example/jwks",
            "BALANCER_JWT_ISSUER": "https://idp.example/",
            "BALANCER_JWT_AUDIENCE": "balancer",
        }
    )
    assert settings.jwt_roles_claim == "roles"
