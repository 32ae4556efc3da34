"""`make stack` prints the line that puts its admin token in $TOKEN, as `make run` does."""

import subprocess
from pathlib import Path

import pytest

from loadtest.stack import admin_token


def shell(line: str, environ: dict[str, str]) -> str:
    return subprocess.run(
        ["bash", "-c", f'{line} && printf %s "$TOKEN"'],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_generated_token_line_reads_the_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BALANCER_ADMIN_TOKEN", raising=False)
    token, export = admin_token(tmp_path)
    assert shell(export, {}) == token


def test_operator_token_line_takes_the_first_of_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = "Vq7rYk2LmXw9PbT4nZc6HdJ3sGf8EaR5,Jm4tWq8ZrNx2KbV6pYc9LfD3hSg7TeA5"
    monkeypatch.setenv("BALANCER_ADMIN_TOKEN", tokens)
    _, export = admin_token(tmp_path)
    assert shell(export, {"BALANCER_ADMIN_TOKEN": tokens}) == tokens.partition(",")[0]
