"""Start-up's pure parts: where a dependency is named in the log, and the retry delays."""

import itertools

import pytest

from app.main.startup import _backoff, service_address


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql://user:secret@db.internal:5432/balancer", "db.internal:5432/balancer"),
        ("postgresql://db/balancer", "db/balancer"),
        ("postgresql://u@/balancer?host=/run/postgresql", "/run/postgresql"),
        ("redis://:secret@redis:6379/0", "redis:6379/0"),
        ("unix:///tmp/redis.sock", "/tmp/redis.sock"),
    ],
)
def test_service_address_names_the_server_but_never_the_password(url: str, address: str) -> None:
    assert service_address(url) == address
    assert "secret" not in service_address(url)


def test_backoff_doubles_from_a_quarter_second_to_five_with_jitter_in_the_upper_half() -> None:
    delays = list(itertools.islice(_backoff(), 12))
    ceilings = [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
