"""Every shell example of README.md and docs/*.md runs, in document order, against a fresh
`make demo` per document, and answers what the document shows.

The convention (docs/development.md says it for writers): a ```console, ```sh, ```bash or
```shell block holds commands on `$ ` lines (a command goes on over lines ending in `\\` or
inside an open quote) and, under each, what it prints. What is shown is checked, not more:

- an `HTTP/1.1 <status>` line (from `curl -i`): the status; the `name: value` lines under it:
  those headers; after a blank line the body;
- a body that is JSON: every key shown with its value (objects compared on the keys shown,
  lists element by element and of the same length, `"..."` stands for any value);
- any other text: each line shown appears in the output, in that order (`...` inside a line
  stands for anything);
- a command must exit 0; every `curl` shows its output, and with `-i` its status line.

Each document gets a server of its own, started as the README starts one (`make demo`: the
service and two stand-in CDN hosts) on the test's PostgreSQL (a fresh database) and Redis (a
fresh key prefix), on free ports: the documents' 8000, 8081 and 8082 are replaced by them in
commands and output. The shell runs in a folder laid out like a clone (`.data/`, `.venv`),
with TOKEN set by the banner's own `in a shell` line. Variables a command exports reach the
commands after it.
"""

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from loadtest.fake_cdn import pid_file
from loadtest.support import ROOT, forget_keys, free_port, redis_keys, scratch_database
from tests.support.app import Servers
from tests.support.servers import fresh_prefix, until_banner

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCE = re.compile(r"^```(console|sh|bash|shell)\s*$")
DOCUMENTED_PORTS = ("8000", "8081", "8082")

# Blocks that are not run, by document and first command, and why. Nothing else is skipped:
# a shell block of a document that is not listed here runs, and a line listed here that no
# document holds any more fails the test.
NOT_RUN = {
    ("README.md", "make demo"): "the test starts its equivalent itself (python -m loadtest.demo)",
    ("docs/development.md", "make test"): "the whole suite; this test is part of it",
    ("docs/development.md", '.venv/bin/pytest -m "not e2e"'): "a part of the suite",
    ("docs/deployment.md", "cp .env.example .env"): "needs Docker (compose), not on CI",
    ("docs/deployment.md", "make stack"): "runs until Ctrl-C; tests/e2e/test_stack.py runs it",
    ("docs/benchmark.md", "make bench"): "minutes of load; tests/e2e/test_bench_harness.py",
    ("docs/benchmark.md", "make loadtest"): "a web UI that runs until Ctrl-C",
    ("docs/benchmark.md", "make loadtest-headless"): "a minute of load; test_locustfile.py",
}


@dataclass
class Step:
    command: str
    expected: list[str]
    line: int  # in the document, 1-based


@dataclass
class Block:
    document: str
    line: int
    steps: list[Step] = field(default_factory=list)

    @property
    def first_command(self) -> str:
        return self.steps[0].command.splitlines()[0] if self.steps else ""


def complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:  # an open quote: a JSON body over several lines
        return False
    return True


def blocks(document: Path) -> list[Block]:
    """The document's shell blocks, in order, each cut into commands and their output."""
    name = document.relative_to(ROOT).as_posix()
    found: list[Block] = []
    block: Block | None = None
    pending: Step | None = None  # a command still going on over lines
    for number, line in enumerate(document.read_text().splitlines(), 1):
        if block is None:
            if SHELL_FENCE.match(line):
                block = Block(name, number)
            continue
        if line.startswith("```"):
            if pending is not None:
                raise ValueError(f"{name}:{pending.line}: the command never ends")
            found.append(block)
            block = None
        elif pending is not None:
            pending.command += "\n" + line
            if complete(pending.command):
                pending = None
        elif line.startswith("$ "):
            step = Step(line[2:], [], number)
            block.steps.append(step)
            pending = None if complete(step.command) else step
        else:
            if not block.steps:
                raise ValueError(f"{name}:{number}: a shell block starts with a `$ ` line")
            block.steps[-1].expected.append(line)
    return found


def every_block() -> list[Block]:
    return [block for document in DOCUMENTS for block in blocks(document)]


def test_every_shell_block_follows_the_convention() -> None:
    every_block()  # raises ValueError naming the line that does not


def test_every_skipped_block_is_still_in_the_documents() -> None:
    listed = {(block.document, block.first_command) for block in every_block()}
    assert set(NOT_RUN) <= listed, sorted(set(NOT_RUN) - listed)


