"""Work too large for one turn of the event loop runs in slices, the loop's turn between."""

import asyncio
import gc
import time

import pytest

from app.application.offload import SLICE_SECONDS, off_loop
from app.domain.pacing import pace, paced


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_the_work_answers_and_fails_as_it_would_on_the_loop() -> None:
    assert await off_loop(sum, paced(range(1000))) == sum(range(1000))
    with pytest.raises(ZeroDivisionError):
        await off_loop(lambda: 1 // 0)


async def test_the_work_waits_while_the_event_loop_has_its_turn() -> None:
    """The loop keeps the interpreter 100 ms: the work, paced, runs at most the one slice it
    was in or had just been given (it may start late: the thread waits for the interpreter
    lock), then stops until the loop resumes it. A thread left to run would take turns with
    the loop for the whole 100 ms."""
    steps: list[float] = []

    def work() -> None:
        end = time.perf_counter() + 0.6
        while time.perf_counter() < end:
            steps.append(time.perf_counter())
            pace()

    running = asyncio.ensure_future(off_loop(work))
    await asyncio.sleep(0.1)
    turn = time.perf_counter()
    spin(0.1)  # the loop's turn, taken whole
    during = [at for at in steps if turn < at < turn + 0.1]
    await running
    ran = max(during) - min(during) if during else 0.0
    # One slice is 2 ms; 20 leaves room for the host preempting the thread mid-slice, and a
    # thread left to run takes turns with the loop (5 ms each) for about 95 of the 100 ms.
    assert ran < SLICE_SECONDS * 10, f"the work ran {ran * 1000:.1f} ms of the loop's turn"


async def test_collections_wait_for_the_work_and_what_it_kept_is_frozen() -> None:
    frozen = gc.get_freeze_count()
    states: list[bool] = []

    def work() -> list[list[int]]:
        states.append(gc.isenabled())
        return [[n] for n in paced(range(1000))]

    kept = await off_loop(work)
    assert states == [False]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(kept)


async def test_a_cancelled_caller_leaves_the_work_to_finish_on_its_own() -> None:
    finished = asyncio.Event()
    loop = asyncio.get_running_loop()

    def work() -> None:
        for _ in paced(range(200)):
            spin(0.001)
        loop.call_soon_threadsafe(finished.set)

    running = asyncio.ensure_future(off_loop(work))
    await asyncio.sleep(0.01)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await asyncio.wait_for(finished.wait(), 5)
