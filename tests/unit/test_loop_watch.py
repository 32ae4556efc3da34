"""The loop watch tells the worker's own work (busy) from waiting for a core (lag only)."""

import asyncio
import time

from app.application.ports import LOOP_BUCKETS
from app.infrastructure.loop_watch import LoopWatch

OVER_50_MS = LOOP_BUCKETS.index(0.05) + 1  # the first bucket above 50 ms


def spin(seconds: float) -> None:
    """Compute for `seconds` of this thread's CPU time (on a loaded host, longer by the wall)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def watched(hold: object, seconds: float) -> LoopWatch:
    """A watch of a loop that, once, holds the loop `seconds` with `hold(seconds)`."""
    watch = LoopWatch(every=0.005)
    await watch.start()
    try:
        await asyncio.sleep(0.02)
        asyncio.get_running_loop().call_soon(hold, seconds)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
    finally:
        await watch.stop()
    return watch


async def test_a_callback_computing_80_ms_is_busy_and_late_over_50_ms() -> None:
    watch = await watched(spin, 0.08)
    assert sum(watch.busy[OVER_50_MS:]) == 1, watch.busy
    assert sum(watch.lag[OVER_50_MS:]) == 1, watch.lag
    assert watch.busy_sum >= 0.08


async def test_a_loop_kept_from_its_core_80_ms_lags_but_is_not_busy() -> None:
    """Sleeping stands for a process the host does not schedule: late, computing nothing."""
    watch = await watched(time.sleep, 0.08)
    assert sum(watch.lag[OVER_50_MS:]) == 1, watch.lag
    assert sum(watch.busy[OVER_50_MS:]) == 0, watch.busy
    assert watch.busy_sum < 0.04


async def test_an_idle_loop_turns_on_time_and_stopped_it_counts_no_more() -> None:
    watch = LoopWatch(every=0.005)
    await watch.start()
    await asyncio.sleep(0.1)
    await watch.stop()
    turns = sum(watch.busy)
    assert 5 <= turns <= 20, turns
    assert sum(watch.busy[LOOP_BUCKETS.index(0.025) + 1 :]) == 0, watch.busy
    await asyncio.sleep(0.02)
    assert sum(watch.busy) == turns
