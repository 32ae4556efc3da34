"""The Redis client every duty of a worker shares."""

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def connect(url: str, *, timeout: float) -> Redis:
    """A client whose commands give up after `timeout` seconds (to connect, and to answer).

    A command that finds its connection closed by Redis is sent once more on a new one.
    After Redis restarts every pooled connection is closed but passes the pool's check
    (reading a closed socket returns nothing, which looks idle), so without this the first
    command on each would fail after Redis is back. Only a closed connection is retried,
    not a timeout: a slow Redis is not asked twice. A command Redis ran just before closing
    the connection runs twice (a lease skips a block, a stats flush or a limit settlement
    counts its batch twice); that takes Redis dying between running a command and
    answering it, where a lost answer already costs as much.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
