"""What the bench, the Locust runner and the stack each need to start a balancer."""

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def backing_services(workdir: Path) -> Iterator[tuple[str, str]]:
    """PostgreSQL and Redis URLs: the environment's, else embedded servers under `workdir`."""
    database_url = os.environ.get("BALANCER_DATABASE_URL", "")
    redis_url = os.environ.get("BALANCER_REDIS_URL", "")
    if database_url and redis_url:
        yield database_url, redis_url
        return
    from app.embedded import EmbeddedServices  # noqa: PLC0415 - optional packages

    print(f"starting embedded PostgreSQL and Redis in {workdir}", flush=True)
    with EmbeddedServices(workdir / "services") as services:
        yield database_url or services.database_url, redis_url or services.redis_url


def forget_sequence(redis_url: str, key: str) -> None:
    """Drop a run's sequences (`key` and its per-server `key:*`) from a Redis that outlives it."""
    client = Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{key}*"))
        if keys:
            client.delete(*keys)
    except RedisError as error:
        print(f"warning: could not remove the sequence key {key}: {error}", file=sys.stderr)
    finally:
        client.close()
