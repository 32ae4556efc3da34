"""`pytest -m "not e2e"` is the quick run: it must not collect a test that starts servers;
`-m "not slow"` leaves out the long ones, which the default run (`make test`, CI) keeps."""

import functools
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@functools.cache  # each collection imports every test module: a few seconds
def collected(*options: str) -> list[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_no_e2e_test_is_collected_when_e2e_is_deselected() -> None:
    everything = collected()
    quick = collected("-m", "not e2e")

    assert any(test.startswith("tests/e2e/") for test in everything)
    assert quick
    assert not [test for test in quick if test.startswith("tests/e2e/")]


def test_the_default_run_includes_the_slow_tests_and_not_slow_leaves_them_out() -> None:
    """`make test` and CI run plain `pytest`: the soak and the faults under load run there."""
    everything = collected()
    quick = collected("-m", "not slow")
    slow = set(everything) - set(quick)

    assert "tests/e2e/test_soak.py::" in "".join(slow)
    assert any("killed_under_load" in test for test in slow)
    assert any("stops_under_load" in test for test in slow)
    assert set(quick) < set(everything)
