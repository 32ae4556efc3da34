from collections.abc import Iterator

import pytest

from loadtest.support import ServerProcess
from tests.support.servers import reset_config, running_server


@pytest.fixture(
    scope="module",
    params=[pytest.param(True, id="fast-path"), pytest.param(False, id="asgi")],
)
def fast_path(request: pytest.FixtureRequest) -> bool:
    """BALANCER_FAST_PATH of the redirect suite's servers: every test of it runs against a
    server whose edge answers redirects itself and one that serves them through ASGI."""
    return bool(request.param)


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str) -> Iterator[ServerProcess]:
    """Two workers sharing one PostgreSQL and one Redis, as on a two-core host."""
    with running_server(database_url, redis_url, workers=2) as process:
        reset_config(process.url)
        yield process
