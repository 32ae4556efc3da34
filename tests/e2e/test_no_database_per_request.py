"""The redirect path reads no database: PostgreSQL sees no query in the balancer's database
while a real server answers 10,000 redirects.

Every connection to PostgreSQL is a row of `pg_stat_activity`, whose `state_change` moves
with each query it runs (active, then idle), at once: unlike `pg_stat_database`'s
transaction counts, which a backend publishes only when it goes idle, at most once a second
and up to ten seconds late. The server here is alone on a database of its own and resyncs
its configuration only once an hour, so no query of its own is due while it answers; a query
per request, or one that a request sets off, shows as a connection that ran one after the
redirects started, or one that was opened.
"""

import asyncio
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg
import pytest

from loadtest.support import ServerProcess, scratch_database
from tests.support.app import Servers
from tests.support.redirects import VIDEO
from tests.support.servers import WorkerLines, reset_config, running_server

REDIRECTS = 10_000
CONNECTIONS = 4
BATCH = 50  # pipelined on each connection


@pytest.fixture
def alone(servers: Servers, redis_url: str) -> Iterator[tuple[ServerProcess, str]]:
    """A two-worker server on a database no one else uses; the database's name."""
    with (
        scratch_database(servers.database_url, "balancer_quiet") as url,
        running_server(url, redis_url, workers=2, resync_seconds=3600) as process,
    ):
        reset_config(process.url)
        yield process, urlsplit(url).path.lstrip("/")


async def activity(admin_url: str, database: str) -> list[asyncpg.Record]:
    """The database's connections: when each started, and when its state last changed."""
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        return await connection.fetch(
            "SELECT pid, backend_start, state_change, state, query, clock_timestamp() AS now"
            " FROM pg_stat_activity WHERE datname = $1",
            database,
        )
    finally:
        await connection.close()


async def quiet(admin_url: str, database: str, seconds: float = 1.0) -> datetime:
    """When the database has seen no new connection and no query for `seconds`."""
    for _ in range(300):
        rows = await activity(admin_url, database)
        now = rows[0]["now"]
        latest = max(max(row["backend_start"], row["state_change"] or now) for row in rows)
        if (now - latest).total_seconds() >= seconds:
            return now  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{database} never went quiet: {[dict(row) for row in rows]}")


async def pipelined_redirects(port: int, count: int) -> int:
    """`count` redirects on one kept-alive connection, BATCH at a time: how many were 301."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /?video={VIDEO} HTTP/1.1\r\nHost: balancer\r\n\r\n".encode()
    answered = 0
    try:
        for start in range(0, count, BATCH):
            batch = min(BATCH, count - start)
            writer.write(request * batch)
            received = b""
            while received.count(b"HTTP/1.1 ") < batch or not received.endswith(b"\r\n\r\n"):
                chunk = await reader.read(65536)
                assert chunk, "the server closed the connection"
                received += chunk
            answered += received.count(b"HTTP/1.1 301 ")
    finally:
        writer.close()
    return answered


async def test_postgresql_sees_no_transaction_over_10000_redirects(
    alone: tuple[ServerProcess, str], servers: Servers
) -> None:
    process, database = alone
    with WorkerLines([process], 2):  # both workers started (the first answered `/ready`)
        pass
    started = await quiet(servers.database_url, database)

    answered = await asyncio.gather(
        *(pipelined_redirects(process.port, REDIRECTS // CONNECTIONS) for _ in range(CONNECTIONS))
    )

    assert sum(answered) == REDIRECTS
    connections = await activity(servers.database_url, database)
    assert connections  # the pool and the config listener of each worker
    since = [
        dict(row)
        for row in connections
        if row["backend_start"] >= started or (row["state_change"] or started) >= started
    ]
    assert not since, f"PostgreSQL saw these connections busy during the redirects: {since}"
