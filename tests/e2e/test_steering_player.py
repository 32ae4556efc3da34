"""Content steering with a real player: headless Chromium plays an HLS stream with hls.js
from two stand-in CDNs (two pathways); the balancer is the steering server.

Two ways CDN A goes away mid-stream:
- it stops (connections refused): the balancer's health checks see it, the next steering
  manifest puts B first, and playback goes on from B. hls.js may get there first on its
  own: a fragment that fails sends its pathway to a penalty box and the player takes the
  next pathway of the last manifest, which the balancer had ordered (B second).
- it fails its health checks while still serving (an edge taken out of service): the
  player sees no error at all, and only the steering manifest moves it to B.

The measured timelines go to the test's temporary directory, and to the file named by
BALANCER_STEERING_TIMELINE when set (loadtest/results/steering-timeline.json holds a run).
"""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.sync_api import Page

from loadtest.support import ServerProcess
from tests.support.app import ADMIN
from tests.support.browser import chromium
from tests.support.player import (
    FileServer,
    make_dash_stream,
    make_hls_stream,
    multivariant,
    page_server,
    player_js,
    steered_mpd,
)
from tests.support.servers import running_server

pytestmark = pytest.mark.e2e

INTERVAL, TIMEOUT, FALL, RISE = 0.5, 0.25, 2, 2
TTL = 1
PLAY_BEFORE_STOP = 4.0  # seconds of playback on A before it stops
PLAY_AFTER_SWITCH = 6.0  # seconds of playback that must follow the switch
LIMIT = 40.0


PLAYERS = {"hls": "hls.js 1.7.4", "dash": "dash.js 5.2.1"}


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory with both streams, as the CDNs publish them."""
    directory = tmp_path_factory.mktemp("media")
    make_hls_stream(directory)
    make_dash_stream(directory)
    return directory


@pytest.fixture
def cdns(stream: Path) -> Iterator[dict[str, FileServer]]:
    servers = {"cdn-a": FileServer(stream).start(), "cdn-b": FileServer(stream).start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def balancer(
    database_url: str, redis_url: str, initial_config: None, cdns: dict[str, FileServer]
) -> Iterator[ServerProcess]:
    """Two workers: a viewer's reloads land on either, and its session token holds on both."""
    with running_server(database_url, redis_url, workers=2, cdn_prober_lease_seconds=1.0) as server:
        response = httpx.patch(
            f"{server.url}/config",
            headers=ADMIN,
            json={
                "cdn_weight": 1,
                "origin_weight": 0,
                # A first for the first viewer: the weighted round robin's first pick.
                "cdn_hosts": [
                    {"host": cdns["cdn-a"].host, "weight": 3, "pathway": "cdn-a"},
                    {"host": cdns["cdn-b"].host, "weight": 1, "pathway": "cdn-b"},
                ],
                "cdn_health": {
                    "enabled": True,
                    "path": "/health",
                    "method": "GET",
                    "interval_seconds": INTERVAL,
                    "timeout_seconds": TIMEOUT,
                    "fall": FALL,
                    "rise": RISE,
                },
                "content_steering": {"enabled": True, "ttl_seconds": TTL},
            },
        )
        assert response.status_code == 200, response.text
        yield server


