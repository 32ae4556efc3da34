"""Long computations over a configuration (10,000 rules, 10,000 networks, 8,192 hosts) go
step by step: `paced(entries)` and `pace()` mark where one step ends. By default they do
nothing. Code that runs such a computation for a worker whose event loop must keep
answering (app.application.offload) installs a `pause` for the thread it runs it in, which
hands the interpreter back to the loop once a slice of time is used up.
"""

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_local = threading.local()


def pausing(pause: Callable[[], None] | None) -> None:
    """Call `pause()` at every step of what this thread computes from now on (None: stop)."""
    _local.pause = pause


def pace() -> None:
    pause: Callable[[], None] | None = getattr(_local, "pause", None)
    if pause is not None:
        pause()


def paced(entries: Iterable[T]) -> Iterable[T]:
    """`entries`, a step each (`entries` itself when nothing is installed)."""
    pause: Callable[[], None] | None = getattr(_local, "pause", None)
    return entries if pause is None else _paced(entries, pause)


def _paced(entries: Iterable[T], pause: Callable[[], None]) -> Iterator[T]:
    for entry in entries:
        pause()
        yield entry
