import uuid
from collections.abc import Iterator

import httpx
import pytest

from loadtest.support import ServerProcess, forget_sequence
from tests.conftest import ADMIN_TOKEN

# What the split tests assume, whatever an earlier test left in the session's database
# (CDN health checks left on, say, would send everything to the origin here: no CDN answers).
BASELINE = {
    "cdn_host": "cdn.example.com",
    "cdn_weight": 9,
    "origin_weight": 1,
    "redirect_status": 301,
    "origin_domains": ["origin-cluster"],
    "server_rules": {},
    "down_servers": [],
    "cdn_health": {"enabled": False},
    "origin_fallback": True,
    "comment": "e2e baseline",
}


def reset_config(url: str) -> int:
    """Store the baseline as the active version; its number."""
    response = httpx.patch(
        f"{url}/config", json=BASELINE, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


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
            "BALANCER_CDN_HEALTH_KEY": f"{sequence_key}.cdn-health",
            "BALANCER_STATS_KEY": f"{sequence_key}.stats",
        },
        workers=2,
    )
    process.start()
    reset_config(process.url)
    yield process
    process.stop()
    forget_sequence(redis_url, sequence_key)
