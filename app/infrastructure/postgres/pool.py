import json
from pathlib import Path

import asyncpg

SQL_DIR = Path(__file__).with_name("sql")


def read_sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def create_pool(dsn: str, *, timeout: float, max_size: int = 4) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        timeout=timeout,
        command_timeout=timeout,
        init=_init_connection,
    )
