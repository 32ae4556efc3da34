"""Errors of PostgreSQL and Redis calls in this process, counted where the adapters catch
them (for `balancer_backend_errors_total`)."""


class BackendErrors:
    """Counts by backend (`postgres`, `redis`) and kind (the exception's class name: a
    bounded set, and the one an operator searches the logs for)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def record(self, backend: str, error: BaseException) -> None:
        key = (backend, type(error).__name__)
        self.counts[key] = self.counts.get(key, 0) + 1


# One per process, like a logger: every adapter that talks to a backend records into it,
# and threading it through each constructor would add nothing but parameters.
backend_errors = BackendErrors()
