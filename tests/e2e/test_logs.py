"""What people and log collectors read: `make run`'s console and banner, `serve`'s JSON."""

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.support import ROOT, free_port, redis_keys
from tests.support.servers import fresh_prefix, running_server

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \[(debug|info|warning|error)")


def read_until(fd: int, marker: str, timeout: float) -> str:
    """What the process wrote to its terminal until `marker` (or the timeout)."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and marker not in ANSI.sub(
        "", output.decode(errors="replace")
    ):
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                output += os.read(fd, 65536)
            except OSError:
                break
    return output.decode(errors="replace")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's private temporary folder: pgserver runs PostgreSQL as another user
    when the tests run as root, and that user must reach the data folder."""
    folder = Path(tempfile.mkdtemp(prefix="balancer-run-"))
    folder.chmod(0o755)
    yield folder / "data"
    shutil.rmtree(folder, ignore_errors=True)


def test_run_shows_people_colored_logs_and_a_banner_and_keeps_service_chatter_in_files(
    data_dir: Path,
) -> None:
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")},
        "BALANCER_HOST": "127.0.0.1",
        "BALANCER_PORT": str(port),
        "BALANCER_WORKERS": "2",
        **redis_keys(fresh_prefix()),
    }
    leader, follower = pty.openpty()  # a terminal, as a person has
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=environ,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    try:
        raw = read_until(leader, "Ctrl-C", timeout=120)
        # Ctrl-C at the terminal: the whole foreground group gets SIGINT.
        os.killpg(process.pid, signal.SIGINT)
        returncode = process.wait(30)
        raw += read_until(leader, "Stopping parent process", timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)

    text = ANSI.sub("", raw).replace("\r\n", "\n")
    assert "\x1b[" in raw, "colored for a terminal"
    token = (data_dir / "admin-token").read_text().strip()
    base = f"http://127.0.0.1:{port}"
    banner = text[text.index("The balancer is ready") :]
    for expected in (
        f"{base}/?video=http://s1.origin-cluster/",
        f"{base}/docs",
        f"{base}/admin",
        f"{base}/metrics",
        token,
        f"kept in {data_dir / 'admin-token'}",
        f"export TOKEN=$(cat {data_dir / 'admin-token'})",
        "Ctrl-C",
    ):
        assert expected in banner, (expected, banner)
    # Every line is a log line of the one pipeline or a line of the banner's event.
    banner_lines = set(banner[: banner.index("\n", banner.index("Ctrl-C"))].split("\n")[1:])
    strays = [
        line
        for line in text.split("\n")
        if line.strip() and not CONSOLE_LINE.match(line) and line not in banner_lines
    ]
    assert strays == [], strays
    # PostgreSQL's, pgserver's and Redis's own output went to files under the data folder.
    for chatter in ("initdb", "pg_ctl", "Running commandline", "Redis version", "Applying:"):
        assert not any(chatter in line and "dbmate" not in line for line in text.split("\n")), (
            chatter
        )
    assert "Running commandline" in (data_dir / "pgserver.log").read_text()
    assert (data_dir / "postgres" / "log").stat().st_size > 0
    assert (data_dir / "redis" / "redis.log").stat().st_size > 0
    assert returncode == 0, text[-2000:]


def test_serve_logs_one_json_object_per_line(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    with running_server(
        database_url,
        redis_url,
        workers=2,
        log_file=tmp_path / "server.log",
        timeout=90,
        log_format="json",
        drain_seconds=0.5,
    ):
        pass  # ready, then stopped: the log holds both

    lines = (tmp_path / "server.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    names = {event["event"] for event in events}
    assert {"Started parent process", "serving", "draining", "worker_stopped"} <= {
        name.split(" [")[0] for name in names
    }, names
    assert {event["logger"] for event in events} >= {"uvicorn.error", "app.main.startup"}
