from collections.abc import Iterator

import pytest

from loadtest.support import ServerProcess
from tests.support.servers import reset_config, running_server


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str) -> Iterator[ServerProcess]:
    """Two workers sharing one PostgreSQL and one Redis, as on a two-core host."""
    with running_server(database_url, redis_url, workers=2) as process:
        reset_config(process.url)
        yield process
