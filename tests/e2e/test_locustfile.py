"""The Locust load test (`python -m loadtest.headless` against BALANCER_URL): it passes on the
real server and fails when a server breaks the redirect rules or the split drifts."""

import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from loadtest.support import ROOT, ServerProcess
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FAKE_CONFIG = {
    "version": 1,
    "cdn_host": "cdn.example.com",
    "cdn_weight": 9,
    "origin_weight": 1,
    "redirect_status": 301,
    "origin_domains": ["origin-cluster"],
    "server_rules": {},
}


@dataclass
class LocustRun:
    code: int
    output: str
    stats: dict[str, dict[str, str]]
    failures: list[dict[str, str]]


def run_headless(
    url: str,
    results: Path,
    *,
    seconds: int,
    token: str = "",
    on_spawned: Callable[[], None] | None = None,
) -> LocustRun:
    """The headless scenario for a few seconds with 12 users (the 10th one is the admin)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    environ["BALANCER_URL"] = url
    if token:
        environ["BALANCER_ADMIN_TOKEN"] = token
    command = [sys.executable, "-m", "loadtest.headless", "--users", "12", "--spawn-rate", "50"]
    command += ["--run-time", f"{seconds}s", "--results-dir", str(results)]
    with subprocess.Popen(
        command, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        lines, helpers = [], []
        for line in process.stdout:
            lines.append(line)
            if on_spawned is not None and "All users spawned" in line:
                helpers.append(threading.Thread(target=on_spawned))
                helpers[-1].start()
        code = process.wait(30)
    for helper in helpers:
        helper.join()
    (stats_file,) = results.glob("locust-*_stats.csv")
    failures_file = stats_file.with_name(stats_file.name.replace("_stats", "_failures"))
    return LocustRun(
        code,
        "".join(lines),
        {row["Name"]: row for row in read_csv(stats_file)},
        read_csv(failures_file),
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_run_passes_when_the_balancer_keeps_the_rules(
    server: ServerProcess, tmp_path: Path
) -> None:
    before = httpx.get(f"{server.url}/config").json()

    run = run_headless(server.url, tmp_path, seconds=4, token=ADMIN_TOKEN)

    assert run.code == 0, run.output
    assert int(run.stats["/?video=[segment]"]["Request Count"]) > 0
    assert int(run.stats["/?video=[master playlist]"]["Request Count"]) > 0
    assert int(run.stats["/config"]["Request Count"]) >= 1  # the admin took part
    assert re.search(r"totals: \d+ requests, \d+ req/s, 0 failures", run.output), run.output
    assert run.failures == []
    assert "load test passed: origin share" in run.output
    assert httpx.get(f"{server.url}/config").json()["cdn_host"] == before["cdn_host"]


def test_run_fails_when_the_split_drifts_from_the_configured_weights(
    server: ServerProcess, tmp_path: Path
) -> None:
    weights = {
        k: httpx.get(f"{server.url}/config").json()[k] for k in ("cdn_weight", "origin_weight")
    }

    answers: list[int] = []

    def send_everyone_to_the_origin_for_a_while() -> None:
        everyone = {"cdn_weight": 0, "origin_weight": 1}
        answers.append(
            httpx.patch(f"{server.url}/config", json=everyone, headers=ADMIN).status_code
        )
        time.sleep(2)
        answers.append(httpx.patch(f"{server.url}/config", json=weights, headers=ADMIN).status_code)

    run = run_headless(
        server.url, tmp_path, seconds=6, on_spawned=send_everyone_to_the_origin_for_a_while
    )

    assert answers == [200, 200]
    assert run.code == 1, run.output
    assert "load test failed: origin share" in run.output
    assert run.failures == []  # every single redirect was a correct one


class ForeignRedirects(BaseHTTPRequestHandler):
    """Serves a normal `/config` but sends every player to a look-alike of the CDN."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/config":
            body = json.dumps(FAKE_CONFIG).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(301)
        self.send_header("Location", "http://cdn.example.com.evil.example/s1/video/1.m3u8")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def foreign_redirects() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ForeignRedirects)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_run_fails_when_players_are_sent_to_a_foreign_host(
    foreign_redirects: str, tmp_path: Path
) -> None:
    run = run_headless(foreign_redirects, tmp_path, seconds=4)

    assert run.code == 1, run.output
    assert "responses broke the rules" in run.output, run.output
    assert all(row["Failure Count"] == row["Request Count"] for row in run.stats.values())
    messages = {failure["Error"] for failure in run.failures}
    assert any(
        "cdn.example.com.evil.example" in message and "neither the CDN" in message
        for message in messages
    ), messages
    bad_urls = {failure["Error"] for failure in run.failures if "[bad:" in failure["Name"]}
    assert all("bad URL answered 301 with Location" in message for message in bad_urls)