def test_every_curl_shows_what_it_answers() -> None:
    for block in every_block():
        if (block.document, block.first_command) in NOT_RUN:
            continue
        for step in block.steps:
            where = f"{block.document}:{step.line}"
            if "curl " not in step.command:
                continue
            shown = [line for line in step.expected if line.strip()]
            assert shown, f"{where}: a curl example shows its output"
            if re.search(r"\bcurl\s+(-\w*i\w*\b|.*\s-\w*i\w*\s)", step.command):
                assert shown[0].startswith("HTTP/"), f"{where}: curl -i shows its status line"


# ---------------------------------------------------------------------------- output checks


def wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("...")))


def matches(expected: object, actual: object, path: str = "$") -> list[str]:  # noqa: PLR0911
    """What differs between the shown JSON and the answered one (on the keys shown)."""
    if expected == "...":
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        problems = []
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing")
            else:
                problems += matches(value, actual[key], f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected {len(expected)} items, got {actual!r}"]
        return [
            p
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for p in matches(e, a, f"{path}[{i}]")
        ]
    if isinstance(expected, str) and "..." in expected and isinstance(actual, str):
        return [] if wildcard(expected).fullmatch(actual) else [f"{path}: {actual!r}"]
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: expected {expected!r}, got {actual!r}"]
    return []


def parse_json(text: str) -> object | None:
    try:
        parsed: object = json.loads(text)
    except ValueError:
        return None
    return parsed


def check_text(expected: list[str], actual: str) -> list[str]:
    """Each shown line in the output, in order."""
    lines = actual.splitlines()
    position = 0
    for shown in (line for line in expected if line.strip()):
        pattern = wildcard(shown.strip())
        while position < len(lines) and not pattern.fullmatch(lines[position].strip()):
            position += 1
        if position == len(lines):
            return [f"not in the output (in this order): {shown!r}"]
        position += 1
    return []


def check_body(expected: list[str], actual: str) -> list[str]:
    shown = "\n".join(expected).strip()
    if not shown:
        return []
    wanted = parse_json(shown)
    if wanted is None:
        return check_text(expected, actual)
    answered = parse_json(actual.strip())
    if answered is None:
        return [f"expected JSON, got {actual.strip()[:300]!r}"]
    return matches(wanted, answered)


def check(expected: list[str], actual: str) -> list[str]:
    while expected and not expected[-1].strip():
        expected = expected[:-1]
    if not expected:
        return []
    if not expected[0].startswith("HTTP/"):
        return check_body(expected, actual)
    head, _, body = actual.replace("\r\n", "\n").partition("\n\n")
    head_lines = head.splitlines()
    # curl -i shows a 100 Continue or a proxy's head first: the last head is the answer's
    while body.startswith("HTTP/"):
        head, _, body = body.partition("\n\n")
        head_lines = head.splitlines()
    if not head_lines:
        return ["no answer"]
    problems = []
    status = expected[0].split()[1]
    if head_lines[0].split()[1:2] != [status]:
        problems.append(f"status: expected {expected[0]!r}, got {head_lines[0]!r}")
    answered: dict[str, list[str]] = {}
    for line in head_lines[1:]:
        name, _, value = line.partition(":")
        answered.setdefault(name.strip().lower(), []).append(value.strip())
    shown_headers = []
    rest = expected[1:]
    while rest and rest[0].strip():
        shown_headers.append(rest[0])
        rest = rest[1:]
    for line in shown_headers:
        name, _, value = line.partition(":")
        values = answered.get(name.strip().lower(), [])
        if not any(wildcard(value.strip()).fullmatch(v) for v in values):
            problems.append(f"header {line!r}: got {values!r}")
    return problems + check_body(rest, body)


# -------------------------------------------------------------------------------- the runs


@dataclass
class Demo:
    clone: Path  # the shell's working folder, laid out like a clone of the repository
    ports: dict[str, str]  # documented port -> the one this run uses
    banner: str


@pytest.fixture
def demo(servers: Servers, tmp_path: Path) -> Iterator[Demo]:
    """`make demo` on free ports, a fresh database and fresh Redis keys, until its banner."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in (".venv", "app", "loadtest", "db"):
        (clone / name).symlink_to(ROOT / name)
    ports = {documented: str(free_port()) for documented in DOCUMENTED_PORTS}
    prefix = fresh_prefix("balancer-docs")
    command = [sys.executable, "-m", "loadtest.demo", "--data-dir", str(clone / ".data")]
    command += ["--cdn-ports", f"{ports['8081']},{ports['8082']}"]
    with scratch_database(servers.database_url, "balancer_docs") as database_url:
        environ = {
            "BALANCER_DATABASE_URL": database_url,
            "BALANCER_REDIS_URL": servers.redis_url,
            "BALANCER_PORT": ports["8000"],
            "BALANCER_DRAIN_SECONDS": "0",  # no load balancer to wait for when it stops
            **redis_keys(prefix),
        }
        try:
            with until_banner(command, environ) as banner:
                assert "The balancer is ready" in banner, banner
                yield Demo(clone, ports, banner)
        finally:
            for port in (ports["8081"], ports["8082"]):  # one started again by an example
                marker = pid_file(clone / ".data", int(port))
                if marker.exists():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(marker.read_text()), signal.SIGTERM)
            forget_keys(servers.redis_url, prefix)


def on_ports(text: str, ports: dict[str, str]) -> str:
    return re.sub(r"\b(8000|8081|8082)\b", lambda match: ports[match.group(1)], text)


class Shell:
    """Commands run one after the other by bash in the clone; what one exports, the next
    sees."""

    IGNORED: ClassVar[set[str]] = {"_", "PWD", "OLDPWD", "SHLVL"}

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.state = demo.clone.parent / "shell.env"
        self.runs = 0
        self.environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")},
            "PYTHONPATH": str(ROOT),
        }

    def run(self, command: str, timeout: float = 90) -> tuple[int, str]:
        script = f"{command}\n__status=$?; env -0 > {shlex.quote(str(self.state))}; exit $__status"
        self.runs += 1
        # a file of its own: a command may leave a child behind that goes on writing
        path = self.demo.clone.parent / f"command-{self.runs}.out"
        with path.open("wb") as output:
            finished = subprocess.run(
                ["bash", "-c", script],
                cwd=self.demo.clone,
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if self.state.exists():
            pairs = (item.partition("=") for item in self.state.read_bytes().decode().split("\0"))
            self.environ = {k: v for k, _, v in pairs if k and k not in self.IGNORED}
            self.state.unlink()
        return finished.returncode, path.read_text(errors="replace")


def runs_examples(document: Path) -> bool:
    """The document has a block to run (one that breaks the convention counts: its test
    fails saying where)."""
    try:
        return any((b.document, b.first_command) not in NOT_RUN for b in blocks(document))
    except ValueError:
        return True


DOCUMENTS_WITH_EXAMPLES = [
    document.relative_to(ROOT).as_posix() for document in DOCUMENTS if runs_examples(document)
]


def banner_labels(text: str) -> list[str]:
    """The labels of a banner's lines (`  admin token    ...` is `admin token`), in order."""
    return re.findall(r"^  (\S+(?: \S+)*?)  +\S", text, re.MULTILINE)


def shown_banners(document: Path) -> list[str]:
    """The banners a document shows (```text blocks holding "The balancer is ready")."""
    return [
        block
        for block in re.findall(r"^```text\n(.*?)^```", document.read_text(), re.S | re.M)
        if "The balancer is ready" in block
    ]


@pytest.mark.parametrize("document", DOCUMENTS_WITH_EXAMPLES)
def test_the_examples_answer_what_the_document_shows(demo: Demo, document: str) -> None:
    shell = Shell(demo)
    token_line = re.search(r"^  in a shell\s+(.+?)(?: \[app\])?$", demo.banner, re.MULTILINE)
    assert token_line, demo.banner
    status, output = shell.run(token_line.group(1))
    assert status == 0, (token_line.group(1), output)
    assert shell.environ.get("TOKEN"), token_line.group(1)
    for shown in shown_banners(ROOT / document):  # the banner shown is the one printed
        assert banner_labels(shown) == banner_labels(demo.banner), (shown, demo.banner)
    for block in blocks(ROOT / document):
        if (block.document, block.first_command) in NOT_RUN:
            continue
        for step in block.steps:
            command = on_ports(step.command, demo.ports)
            status, output = shell.run(command)
            where = f"{document}:{step.line}: $ {step.command}"
            assert status == 0, f"{where}\nexit status {status}\n{output}"
            problems = check([on_ports(line, demo.ports) for line in step.expected], output)
            assert not problems, f"{where}\n" + "\n".join(problems) + f"\n--- output:\n{output}"
