"""`make run` is for a person at a laptop: it listens on loopback unless told otherwise, and
its banner gives the one line that puts the admin token in $TOKEN."""

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from loadtest.support import ROOT, free_port, redis_keys
from tests.support.servers import fresh_prefix, until_banner

TCP_LISTEN = "0A"


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state != TCP_LISTEN or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = [raw[i : i + 4][::-1] for i in range(0, width // 2, 4)]
            packed = b"".join(words)
            if len(packed) == 4:
                found.add(".".join(str(byte) for byte in packed))
            else:
                found.add(packed.hex())
    return found


def make_run(environ: Mapping[str, str], data_dir: Path, port: int) -> AbstractContextManager[str]:
    """What `make run` runs (`python -m app run`), until its banner has been logged."""
    command = [sys.executable, "-m", "app", "run", "--data-dir", str(data_dir)]
    return until_banner(command, {"BALANCER_PORT": str(port), "BALANCER_WORKERS": "1", **environ})


@pytest.fixture
def services(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "BALANCER_DATABASE_URL": database_url,
        "BALANCER_REDIS_URL": redis_url,
        **redis_keys(fresh_prefix()),
    }


def make_dry_run(target: str) -> list[str]:
    """What `make <target>` would run on a clone whose dependencies are not installed yet
    (-W: as if pyproject.toml had just changed). Under `make test` this make is a sub-make:
    without MAKELEVEL and MAKEFLAGS from the outer one, it prints no "Entering directory"."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKELEVEL", "MAKEFLAGS", "MFLAGS"}}
    return subprocess.run(
        ["make", "--no-print-directory", "-n", "-W", "pyproject.toml", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def test_make_run_runs_the_run_command_without_choosing_an_address() -> None:
    recipe = make_dry_run("run")
    assert recipe[-1].endswith("python -m app run"), recipe
    assert not [line for line in recipe if "BALANCER_HOST" in line], recipe


def test_make_run_installs_the_runtime_and_embedded_servers_only_and_quietly() -> None:
    (sync,) = [line for line in make_dry_run("run") if " sync " in line]
    options = sync.split()
    assert {"--quiet", "--no-default-groups", "--inexact", "--locked"} <= set(options), sync
    assert options[options.index("--extra") + 1] == "embedded", sync
    assert not {"--all-extras", "--group", "--dev"} & set(options), sync
    (full,) = [line for line in make_dry_run("test") if " sync " in line]
    assert "--all-extras" in full.split()  # the dev tools come with make test


def test_run_listens_on_loopback_only_and_prints_the_token_line_when_no_host_is_set(
    services: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    with make_run(services, data_dir, port) as text:
        assert "The balancer is ready" in text, text
        assert listening_addresses(port) == {"127.0.0.1"}
        token = (data_dir / "admin-token").read_text().strip()
        export = f"export TOKEN=$(cat {shlex.quote(str(data_dir / 'admin-token'))})"
        assert export in text, text
        assert f"listening on   127.0.0.1:{port} only" in text, text
        # the line does what it says, in a shell
        shell = subprocess.run(
            ["bash", "-c", f'{export} && printf %s "$TOKEN"'],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shell.stdout == token
        answer = httpx.get(
            f"http://127.0.0.1:{port}/config/history",
            headers={"Authorization": f"Bearer {shell.stdout}"},
        )
        assert answer.status_code == 200


def test_run_listens_on_every_interface_when_balancer_host_says_so(
    services: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    with make_run({**services, "BALANCER_HOST": "0.0.0.0"}, tmp_path / "data", port) as text:
        assert listening_addresses(port) == {"0.0.0.0"}
        assert "every interface" in text, text
