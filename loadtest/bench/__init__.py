"""`make bench`: the balancer's redirect path against two references, core for core: a raw
asyncio Protocol on uvloop + httptools (loadtest/raw_reference.py, what Python itself reaches)
and a bare ASGI app under uvicorn (loadtest/reference_app.py, the ASGI ceiling).

Modules, one job each: `variants` names what is measured and the request mixes, `servers`
starts the servers under test (the service in each variant, both references for each mix its
variants are fed), `load` drives them (wrk, or loadtest/loadgen.py where wrk
is absent) and measures a round, `procs` reads CPU and memory from /proc, `stats` turns
rounds into medians, ratios and pass/fail checks, `report` prints the table and draws the
chart, and `__main__` is the command line that runs them in interleaved rounds.
"""


class BenchError(RuntimeError):
    """The run cannot produce figures that mean anything."""
