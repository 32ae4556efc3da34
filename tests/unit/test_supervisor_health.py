"""The supervisor's health check gives a new worker time to start: on a loaded host a
worker's process takes more than uvicorn's 5 s health-check timeout to import the service
and answer its first ping, and a supervisor that killed it then never had a worker serving."""

import threading
import time

import uvicorn

from app.presentation.edge import server
from app.presentation.edge.server import Supervisor, Worker


class _Running:
    """A worker's process that runs."""

    exitcode = None

    def is_alive(self) -> bool:
        return True


class SilentWorker(Worker):
    """A worker whose process runs but has not answered a ping yet (still importing)."""

    def __init__(self, config: uvicorn.Config, stop: threading.Event) -> None:
        self.config = config
        self.process = _Running()  # type: ignore[assignment]
        self.killed = False
        self._stop = stop

    def is_alive(self, timeout: float = 5) -> bool:
        return False

    def kill(self) -> None:
        self.killed = True
        self._stop.set()  # no replacement: the test looks at this worker only

    def join(self) -> None:
        pass


def supervisor_of(worker_factory: type[SilentWorker]) -> tuple[Supervisor, SilentWorker]:
    """A Supervisor of one silent worker, without uvicorn's signal handlers."""
    supervisor = Supervisor.__new__(Supervisor)
    supervisor.config = uvicorn.Config(app=None, timeout_worker_healthcheck=0)  # type: ignore[arg-type]
    supervisor.sockets = []
    supervisor.should_exit = threading.Event()
    worker = worker_factory(supervisor.config, supervisor.should_exit)
    worker.started_at = time.monotonic()
    supervisor.processes = [worker]
    return supervisor, worker


def test_a_worker_that_has_not_answered_yet_is_left_to_start() -> None:
    supervisor, worker = supervisor_of(SilentWorker)
    supervisor.keep_subprocess_alive()
    assert not worker.killed


def test_a_worker_silent_past_the_start_allowance_is_killed() -> None:
    supervisor, worker = supervisor_of(SilentWorker)
    worker.started_at -= server._WORKER_START_SECONDS + 1
    supervisor.keep_subprocess_alive()
    assert worker.killed


def test_a_worker_that_answered_once_and_then_goes_silent_is_killed_at_once() -> None:
    supervisor, worker = supervisor_of(SilentWorker)
    worker.answered = True
    supervisor.keep_subprocess_alive()
    assert worker.killed
