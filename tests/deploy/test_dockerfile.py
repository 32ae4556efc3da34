"""The image: small, runtime dependencies only, unprivileged, checked by hadolint.

There is no Docker engine to build it here, so these tests read the Dockerfile as text
(and run its health check command against a stand-in server).
"""

import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "apt-get", "apk add")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        words: list[str] = json.loads(self.arguments)
        return words


def instructions(text: str) -> list[Instruction]:
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip()))
    return found


def stages(text: str) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


@pytest.fixture(scope="module")
def final_stage() -> list[Instruction]:
    return stages(DOCKERFILE.read_text())[-1]


def last(stage: list[Instruction], keyword: str) -> Instruction:
    matching = [instruction for instruction in stage if instruction.keyword == keyword]
    assert matching, f"no {keyword} in the final stage"
    return matching[-1]


@pytest.mark.e2e
def test_hadolint_reports_nothing_when_linting_the_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_image_is_built_in_two_stages_on_python_slim() -> None:
    built = stages(DOCKERFILE.read_text())
    assert len(built) >= 2
    for stage in built:
        assert stage[0].arguments.split()[0] == "python:3.11-slim"
    copies = [i.arguments for i in built[-1] if i.keyword == "COPY"]
    assert any(arguments.startswith("--from=build ") for arguments in copies)


def test_final_stage_runs_as_a_user_other_than_root(final_stage: list[Instruction]) -> None:
    user = last(final_stage, "USER").arguments.split(":")[0]
    assert user not in ("root", "0", "")
    useradd = " ".join(i.arguments for i in final_stage if i.keyword == "RUN")
    assert f"--uid {user}" in useradd


def test_final_stage_installs_no_build_tools(final_stage: list[Instruction]) -> None:
    commands = " ".join(i.arguments for i in final_stage if i.keyword == "RUN")
    for tool in BUILD_TOOLS:
        assert not re.search(rf"(^|\s){re.escape(tool)}(\s|$)", commands), tool
    assert "uv" not in shlex.split(commands)


def test_container_runs_the_server(final_stage: list[Instruction]) -> None:
    command = last(final_stage, "ENTRYPOINT").exec_form() + last(final_stage, "CMD").exec_form()
    assert command == ["python", "-m", "app", "serve"]


def test_uv_is_pinned_to_the_makefiles_version() -> None:
    makefile = (ROOT / "Makefile").read_text()
    wanted = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    assert wanted is not None
    text = DOCKERFILE.read_text()
    assert f"ARG UV_VERSION={wanted.group(1)}\n" in text
    assert '"uv==${UV_VERSION}"' in text


def test_only_the_runtime_dependencies_are_synced() -> None:
    syncs = [
        i.arguments
        for stage in stages(DOCKERFILE.read_text())
        for i in stage
        if i.keyword == "RUN" and "uv sync" in i.arguments
    ]
    assert len(syncs) == 1
    words = shlex.split(syncs[0])
    assert {"--locked", "--no-default-groups", "--no-install-project"} <= set(words)
    assert not {"--all-extras", "--extra", "--group", "--all-groups", "--dev"} & set(words)


def test_image_carries_the_code_and_the_migrations(final_stage: list[Instruction]) -> None:
    sources = {i.arguments.split()[0] for i in final_stage if i.keyword == "COPY"}
    assert {"app", "db/migrations"} <= sources
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore  # nothing from the work tree (.venv, .data, .git) unless listed
    for source in ["pyproject.toml", "uv.lock", "app", "db/migrations"]:
        top = source.split("/")[0]
        assert f"!{top}" in ignore or f"!{top}/" in ignore, source


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_healthcheck(port: int) -> int:
    healthcheck = last(stages(DOCKERFILE.read_text())[-1], "HEALTHCHECK").arguments
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert command[0] == "python"  # slim has no curl or wget
    result = subprocess.run(
        [sys.executable, *command[1:]],
        env={"BALANCER_PORT": str(port)},
        capture_output=True,
        check=False,
        timeout=10,
    )
    return result.returncode


@pytest.mark.e2e
def test_healthcheck_passes_when_health_answers_200(health_server: ThreadingHTTPServer) -> None:
    assert run_healthcheck(health_server.server_address[1]) == 0


@pytest.mark.e2e
def test_healthcheck_fails_when_health_answers_an_error(
    health_server: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_Health, "status", 503)
    assert run_healthcheck(health_server.server_address[1]) != 0


@pytest.mark.e2e
def test_healthcheck_fails_when_nothing_listens() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Health) as closed:
        port = closed.server_address[1]
    assert run_healthcheck(port) != 0
