"""`pytest -m "not e2e"` is the quick run: it must not collect a test that starts servers."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
