"""The service's Redis client (app/infrastructure/redis/client.py) on a real Redis."""

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.infrastructure.redis.client import connect
from tests.support.proxy import CuttableProxy


async def test_a_connection_redis_closed_while_pooled_is_replaced_not_reported(
    redis_url: str,
) -> None:
    """After Redis restarts, every pooled connection is dead but looks idle (the pool's
    check reads nothing from a closed socket): the first command on each must reconnect
    rather than fail, or each background duty and `/stats` reports one more outage."""
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    client = connect(proxy.proxied(redis_url), timeout=1)
    try:
        assert await client.ping()
        await proxy.cut()  # Redis goes away: the pooled connection is closed from its side
        await proxy.restore()
        assert await client.ping()
        assert await client.ping()
    finally:
        await client.aclose()
        await proxy.close()


async def test_redis_still_down_is_reported(redis_url: str) -> None:
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    client = connect(proxy.proxied(redis_url), timeout=1)
    try:
        assert await client.ping()
        await proxy.cut()
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
        await proxy.close()
