"""How long a worker's event loop goes without a turn, on the worker's own clocks.

Every WATCH_SECONDS a timer of the loop records two figures of the interval just ended:

- `lag`: how late the timer ran. A request that arrived at the start of the interval waited
  about that long for the loop: the worker's own work and the host's scheduling together
  (a process that waits for a core on an oversubscribed host lags with an idle loop).
- `busy`: the CPU time the loop's thread used in the interval. Whatever the host did, no
  callback in between ran longer than that: it is what the worker's own work costs its
  viewers, and what "no admin action stalls redirects" holds under 50 ms.

Both are histograms in /metrics (`balancer_event_loop_lag_seconds`,
`balancer_event_loop_busy_seconds`).
"""

import asyncio
import time
from bisect import bisect_left

from app.application.ports import LOOP_BUCKETS

WATCH_SECONDS = 0.025


class LoopWatch:
    def __init__(self, every: float = WATCH_SECONDS) -> None:
        self._every = every
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu = 0.0
        self.lag = [0] * (len(LOOP_BUCKETS) + 1)  # the last one is +Inf
        self.lag_sum = 0.0
        self.busy = [0] * (len(LOOP_BUCKETS) + 1)
        self.busy_sum = 0.0

    async def start(self) -> None:
        self._arm()

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = time.perf_counter() + self._every
        self._cpu = time.thread_time()
        self._handle = loop.call_later(self._every, self._tick)

    def _tick(self) -> None:
        lag = max(0.0, time.perf_counter() - self._due)
        busy = time.thread_time() - self._cpu
        self.lag[bisect_left(LOOP_BUCKETS, lag)] += 1
        self.lag_sum += lag
        self.busy[bisect_left(LOOP_BUCKETS, busy)] += 1
        self.busy_sum += busy
        self._arm()
