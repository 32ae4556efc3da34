"""The supervisor's signals on a real two-worker server: SIGTTIN adds a worker, SIGHUP
replaces every worker one by one while the service keeps answering (server.py repeats
these uvicorn methods to run `Worker`s: tests/unit/test_uvicorn_contract.py pins them)."""

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from loadtest.support import ServerProcess
from tests.support.servers import running_server

pytestmark = pytest.mark.e2e

CLOSE = {"Connection": "close"}  # a new connection per request: the kernel picks a worker


@pytest.fixture
def server(database_url: str, redis_url: str) -> Iterator[ServerProcess]:
    with running_server(database_url, redis_url, workers=2) as process:
        yield process


def answering(server: ServerProcess, count: int, timeout: float = 30) -> set[int]:
    """The pids of the workers answering `/ready` with 200: asked until `count` answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        try:
            response = httpx.get(f"{server.url}/ready", headers=CLOSE, timeout=2)
        except httpx.HTTPError:
            continue
        if response.status_code == 200:
            seen.add(response.json()["worker"])
    return seen


def test_sigttin_adds_a_worker_that_serves(server: ServerProcess) -> None:
    before = answering(server, 2)
    assert len(before) == 2
    os.kill(server.process.pid, signal.SIGTTIN)
    after = answering(server, 3, timeout=90)  # a new worker takes seconds to start
    assert len(after) == 3, after
    assert before < after
    response = httpx.get(f"{server.url}/", params={"video": "http://s1.origin-cluster/v.m3u8"})
    assert response.status_code == 301


def test_sighup_replaces_every_worker_while_the_service_answers(server: ServerProcess) -> None:
    before = answering(server, 2)
    assert len(before) == 2
    os.kill(server.process.pid, signal.SIGHUP)
    failures = 0
    replaced: set[int] = set()
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and len(replaced) < 2:
        try:
            response = httpx.get(f"{server.url}/ready", headers=CLOSE, timeout=2)
        except httpx.HTTPError:
            failures += 1
            continue
        if response.status_code == 200 and response.json()["worker"] not in before:
            replaced.add(response.json()["worker"])
    assert len(replaced) == 2, replaced
    time.sleep(6)  # the last replaced worker's drain
    assert not before & answering(server, 2)
    assert failures == 0
    assert server.process.poll() is None
