"""Work too large for one turn of the event loop: the largest configuration (10,000 rules,
10,000 networks, 8,192 CDN hosts) takes tens of milliseconds to read, check, compile or
write, and a worker's redirects must not wait that long (50 ms at most, on a loaded host).
"""

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import ParamSpec, TypeVar

from app.domain.pacing import pausing

P = ParamSpec("P")
T = TypeVar("T")

# CPU time a computation takes before the event loop has its turn again.
SLICE_SECONDS = 0.002

_paused = 0
_pausing = threading.Lock()


async def off_loop(work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(*args, **kwargs)`, run in slices of SLICE_SECONDS with a turn of the event loop
    (every redirect that arrived meanwhile answered) between two.

    `work` runs in a thread of its own, and at each step it marks (`app.domain.pacing`)
    that thread stops once its slice is used up and waits for the loop to have had its
    turn: the loop never waits for it longer than a slice. A thread left to run would keep
    the interpreter lock but for the loop's turns, and on a loaded host each turn can wait
    for that thread to be scheduled again: redirects stalled 100 to 800 ms where slices
    kept them under 40 (a 1 s computation, load average 10 on 2 cores).

    The garbage collector is paused meanwhile, and what is still alive when `work` returns
    (the version served, the page being sent) is frozen: a collection holds the lock in
    one piece, and a full one walking the 150,000 objects of a large configuration took
    10 ms on an idle host, over 100 on a loaded one. Frozen objects that are dropped later
    are freed by their reference counts as any other (configuration objects hold no
    reference cycle). A cycle some other code dropped while the collector was paused is
    frozen too and never freed: admin actions are rare, such cycles small.
    """
    loop = asyncio.get_running_loop()
    turns = _Turns(loop)
    paused = turns.expect_pause()
    done = loop.run_in_executor(None, turns.run, partial(work, *args, **kwargs))
    try:
        while True:
            await asyncio.wait((done, paused), return_when=asyncio.FIRST_COMPLETED)
            if done.done():
                return done.result()
            await asyncio.sleep(0)  # the loop's turn: ready I/O is handled before we resume
            paused = turns.expect_pause()
            turns.resume()
    finally:
        turns.release()  # cancelled: the thread finishes on its own, without pausing


class _Turns:
    """The hand-over between the event loop and one computation's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._go = threading.Event()
        self._paused: asyncio.Future[None] | None = None
        self._until = 0.0
        self._released = False

    def expect_pause(self) -> "asyncio.Future[None]":
        self._paused = self._loop.create_future()
        return self._paused

    def resume(self) -> None:
        self._go.set()

    def release(self) -> None:
        self._released = True
        self._go.set()

    def run(self, work: Callable[[], T]) -> T:
        global _paused  # noqa: PLW0603 - one count for the process, as the collector is one
        with _pausing:
            _paused += 1
            gc.disable()
        pausing(self._pause)
        self._until = time.perf_counter() + SLICE_SECONDS
        try:
            return work()
        finally:
            pausing(None)
            with _pausing:
                gc.freeze()
                _paused -= 1
                if not _paused:
                    gc.enable()

    def _pause(self) -> None:
        if self._released or time.perf_counter() < self._until:
            return
        paused = self._paused
        self._go.clear()
        if self._released:  # (release() may have come between the test above and clear())
            return
        if paused is not None:
            self._loop.call_soon_threadsafe(_settle, paused)
        self._go.wait()
        # Wall time, not this thread's: a slice the host cut short by running others ends
        # at the next step, so the loop has its turn as soon as it can.
        self._until = time.perf_counter() + SLICE_SECONDS


def _settle(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)
