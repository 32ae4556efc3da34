"""`make bench`: the balancer's redirect path against a bare ASGI redirect, core for core.

Modules, one job each: `servers` starts the servers under test (the service in each measured
variant and the reference app), `load` drives them (wrk, or loadtest/loadgen.py where wrk
is absent) and measures a round, `procs` reads CPU and memory from /proc, `stats` turns
rounds into medians, ratios and pass/fail checks, `report` prints the table and draws the
chart, and `__main__` is the command line that runs them in interleaved rounds.
"""


class BenchError(RuntimeError):
    """The run cannot produce figures that mean anything."""
