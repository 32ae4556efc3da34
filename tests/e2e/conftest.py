import uuid
from collections.abc import Iterator

import pytest

from loadtest.support import ServerProcess, forget_sequence
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str) -> Iterator[ServerProcess]:
    """Two workers sharing one PostgreSQL and one Redis, as on a two-core host."""
    sequence_key = f"balancer-e2e:{uuid.uuid4().hex}"
    process = ServerProcess(
        {
            "BALANCER_DATABASE_URL": database_url,
            "BALANCER_REDIS_URL": redis_url,
            "BALANCER_ADMIN_TOKEN": ADMIN_TOKEN,
            "BALANCER_SEQUENCE_KEY": sequence_key,
        },
        workers=2,
    )
    process.start()
    yield process
    process.stop()
    forget_sequence(redis_url, sequence_key)
