"""uvicorn's server and supervisor, with the balancer's shutdown and start-up rules.

On SIGTERM a worker turns `/ready` to 503 at once and keeps serving for the drain period
(`Lifecycle.drain_seconds`), every response meanwhile saying `Connection: close` so
keep-alive clients reconnect (to other workers, once this one stops listening). Then it
closes its listener, lets connections it already accepted send their request, and hands
over to uvicorn's graceful shutdown: in-flight requests finish within
`timeout_graceful_shutdown`, then the lifespan closes the pools and Redis. SIGINT (Ctrl-C)
skips the drain; a second one stops at once. A worker that gave up starting
(`Lifecycle.FAILED`) exits with uvicorn's start-up failure status, which stops the
supervisor too.

uvicorn 0.54's `Multiprocess` builds each worker's server as `Server(config)` inside
`Process`, and makes its `Process`es by that module's name in four methods; `Supervisor`
repeats those four with `Worker` in its place, and gives a worker started by SIGHUP up to
a minute to serve (uvicorn's 5 s aborted restarts on a loaded host). The copies are pinned
by tests/unit/test_uvicorn_contract.py (digests of uvicorn's originals) and exercised by
tests/e2e/test_supervisor.py (SIGHUP, SIGTTIN).
"""

import asyncio
import signal
import socket
import sys
import time
from types import FrameType

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process, logger

from app.application.lifecycle import Lifecycle
from app.presentation.edge.redirect import RedirectFront

log = structlog.get_logger(__name__)

_CLOSE = (b"connection", b"close")
# After the listener closes: time for connections already accepted to deliver their request
# (uvicorn closes a connection with no request in progress at once, and a request on its
# way would be reset).
_ACCEPTED_GRACE_SECONDS = 0.3
# How long a new worker may take to answer the supervisor (started with the server, after
# one died, or by SIGTTIN), and a worker started by SIGHUP to serve before the restart is
# given up.
_WORKER_START_SECONDS = 60.0


class BalancerServer(uvicorn.Server):
    """A uvicorn server that drains on SIGTERM and exits 3 when its app gave up starting."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._drain_until: float | None = None
        self._drain_logged = False
        self.exit_status = 0

    @property
    def lifecycle(self) -> Lifecycle | None:
        app = self.config.loaded_app if self.config.loaded else None
        while app is not None and not isinstance(app, RedirectFront):
            app = getattr(app, "app", None)  # uvicorn's wrappers (proxy headers, ...)
        return app.lifecycle if app is not None else None

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        super().run(sockets)
        if self.exit_status:
            sys.exit(self.exit_status)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        lifecycle = self.lifecycle
        if sig == signal.SIGTERM and lifecycle is not None and not self.should_exit:
            if self._drain_until is not None:
                return  # already draining: one SIGTERM is enough
            if lifecycle.serving and lifecycle.drain_seconds > 0:
                # /ready reads the phase: 503 from this instant. Logged on the next tick,
                # not in a signal handler.
                lifecycle.phase = Lifecycle.DRAINING
                self._drain_until = time.monotonic() + lifecycle.drain_seconds
                return
            lifecycle.phase = Lifecycle.DRAINING
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        should_exit = await super().on_tick(counter)
        lifecycle = self.lifecycle
        if self._drain_until is not None:
            if not self._drain_logged:
                self._drain_logged = True
                log.info("draining", seconds=lifecycle.drain_seconds if lifecycle else 0)
            # uvicorn rebuilds the default headers every second; each new request takes them.
            if _CLOSE not in self.server_state.default_headers:
                self.server_state.default_headers = [*self.server_state.default_headers, _CLOSE]
            if time.monotonic() >= self._drain_until:
                self.should_exit = True
        if lifecycle is not None and lifecycle.phase == Lifecycle.FAILED:
            self.exit_status = STARTUP_FAILURE
            self.should_exit = True
        return should_exit or self.should_exit

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        log.info("listener_closed", connections=len(self.server_state.connections))
        await asyncio.sleep(_ACCEPTED_GRACE_SECONDS)
        await super().shutdown(sockets)
        log.info("worker_stopped", requests=self.server_state.total_requests)


class Worker(Process):
    """uvicorn's worker process, running a BalancerServer. It answers the supervisor's pings
    only once its process has imported the service (a thread of `target`): until it first
    answers, it is starting, for up to `_WORKER_START_SECONDS`."""

    started_at = 0.0
    answered = False

    def start(self) -> None:
        self.started_at = time.monotonic()
        super().start()

    def starting(self) -> bool:
        """Not answered yet, and started less than `_WORKER_START_SECONDS` ago."""
        return not self.answered and time.monotonic() - self.started_at < _WORKER_START_SECONDS

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = BalancerServer(config=self.config)
        return self._server


class Supervisor(Multiprocess):
    """uvicorn's Multiprocess whose workers are `Worker`s (see the module)."""

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = Worker(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                if isinstance(process, Worker):
                    process.answered = True
                continue
            # (uvicorn kills a worker that has not answered within its 5 s health-check
            # timeout, still importing on a loaded host included: it was killed and started
            # again until the server gave up waiting for it)
            if isinstance(process, Worker) and process.process.is_alive() and process.starting():
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Child process [{process.pid}] failed to start, stopping the parent.")
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            replacement = Worker(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement

    def restart_all(self) -> None:
        for idx, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = Worker(self.config, self.sockets)
            new_process.start()
            # (uvicorn waits its 5 s health-check timeout: too short for a worker to start on
            # a loaded host, where every restart was then aborted)
            if not new_process.wait_until_ready(
                max(self.config.timeout_worker_healthcheck, _WORKER_START_SECONDS),
                self.should_exit,
            ):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    logger.error(
                        f"New child process [{new_process.pid}] was not ready in time; "
                        f"keeping worker [{old_process.pid}] and aborting the restart."
                    )
                return
            old_process.terminate()
            old_process.join()
            self.processes[idx] = new_process

    def handle_ttin(self) -> None:
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        process = Worker(self.config, self.sockets)
        process.start()
        self.processes.append(process)
