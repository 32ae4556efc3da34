"""`make demo`: the balancer with two stand-in CDN hosts whose banner lines, pasted into a
shell, stop a host and start it again, and the balancer sees it go down and come back."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtest.fake_cdn import pid_file
from loadtest.support import ROOT, free_port, redis_keys
from tests.support.servers import fresh_prefix, until_banner


def shell(line: str) -> None:
    """Run a banner line as a person would paste it, in bash at the repository's root."""
    subprocess.run(
        ["bash", "-c", line],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )


def banner_line(banner: str, label: str) -> str:
    match = re.search(rf"^  {label}\s+(.+?)(?: \[app\])?$", banner, re.MULTILINE)
    assert match, (label, banner)
    return match.group(1)


def wait_for(what: str, check: object, seconds: float = 15) -> None:
    assert callable(check)
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.2)


@pytest.fixture
def demo(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, list[int]]]:
    """`python -m loadtest.demo` (what `make demo` runs) on free ports, until its banner."""
    ports = [free_port(), free_port()]
    port = free_port()
    environ = {
        "BALANCER_DATABASE_URL": database_url,
        "BALANCER_REDIS_URL": redis_url,
        "BALANCER_PORT": str(port),
        "BALANCER_WORKERS": "1",
        **redis_keys(fresh_prefix()),
    }
    command = [sys.executable, "-m", "loadtest.demo", "--data-dir", str(tmp_path)]
    command += ["--cdn-ports", ",".join(map(str, ports))]
    try:
        with until_banner(command, environ) as banner:
            assert "The balancer is ready" in banner, banner
            yield banner, ports
    finally:
        for cdn_port in ports:  # one started again by hand outlives the demo, as its shell's
            marker = pid_file(tmp_path, cdn_port)
            if marker.exists():
                os.kill(int(marker.read_text()), signal.SIGTERM)


def health(base: str, token: str) -> dict[str, bool | None]:
    """Each host's state as the probes saw it; None: not probed yet."""
    hosts = httpx.get(f"{base}/cdn/health", headers={"Authorization": f"Bearer {token}"}).json()
    return {entry["host"]: entry["healthy"] if entry["last_check"] else None for entry in hosts}


def test_a_stand_in_stopped_and_started_from_the_banner_goes_down_and_comes_back(
    demo: tuple[str, list[int]],
) -> None:
    banner, ports = demo
    first, second = (f"http://127.0.0.1:{port}" for port in ports)
    base = re.search(r"API docs\s+(http://\S+)/docs", banner)
    assert base is not None
    balancer = base.group(1)
    assert f"{first} (pid " in banner_line(banner, "CDN stand-ins")
    assert f"{second} (pid " in banner_line(banner, "CDN stand-ins")
    token = subprocess.run(
        ["bash", "-c", f'{banner_line(banner, "in a shell")} && printf %s "$TOKEN"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # A CDN host that answers: the health probe, and the video a redirect sends a player to.
    assert httpx.get(f"{second}/health").status_code == 200
    playlist = httpx.get(f"{second}/s1/video/1488/xcg2djHckad.m3u8")
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    segment = httpx.get(f"{second}/s1/video/1488/{playlist.text.split()[-2]}")
    assert segment.content[:1] == b"\x47"  # an MPEG-TS packet's sync byte

    changed = httpx.patch(
        f"{balancer}/config",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "cdn_hosts": [{"host": first.removeprefix("http://")}, {"host": second[7:]}],
            "cdn_health": {"enabled": True, "interval_seconds": 0.5, "timeout_seconds": 0.3},
        },
    )
    assert changed.status_code == 200, changed.text
    wait_for("both hosts up", lambda: health(balancer, token) == {first: True, second: True})

    shell(banner_line(banner, "stop one"))
    wait_for("the stopped host down", lambda: health(balancer, token)[second] is False)
    assert health(balancer, token)[first] is True

    shell(banner_line(banner, "start it again"))
    wait_for("the host up again", lambda: health(balancer, token)[second] is True)
