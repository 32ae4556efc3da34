"""Outside tools the tests run (nginx, wrk, ...): skipped on a developer's machine that lacks
one, a failure under CI=true, where .ci/run installs every one of them.

A tool that CI cannot have at all is listed in CI_EXEMPT with the reason; nothing else may
skip in CI.
"""

import os
import shutil
import socket
from collections.abc import Callable

import pytest

# name -> why CI cannot have it, and what covers its ground instead.
CI_EXEMPT = {
    "docker compose": (
        "no Docker engine or compose plugin is installable on the CI machine; "
        "tests/deploy/test_compose.py validates compose.yaml against the compose specification "
        "(compose-spec) instead"
    ),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str, remedy: str) -> None:
    """Skip the calling test when `what` is missing here; fail it under CI=true."""
    if available:
        return
    exemption = CI_EXEMPT.get(what)
    if in_ci() and exemption is None:
        pytest.fail(f"{what} is required in CI and missing: {remedy} (see .ci/run)", pytrace=False)
    pytest.skip(f"{what} is missing: {remedy}" + (f"; {exemption}" if exemption else ""))


def require_tool(name: str, *, install: str, locate: Callable[[], str | None] | None = None) -> str:
    """The path of the program `name` (found on PATH unless `locate` says otherwise)."""
    path = locate() if locate is not None else shutil.which(name)
    require(path is not None, name, install)
    assert path is not None
    return path


def can_bind(address: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
