"""A test whose outside tool is missing skips on a developer's machine and fails in CI."""

import pytest

from tests.support.tools import CI_EXEMPT, require, require_tool

MISSING = "no-such-tool-3f9a1c"


def test_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install it"):
        require_tool(MISSING, install="apt-get install it")


def test_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING} is required in CI"):
        require_tool(MISSING, install="apt-get install it")


def test_only_a_listed_exemption_skips_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert set(CI_EXEMPT) == {"docker compose"}
    with pytest.raises(pytest.skip.Exception, match="compose-spec"):
        require(False, "docker compose", "install Docker")


def test_present_tool_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_tool("sh", install="-").endswith("/sh")
