"""Hypothesis profiles for the property tests.

`default` keeps `make test` to a few seconds; `HYPOTHESIS_PROFILE=thorough` runs a hundred
times as many examples when the URL or configuration rules change. Under CI the examples
are derived from the test names, so a run is reproducible; elsewhere each run explores new
ones and a failure is replayed first next time (from .hypothesis/). `generated` leaves out
the explicit examples, to check that generated input alone finds a hole.
"""

import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "default",
    max_examples=150,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=30_000, deadline=None)
settings.register_profile(
    "generated", max_examples=150, deadline=None, phases=[Phase.generate, Phase.shrink]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
