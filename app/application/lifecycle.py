import os
from collections.abc import Sequence
from dataclasses import dataclass

from app.application.ports import HealthCheck
from app.application.snapshot import ConfigSnapshot


class Lifecycle:
    """Where this worker process is in its life; `/ready` reads it before anything else.

    `starting`: no configuration yet (PostgreSQL not reached); `waiting_for` says what it
    waits for. `serving`: redirects flow. `draining`: told to stop, still serving until the
    listener closes, so the load balancer takes it out first. `failed`: gave up starting.
    """

    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"
    FAILED = "failed"

    def __init__(self, *, drain_seconds: float = 0.0) -> None:
        self.phase = self.STARTING
        self.waiting_for = ""
        self.drain_seconds = drain_seconds

    @property
    def serving(self) -> bool:
        return self.phase == self.SERVING


@dataclass(frozen=True, slots=True)
class Readiness:
    """`can_serve`: redirects flow. `problems`: dependencies that are down (serving degraded)."""

    can_serve: bool
    worker: int
    config_version: int | None
    checks: dict[str, str]

    @property
    def status(self) -> str:
        if not self.can_serve:
            return "unavailable"
        return "ok" if all(state == "ok" for state in self.checks.values()) else "degraded"


class CheckReadiness:
    """Can this worker redirect, and which of its dependencies are degraded."""

    def __init__(self, snapshot: ConfigSnapshot, checks: Sequence[HealthCheck]) -> None:
        self._snapshot = snapshot
        self._checks = checks

    async def __call__(self) -> Readiness:
        loaded = self._snapshot.loaded
        states = {"config": "ok" if loaded else "not loaded"}
        for check in self._checks:
            problem = await check()
            states[check.name] = "ok" if problem is None else problem
        return Readiness(
            can_serve=loaded,
            worker=os.getpid(),
            config_version=self._snapshot.version.version if loaded else None,
            checks=states,
        )