def _player(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("window.__player")
    return state


def _a_is_down(balancer: ServerProcess, a: FileServer) -> bool:
    hosts = httpx.get(f"{balancer.url}/cdn/health", headers=ADMIN, timeout=2).json()
    return any(host["host"] == a.url and not host["healthy"] for host in hosts)


def _longest_stall(samples: list[list[float]], since: float) -> float:
    """The longest wall-clock span (seconds) in which currentTime did not advance, from the
    first sample after `since` at which it had started."""
    longest, moved_at, last_position = 0.0, None, None
    for at, position in samples:
        if at / 1000 < since or position <= 0:
            continue
        if moved_at is None or last_position is None or position > last_position:
            if moved_at is not None:
                longest = max(longest, (at - moved_at) / 1000)
            moved_at, last_position = at, position
    return longest


def _timeline_file(name: str, timeline: dict[str, Any], tmp_path: Path) -> None:
    text = json.dumps(timeline, indent=2) + "\n"
    (tmp_path / f"steering-{name}.json").write_text(text)
    wanted = os.environ.get("BALANCER_STEERING_TIMELINE")
    if wanted:
        path = Path(wanted)
        runs = json.loads(path.read_text()) if path.is_file() else {}
        runs[name] = timeline
        path.write_text(json.dumps(runs, indent=2) + "\n")
    print(text)


def _tag(balancer: ServerProcess) -> dict[str, Any]:
    """/steering/tag once every worker serves the configuration (each one within a second);
    a new connection each time, so both workers answer."""
    deadline = time.time() + 10
    while True:
        response = httpx.get(
            f"{balancer.url}/steering/tag",
            params={"video": "http://s1.origin-cluster/live/master.m3u8"},
            headers={"Connection": "close"},
        )
        if response.status_code == 200 and time.time() > deadline - 8:
            tag: dict[str, Any] = response.json()
            return tag
        assert time.time() < deadline, response.text
        time.sleep(0.1)


def _site(
    balancer: ServerProcess, cdns: dict[str, FileServer], tmp_path: Path, kind: str
) -> FileServer:
    """The origin's page and its multivariant playlist or MPD, whose steering line or
    element comes from /steering/tag."""
    player_js(kind)  # skips here, fails in CI, without `npm ci`
    tag = _tag(balancer)
    assert tag["pathway"] == "cdn-a"
    urls = {pathway: cdn.url for pathway, cdn in cdns.items()}
    if kind == "hls":
        document = multivariant(tag["hls"], urls)
    else:
        document = steered_mpd(cdns["cdn-a"].directory / "stream.mpd", tag["dash"], urls)
    return page_server(tmp_path, kind, document).start()


@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_playback_goes_on_from_b_when_cdn_a_stops(
    balancer: ServerProcess, cdns: dict[str, FileServer], tmp_path: Path, kind: str
) -> None:
    site = _site(balancer, cdns, tmp_path, kind)
    try:
        timeline = _play(balancer, cdns, site, kind=kind, how="stop")
    finally:
        site.stop()
    _timeline_file(f"{kind}-cdn-a-stopped", timeline, tmp_path)


@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_the_steering_manifest_alone_moves_the_player_off_a_failing_cdn(
    balancer: ServerProcess, cdns: dict[str, FileServer], tmp_path: Path, kind: str
) -> None:
    site = _site(balancer, cdns, tmp_path, kind)
    try:
        timeline = _play(balancer, cdns, site, kind=kind, how="fail-health")
    finally:
        site.stop()
    assert timeline["player_errors_after_a_went_away"] == []
    # Nothing came from A once the player had the manifest (but the fragment in flight).
    assert timeline["segments_from_a_after_b_first_manifest"] <= 1
    assert not timeline["player_moved_before_the_manifest"]
    _timeline_file(f"{kind}-cdn-a-fails-health-checks", timeline, tmp_path)


def _play(
    balancer: ServerProcess,
    cdns: dict[str, FileServer],
    site: FileServer,
    *,
    kind: str,
    how: Literal["stop", "fail-health"],
) -> dict[str, Any]:
    a, b = cdns["cdn-a"], cdns["cdn-b"]
    with chromium() as browser:
        # Not routed through Playwright: a route handler runs only while this thread calls
        # into Playwright, which would delay the player's requests. The page names only
        # loopback URLs.
        context = browser.new_context()
        page = context.new_page()
        opened = time.time()
        page.goto(site.url)
        assert _player(page)["supported"], "this Chromium cannot play H.264/AAC through MSE"

        def position() -> float:
            now: float = page.evaluate("document.getElementById('video').currentTime")
            return now

        deadline = time.time() + LIMIT
        while position() < PLAY_BEFORE_STOP:
            assert time.time() < deadline, _player(page)
            time.sleep(0.1)
        assert a.segments(), "playback did not start on pathway A"
        assert not b.segments(), "B served segments before A went away"

        position_at_stop = position()
        if how == "stop":
            a.stop()
        else:
            a.healthy = False
        stopped = time.time()
        seen = None
        deadline = time.time() + LIMIT
        while True:
            if seen is None and _a_is_down(balancer, a):
                seen = time.time()
            played = position() - position_at_stop
            if seen is not None and b.segments(stopped) and played > PLAY_AFTER_SWITCH:
                break
            assert time.time() < deadline, (seen, b.segments(stopped), _player(page))
            time.sleep(0.05)
        player = _player(page)
        context.close()

    events = player["events"]
    errors = [event for event in events if event["kind"] == "error"]
    assert not [event for event in errors if event["fatal"]], errors
    steered = [
        event
        for event in events
        if event["kind"] == "steering"
        and event["t"] / 1000 > stopped
        and event["priority"] == ["cdn-b", "cdn-a"]
    ]
    assert steered, "no steering manifest put B first after A went away"
    assert steered[0]["url"].startswith(f"{balancer.url}/steering/{kind}?session=")
    b_first = steered[0]["t"] / 1000
    from_b = [
        event for event in events if event["kind"] == "fragment" and event["url"].startswith(b.url)
    ]
    assert from_b, "hls.js fetched no fragment from B"
    b_served = min(at for at, path in b.log if path in b.segments())
    b_segments = b.segments(stopped)
    assert len(b_segments) >= PLAY_AFTER_SWITCH / 1.5
    reported = httpx.get(f"{balancer.url}/metrics").text
    assert 'balancer_steering_requests_total{pathway="cdn-a"}' in reported
    first_steering = min(event["t"] for event in events if event["kind"] == "steering") / 1000
    return {
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stopped)),
        "player": f"{PLAYERS[kind]} in Chromium (headless, Playwright)",
        "cdn_a": "stopped (connections refused)"
        if how == "stop"
        else "fails health checks (503), still serves segments",
        "steering_ttl_seconds": TTL,
        "health_checks": {"interval_seconds": INTERVAL, "timeout_seconds": TIMEOUT, "fall": FALL},
        "segment_seconds": 1,
        "player_buffer_seconds": 3,
        "first_steering_manifest_after_page_open_seconds": round(first_steering - opened, 3),
        "a_went_away_at_seconds": 0.0,
        "balancer_saw_a_down_after_seconds": round((seen or stopped) - stopped, 3),
        "first_manifest_with_b_first_after_seconds": round(b_first - stopped, 3),
        "first_segment_served_by_b_after_seconds": round(b_served - stopped, 3),
        "player_moved_before_the_manifest": b_served < b_first,
        "player_errors_after_a_went_away": [
            {"details": event["details"], "after_seconds": round(event["t"] / 1000 - stopped, 3)}
            for event in errors
            if event["t"] / 1000 > stopped
        ],
        "fatal_player_errors": 0,
        "longest_playback_stall_seconds": round(_longest_stall(player["samples"], opened), 3),
        "segments_from_b_after_a_went_away": len(b_segments),
        "segments_from_a_after_b_first_manifest": len(a.segments(b_first)),
        "played_seconds_after_a_went_away": round(player["samples"][-1][1] - position_at_stop, 3),
    }
