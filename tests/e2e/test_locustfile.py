"""The Locust load test (`python -m loadtest.headless` against BALANCER_URL): it passes on the
real server and fails when a server breaks the redirect rules or the split drifts. Its web
UI gives the admin token away to nobody."""

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
from typing import ClassVar

import httpx
import pytest

from loadtest.support import ROOT, ServerProcess, free_port
from tests.support.app import ADMIN_TOKEN

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
    options: tuple[str, ...] = (),
) -> LocustRun:
    """The headless scenario for a few seconds with 12 users (the 10th one is the admin)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "LOADTEST_"))}
    environ["BALANCER_URL"] = url
    if token:
        environ["LOADTEST_ADMIN_TOKEN"] = token
    command = [sys.executable, "-m", "loadtest.headless", "--users", "12", "--spawn-rate", "50"]
    command += ["--run-time", f"{seconds}s", "--results-dir", str(results), *options]
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


@pytest.fixture
def default_rate_limit(server: ServerProcess) -> Iterator[dict[str, float]]:
    """A default limit one client cannot stay within with 12 users (about 200 requests/s
    together) but each user can (about 18/s): on for the test, off afterwards."""
    limit: dict[str, float] = {"capacity": 100, "refill_per_second": 50}
    answer = httpx.patch(f"{server.url}/config", json={"rate_limit": limit}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    yield limit
    off = httpx.patch(f"{server.url}/config", json={"rate_limit": None}, headers=ADMIN)
    assert off.status_code == 200, off.text


def test_run_says_at_start_what_the_default_rate_limit_will_do_to_one_client_address(
    server: ServerProcess, tmp_path: Path, default_rate_limit: dict[str, float]
) -> None:
    run = run_headless(server.url, tmp_path, seconds=4)

    start = run.output[: run.output.index("Ramping to")]
    assert (
        "the balancer's default rate limit is on: 100 requests at once, then 50/s per client"
        in start
    ), run.output
    warning = re.search(r"after the first 100 about (\d+)% are answered 429", start)
    assert warning, start
    assert int(warning.group(1)) >= 50
    assert "--spread-clients" in start
    assert run.code == 1
    assert any("429 rate-limited" in failure["Error"] for failure in run.failures), run.failures
    assert "answered 429 by the balancer's rate limit" in run.output
    assert "responses broke the rules" not in run.output  # a 429 is a correct answer


def test_run_passes_under_a_default_rate_limit_when_users_spread_over_addresses(
    server: ServerProcess, tmp_path: Path, default_rate_limit: dict[str, float]
) -> None:
    run = run_headless(server.url, tmp_path, seconds=4, options=("--spread-clients",))

    assert run.code == 0, run.output
    assert "each user has an address of its own" in run.output
    assert run.failures == []
    assert "load test passed" in run.output


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
    assert run.stats
    assert all(row["Failure Count"] == row["Request Count"] for row in run.stats.values())
    messages = {failure["Error"] for failure in run.failures}
    assert any(
        "cdn.example.com.evil.example" in message and "neither the CDN" in message
        for message in messages
    ), messages
    bad_urls = {failure["Error"] for failure in run.failures if "[bad:" in failure["Name"]}
    assert bad_urls  # the players sent bad URLs too, and each 301 to one was caught
    assert all("bad URL answered 301 with Location" in message for message in bad_urls)


class CapturedAuthorization(ForeignRedirects):
    """A host someone might point a swarm at to collect the admin token."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        CapturedAuthorization.seen.append(self.headers.get("Authorization", ""))
        super().do_GET()

    def do_PATCH(self) -> None:
        CapturedAuthorization.seen.append(self.headers.get("Authorization", ""))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def locust_ui(server: ServerProcess) -> Iterator[tuple[str, list[str]]]:
    """Locust's web UI against the real server, with a load-test admin token given."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    environ["LOADTEST_ADMIN_TOKEN"] = ADMIN_TOKEN
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py")]
    command += ["--host", server.url, "--web-host", "127.0.0.1", "--web-port", str(port)]
    lines: list[str] = []
    with subprocess.Popen(
        command, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
        reader.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "".join(lines)
                time.sleep(0.2)
        yield url, lines
        process.terminate()
        process.wait(15)


def test_web_ui_page_does_not_carry_the_admin_token(locust_ui: tuple[str, list[str]]) -> None:
    url, _ = locust_ui
    page = httpx.get(url).text
    assert "share_tolerance" in page  # the run's own options are rendered into the page...
    assert ADMIN_TOKEN not in page  # ...but not the token
    assert "admin_token" not in page


def test_swarm_started_from_the_ui_never_sends_the_token_elsewhere(
    locust_ui: tuple[str, list[str]],
) -> None:
    url, lines = locust_ui
    CapturedAuthorization.seen = []
    collector = ThreadingHTTPServer(("127.0.0.1", 0), CapturedAuthorization)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        started = httpx.post(
            f"{url}/swarm",
            data={
                "user_count": "12",
                "spawn_rate": "50",
                "host": f"http://127.0.0.1:{collector.server_address[1]}",
                # every option can be posted, shown in the UI or not
                "admin_token": "",
                "admin_cdn_hosts": "evil.example,evil2.example",
            },
        )
        assert started.json()["success"], started.text
        deadline = time.monotonic() + 10
        # until the admin user has decided: stayed out, or sent something with the token
        while not any("admin users stay out" in line for line in lines):
            if any(CapturedAuthorization.seen) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        httpx.get(f"{url}/stop")
    finally:
        collector.shutdown()
        collector.server_close()
    assert CapturedAuthorization.seen  # the players did come...
    assert not [seen for seen in CapturedAuthorization.seen if seen]  # ...with no token
    assert any("the admin token was given for" in line for line in lines), "".join(lines)
