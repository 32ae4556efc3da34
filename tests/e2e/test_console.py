"""The admin console in Debian's Chromium against a real server, PostgreSQL and Redis.

The browser may reach the service only (tests.support.browser.GuardedPage); each test also checks
that the page raised no JavaScript error and attempted no request to another host.
"""

import ipaddress
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, FloatRect, Page, Route, expect

from loadtest.fake_cdn import FakeCdn
from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.browser import GuardedPage, chromium, guarded_page
from tests.support.servers import reset_config, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLOSE = {"Connection": "close"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
MARKUP = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def console(server: ServerProcess, browser: Browser) -> Iterator[GuardedPage]:
    with guarded_page(browser, server.url) as guarded:
        yield guarded
        assert guarded.blocked == [], "the page tried to reach another host"
        assert guarded.errors == [], "the page logged errors"
        assert guarded.csp_violations() == []


def active(server: ServerProcess) -> dict[str, object]:
    """The active version as stored (the history reads PostgreSQL, not a worker's memory)."""
    response = httpx.get(f"{server.url}/config/history", params={"limit": 1}, headers=ADMIN)
    item: dict[str, object] = response.json()["items"][0]
    return item


def patch(server: ServerProcess, **values: object) -> dict[str, object]:
    response = httpx.patch(f"{server.url}/config", json=values, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def served_everywhere(server: ServerProcess, version: object) -> None:
    deadline = time.monotonic() + 3
    while True:
        seen = {
            httpx.get(f"{server.url}/ready", headers=CLOSE).json()["config_version"]
            for _ in range(10)
        }
        if seen == {version}:
            return
        assert time.monotonic() < deadline, f"workers serve {seen}, not {version}"


def sign_in(page: Page, server: ServerProcess, token: str = ADMIN_TOKEN) -> None:
    page.goto(f"{server.url}/admin")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def open_panel(page: Page, name: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=name).click()


def test_console_is_served_with_strict_security_headers(server: ServerProcess) -> None:
    redirect = httpx.get(f"{server.url}/admin")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "admin/"
    for path in ("/admin/", "/admin/app.js", "/admin/style.css"):
        response = httpx.get(f"{server.url}{path}")
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        assert "connect-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    page = httpx.get(f"{server.url}/admin/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script"
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "an asset from another host"
    assert "set-cookie" not in httpx.get(f"{server.url}/admin/").headers


def test_sign_in_keeps_the_token_in_session_storage_only(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    sign_in(page, server)
    expect(page.locator("#active-version")).to_have_text(f"v{active(server)['version']}")
    assert page.evaluate("Object.values(sessionStorage)") == [ADMIN_TOKEN]
    assert ADMIN_TOKEN not in page.content()
    assert ADMIN_TOKEN not in page.url
    assert page.context.cookies() == []

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    expect(page.locator("#console")).to_be_hidden()


def test_wrong_token_shows_403_and_stores_nothing(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    sign_in(page, server, token="not-the-admin-token-at-all")
    expect(page.locator("#sign-in-error")).to_contain_text("403 Forbidden")
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_split_change_bumps_the_version_and_redirects_follow_it(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    before = active(server)["version"]
    assert isinstance(before, int)
    sign_in(page, server)
    open_panel(page, "Change")
    page.get_by_label("CDN weight", exact=True).fill("0")
    page.get_by_label("Origin weight", exact=True).fill("1")
    page.locator("#panel-change").get_by_label("Comment").fill("everything to the origin")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.locator("#change-message")).to_have_text(f"Saved as version {before + 1}.")

    stored = active(server)
    assert (stored["version"], stored["cdn_weight"], stored["origin_weight"]) == (before + 1, 0, 1)
    served_everywhere(server, before + 1)
    hosts = {
        urlsplit(
            httpx.get(f"{server.url}/", params={"video": VIDEO}, headers=CLOSE).headers["location"]
        ).netloc
        for _ in range(20)
    }
    assert hosts == {"s1.origin-cluster"}

    open_panel(page, "Now")  # the new version shows without a reload
    expect(page.locator("#active-version")).to_have_text(f"v{before + 1}")
    expect(page.locator("#configured-split")).to_have_text("0 : 1")
    patch(server, cdn_weight=9, origin_weight=1)


def test_invalid_value_shows_the_422_next_to_its_field(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    before = active(server)["version"]
    sign_in(page, server)
    open_panel(page, "Change")
    host = page.get_by_label("CDN host", exact=True)
    host.fill("cdn.example.com/with/a/path")
    page.get_by_role("button", name="Save as a new version").click()
    error = page.locator("#error-cdn_host")
    expect(error).to_be_visible()
    expect(error).not_to_be_empty()
    expect(host).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error-redirect_status")).to_be_hidden()
    assert active(server)["version"] == before


def test_the_change_form_takes_edits_only_once_the_active_version_is_in_it(
    server: ServerProcess, console: GuardedPage
) -> None:
    """An edit made before the console's first read of the active version landed was
    overwritten by it (the 412 test below once found "Nothing to change")."""
    page = console.page
    held: list[Route] = []
    holding = True

    def hold_config_reads(route: Route) -> None:
        if route.request.method == "GET" and holding:
            held.append(route)
        else:
            route.continue_()

    page.route(re.compile(r"/config$"), hold_config_reads)
    sign_in(page, server)
    open_panel(page, "Change")
    status = page.get_by_label("Redirect status")
    expect(status).to_be_disabled()
    assert held, "the console did not read the active version"
    holding = False
    for route in held:
        route.continue_()
    expect(status).to_be_enabled()
    expect(status).to_have_value(str(active(server)["redirect_status"]))


def test_concurrent_change_shows_412_and_loses_nothing(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    sign_in(page, server)
    open_panel(page, "Change")
    status = page.get_by_label("Redirect status")
    status.select_option("302")
    page.locator("#panel-change").get_by_label("Comment").fill("temporary redirects")

    other_host = f"cdn-{uuid.uuid4().hex[:8]}.example.com"
    other = patch(server, cdn_host=other_host, comment="another admin")
    page.get_by_role("button", name="Save as a new version").click()

    message = page.locator("#change-message")
    expect(message).to_contain_text("412")
    expect(message).to_contain_text(f"version {other['version']}")
    expect(page.get_by_label("CDN host", exact=True)).to_have_value(other_host)
    expect(page.locator("#newer-cdn_host")).to_contain_text(other_host)
    expect(status).to_have_value("302")
    expect(page.locator("#change-comment")).to_have_value("temporary redirects")
    assert active(server)["version"] == other["version"]

    page.get_by_role("button", name="Save as a new version").click()
    expect(message).to_have_text(f"Saved as version {other['version'] + 1}.")  # type: ignore[operator]
    stored = active(server)
    assert (stored["cdn_host"], stored["redirect_status"]) == (other_host, 302)
    assert stored["comment"] == "temporary redirects"
    patch(server, cdn_host="cdn.example.com", redirect_status=301)


def test_rollback_from_history_restores_the_old_values(
    server: ServerProcess, console: GuardedPage
) -> None:
    old_host = f"old-{uuid.uuid4().hex[:8]}.example.com"
    old = patch(server, cdn_host=old_host, comment="the old CDN")
    newer = patch(server, cdn_host="cdn.example.com", comment="the new CDN")
    page = console.page
    sign_in(page, server)
    open_panel(page, "History")
    entry = page.locator(f"#version-{newer['version']}")
    expect(entry).to_contain_text(old_host)  # the diff against the version before
    expect(entry).to_contain_text("the new CDN")

    page.get_by_role("button", name=f"Roll back to version {old['version']}").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Roll back to version {old['version']}?")
    dialog.get_by_role("button", name="Confirm").click()

    rolled = newer["version"] + 1  # type: ignore[operator]
    expect(page.locator("#history-message")).to_contain_text(f"version {rolled} has the values")
    expect(page.locator(f"#version-{rolled}")).to_contain_text("active")
    stored = active(server)
    assert (stored["version"], stored["cdn_host"]) == (rolled, old_host)
    assert stored["comment"] == f"rollback to version {old['version']}"
    patch(server, cdn_host="cdn.example.com")


def test_rollback_cancelled_changes_nothing(server: ServerProcess, console: GuardedPage) -> None:
    patch(server, comment="something to roll back to", cdn_weight=8)
    current = patch(server, cdn_weight=9)
    page = console.page
    sign_in(page, server)
    open_panel(page, "History")
    page.get_by_role("button", name=f"Roll back to version {current['version'] - 1}").click()  # type: ignore[operator]
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert active(server)["version"] == current["version"]


def test_markup_in_a_comment_renders_as_text_and_runs_nothing(
    server: ServerProcess, console: GuardedPage
) -> None:
    saved = patch(server, cdn_weight=9, comment=MARKUP)
    page = console.page
    sign_in(page, server)
    expect(page.locator("#now-summary .comment")).to_have_text(MARKUP)
    open_panel(page, "History")
    comment = page.locator(f"#version-{saved['version']} .comment")
    expect(comment).to_have_text(MARKUP)
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_limits_can_be_added_edited_and_deleted(
    server: ServerProcess, console: GuardedPage
) -> None:
    # A block, so its `/` travels in the path; written as the API spells it back (canonical).
    client = str(ipaddress.ip_network(f"2001:db8:{uuid.uuid4().hex[:4]}::/48"))
    path = f"{server.url}/limits/{quote(client, safe='')}"
    page = console.page
    sign_in(page, server)
    open_panel(page, "Limits")
    page.get_by_label("Client id").fill(client)
    page.get_by_label("Capacity (requests)").fill("100")
    page.get_by_label("Refill per second").fill("10")
    page.locator("#panel-limits").get_by_label("Comment").fill(MARKUP)
    page.get_by_role("button", name="Add limit").click()
    row = page.locator("#limits-table tbody tr", has_text=client)
    expect(row).to_contain_text("100")
    expect(row).to_contain_text(MARKUP)
    stored = httpx.get(path, headers=ADMIN).json()
    assert (stored["capacity"], stored["refill_per_second"], stored["comment"]) == (100, 10, MARKUP)

    page.get_by_label("Client id").fill(client)  # the same client again: 409 at its field
    page.get_by_label("Capacity (requests)").fill("5")
    page.get_by_label("Refill per second").fill("1")
    page.get_by_role("button", name="Add limit").click()
    expect(page.locator("#error-limit-client_id")).to_contain_text("already")
    assert httpx.get(path, headers=ADMIN).json()["capacity"] == 100

    page.get_by_role("button", name=f"Edit the limit of {client}").click()
    page.get_by_label("Capacity (requests)").fill("-1")
    page.get_by_role("button", name="Save limit").click()
    expect(page.locator("#error-limit-capacity")).to_contain_text("greater than or equal to 0")
    page.get_by_label("Capacity (requests)").fill("250")
    page.get_by_role("button", name="Save limit").click()
    expect(row).to_contain_text("250")
    assert httpx.get(path, headers=ADMIN).json()["capacity"] == 250

    page.get_by_role("button", name=f"Delete the limit of {client}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    gone = httpx.get(path, headers=ADMIN)
    assert gone.status_code == 404


def test_panels_say_not_available_when_the_server_lacks_an_endpoint(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page

    def missing(route: Route) -> None:
        body = {"type": "about:blank", "title": "Not Found", "status": 404, "code": "not-found"}
        route.fulfill(status=404, content_type="application/problem+json", body=json.dumps(body))

    for path in ("/stats", "/cdn/health", "/limits?*", "/config/route?*"):
        page.route(f"{server.url}{path}", missing)
    sign_in(page, server)
    expect(page.locator("#now-stats")).to_contain_text("not available on this server")
    expect(page.locator("#now-pools")).to_contain_text("CDN health is not available on this server")
    expect(page.locator("#now-summary")).to_contain_text("not available on this server")
    open_panel(page, "Change")
    page.get_by_label("Client address").fill("203.0.113.7")
    page.get_by_label("Video URL").fill(VIDEO)
    page.get_by_role("button", name="Check").click()
    expect(page.locator("#route-result")).to_contain_text("not available on this server")
    open_panel(page, "Limits")
    expect(page.locator("#limits-message")).to_contain_text("not available on this server")
    expect(page.get_by_label("Client id")).to_be_hidden()


def test_now_panel_shows_health_and_live_rates_in_the_documented_shapes(
    server: ServerProcess, console: GuardedPage
) -> None:
    """/stats (as the server answers it while Redis is down) and /cdn/health, answered by
    the browser's router so the figures are known: the panel renders every part."""
    page = console.page
    started = time.time()

    def stats(route: Route) -> None:
        elapsed = time.time() - started
        body = {
            "scope": "instance",
            "since": "2026-01-01T00:00:00Z",
            "total": int(1000 * elapsed),
            "by_target": {"cdn": int(900 * elapsed), "origin": int(100 * elapsed)},
            "by_server": {"s1": int(1000 * elapsed)},
            "by_cdn_host": {"cdn.example.com": int(900 * elapsed)},
            "by_region": {"eu": int(600 * elapsed), "default": int(400 * elapsed)},
            "rejected": {"rate-limited": 1, "host-not-allowed": 2},
            "rate_limited": 1,
            "configured_origin_share": 0.1,
            "achieved_origin_share": 0.1,
            "requests_per_second": 1000.0,
            "note": "this instance only, since it started (Redis: ConnectionError)",
        }
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    def health(route: Route) -> None:
        body = [
            {
                "host": "http://cdn.example.com",  # a base URL; the config says cdn.example.com
                "healthy": False,
                "since": "2026-01-01T00:00:00Z",
                "last_check": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "last_error": "connect timeout <b>after</b> 2 s",
                "consecutive_failures": 4,
                "configured_weight": 1,
                "effective_weight": 0,
                "reported": {"state": "maint", "weight_percent": 50},
                "load_error": "unknown agent word '<i>OK</i>'",
            }
        ]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    def checks_on(route: Route) -> None:
        """The server's configuration with health checks on (the real server's stay off:
        its prober would look for cdn.example.com)."""
        answer = route.fetch()
        body = answer.json()
        body["cdn_health"]["enabled"] = True
        route.fulfill(response=answer, body=json.dumps(body))

    page.route(f"{server.url}/stats", stats)
    page.route(f"{server.url}/cdn/health", health)
    page.route(f"{server.url}/config", checks_on)
    sign_in(page, server)
    pool = page.locator("#pool-table")
    expect(pool).to_contain_text("down")
    expect(pool).to_contain_text("connect timeout <b>after</b> 2 s")
    expect(pool).to_contain_text("maint 50%")
    expect(pool).to_contain_text("ignored: unknown agent word '<i>OK</i>'")
    expect(page.locator("#now-summary")).to_contain_text("10.0 % to the origin")
    now_stats = page.locator("#now-stats")
    expect(now_stats).to_contain_text("this instance only")
    expect(now_stats).to_contain_text("host-not-allowed")
    expect(now_stats.locator("table", has_text="By region")).to_contain_text("eu")
    expect(page.locator(".legend")).to_contain_text(re.compile(r"CDN: \d+\.\d req/s"))
    points = page.locator("#now-chart polyline.series-cdn")
    expect(points).to_have_attribute("points", re.compile(r"\d+(\.\d+)?,\d+(\.\d+)? \d"))


def test_every_control_has_a_label_and_the_keyboard_reaches_the_panels(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    page.goto(f"{server.url}/admin")
    expect(page.get_by_label("Admin token")).to_be_focused()
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(page.locator("#active-version")).to_be_visible()
    page.get_by_role("link", name="Change").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("CDN host", exact=True)).to_be_visible()
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter((el) => el.offsetParent !== null)
            .filter((el) => !el.labels?.length && !el.getAttribute('aria-label'))
            .map((el) => el.outerHTML)"""
    )
    assert unlabelled == []


VIEWPORTS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}
# What the screenshots' traffic asks for: s7 is kept off the CDN by a server rule.
SHOT_VIDEOS = [
    f"http://{server}.origin-cluster/video/{number}/xcg2djHckad.m3u8"
    for server, number in (("s1", 1488), ("s2", 77), ("s1", 1489), ("s3", 512), ("s7", 9))
]
SHOT_RATE = 20  # redirects per second, steady
# Every third viewer is in the region's network, told by the trusted proxy (127.0.0.1).
REGION_VIEWER = {"X-Forwarded-For": "10.20.0.7"}
CHART_POINTS = 6  # one per 2 s poll after the first: the chart's last ~10 s


@pytest.fixture(scope="module")
def cdn_edges() -> Iterator[list[FakeCdn]]:
    """Two CDN edges that answer on loopback, a third whose port refuses (stopped), and a
    region's edge that answers."""
    edges = [FakeCdn().start(), FakeCdn().start(), FakeCdn(), FakeCdn().start()]
    yield edges
    for edge in edges:
        edge.stop()


@contextmanager
def steady_traffic(url: str, rate: float) -> Iterator[list[str]]:
    """GET /?video=... at `rate` a second from a thread, a new connection each (so both
    workers count); yields the failures seen (anything but a redirect)."""
    stop = threading.Event()
    failures: list[str] = []

    def run() -> None:
        with httpx.Client(base_url=url, headers=CLOSE, timeout=5) as client:
            started, sent = time.monotonic(), 0
            while not stop.is_set():
                video = SHOT_VIDEOS[sent % len(SHOT_VIDEOS)]
                headers = REGION_VIEWER if sent % 3 == 0 else {}
                try:
                    status = client.get("/", params={"video": video}, headers=headers).status_code
                    if status not in (301, 302):
                        failures.append(f"{video}: {status}")
                except httpx.HTTPError as error:
                    failures.append(f"{video}: {error!r}")
                sent += 1
                stop.wait(max(0.0, started + sent / rate - time.monotonic()))

    thread = threading.Thread(target=run, name="screenshot-traffic", daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=10)


def wait_until_down(server: ServerProcess, edge: FakeCdn) -> None:
    deadline = time.monotonic() + 10
    while True:
        hosts = httpx.get(f"{server.url}/cdn/health", headers=ADMIN).json()
        if any(entry["host"] == edge.base_url and not entry["healthy"] for entry in hosts):
            return
        assert time.monotonic() < deadline, hosts
        time.sleep(0.2)


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_console_fits_the_screen_and_screenshots_are_taken(
    server: ServerProcess,
    browser: Browser,
    cdn_edges: list[FakeCdn],
    viewport: str,
    tmp_path: Path,
) -> None:
    """Writes console-<viewport>-<panel>.png to BALANCER_SCREENSHOT_DIR (the README's come
    from `BALANCER_SCREENSHOT_DIR=docs/console pytest tests/e2e/test_console.py -k
    screenshots`), of a service at work: a CDN pool with health checks (one edge down), a
    region with a pool of its own (sharing the edge that is down), redirects flowing at a
    steady rate, and the Now panel shot once its chart has ~10 s; on the desktop also its
    pools alone (console-desktop-now-pools.png)."""
    folder = Path(os.environ.get("BALANCER_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    first, second, stopped, region_edge = cdn_edges
    patch(
        server,
        cdn_hosts=[
            {"host": first.host, "weight": 3},
            {"host": second.host, "weight": 1},
            {"host": stopped.host, "weight": 1},
        ],
        cdn_health={"enabled": True, "interval_seconds": 1.0, "timeout_seconds": 0.5},
        cdn_weight=9,
        origin_weight=1,
        redirect_status=302,
        regions=[
            {
                "name": "eu",
                "countries": ["DE", "FR"],
                "networks": ["10.20.0.0/16"],
                "cdn_hosts": [{"host": region_edge.host, "weight": 2}, {"host": stopped.host}],
            }
        ],
        comment="three CDN edges and a region, health checked every second",
    )
    patch(
        server,
        server_rules={"s7": {"cdn_weight": 0, "origin_weight": 1}},
        redirect_status=301,
        comment="keep s7 off the CDN while its cache warms up",
    )
    width, height, mobile = VIEWPORTS[viewport]
    try:
        wait_until_down(server, stopped)
        assert httpx.post(f"{server.url}/stats/reset", headers=ADMIN).status_code == 204
        with (
            steady_traffic(server.url, SHOT_RATE) as failures,
            guarded_page(browser, server.url, width=width, height=height, mobile=mobile) as guarded,
        ):
            page = guarded.page
            sign_in(page, server)
            expect(page.locator("#active-version")).to_be_visible()
            # Now last: its chart fills while the other panels are shot.
            for panel, ready in (
                ("Change", "#input-cdn_host"),
                ("History", "#history-list li"),
                # The message is hidden (but first in the page) unless the list fails to load.
                ("Limits", "#limits-message:not([hidden]), #limits-table tbody tr"),
                ("Now", "#now-state li"),
            ):
                open_panel(page, panel)
                page.locator(ready).first.wait_for()
                if panel == "Now":
                    now_shows_a_service_at_work(page, cdn_edges[:3])
                    expect(page.locator("#pool-region-eu h4")).to_contain_text("1 of 2 up")
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{panel} is wider than the {viewport} screen"
                shot = folder / f"console-{viewport}-{panel.lower()}.png"
                page.screenshot(path=str(shot), full_page=panel != "History")
                assert shot.stat().st_size > 10_000
                if panel == "Now" and viewport == "desktop":
                    pools = folder / "console-desktop-now-pools.png"
                    page.screenshot(path=str(pools), full_page=True, clip=between(page))
                    assert pools.stat().st_size > 10_000
            assert guarded.blocked == []
            assert guarded.errors == []
        assert failures == []
    finally:
        patch(server, regions=[])
        reset_config(server.url)


def between(page: Page) -> FloatRect:
    """From the summary cards to the last pool: the health of every pool at a glance."""
    top = page.locator("#now-summary").bounding_box()
    bottom = page.locator("#now-pools section").last.bounding_box()
    assert top is not None
    assert bottom is not None
    margin = 8
    return {
        "x": top["x"] - margin,
        "y": top["y"] - margin,
        "width": top["width"] + 2 * margin,
        "height": bottom["y"] + bottom["height"] - top["y"] + 2 * margin,
    }


def now_shows_a_service_at_work(page: Page, edges: list[FakeCdn]) -> None:
    """Traffic counted, a split achieved, an edge down with its error, every check in words,
    and a chart of ~10 s: so the screenshots cannot silently go back to an idle service."""
    points = page.locator("#now-chart polyline.series-cdn")
    expect(points).to_have_attribute(
        "points", re.compile(rf"^\S+(\s\S+){{{CHART_POINTS - 1},}}$"), timeout=30_000
    )
    expect(page.locator("#now-chart polyline.series-origin")).to_have_attribute(
        "points", re.compile(r"\d \d")
    )
    expect(page.locator(".legend")).to_contain_text(re.compile(r"CDN: [1-9]\d*\.\d req/s"))
    requests = page.locator("#now-stats .counters div").filter(
        has=page.locator("dt", has_text=re.compile(r"^Requests$"))
    )
    expect(requests.locator("dd")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.locator("#now-summary")).to_contain_text(
        re.compile(r"\d+\.\d+ % to the origin of [1-9]\d* requests")
    )
    pool = page.locator("#pool-table tbody tr")
    expect(pool).to_have_count(3)
    for edge, state in zip(edges, ("up", "up", "down"), strict=True):
        host = page.locator("th", has_text=re.compile(f"^{re.escape(edge.host)}$"))
        # weight, share now, state, since, check, error, ...
        cells = pool.filter(has=host).locator("td")
        expect(cells.nth(2)).to_have_text(re.compile(f"{state}$"))
        expect(cells.nth(5)).to_have_text("—" if state == "up" else re.compile(r"\w"))
    names = page.locator("#now-state li strong").all_inner_texts()
    assert "Rate limits" in names, names
    assert not [name for name in names if "_" in name], names


def test_the_page_has_a_favicon_and_no_request_of_it_fails(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    answers: list[tuple[int, str]] = []
    page.on("response", lambda response: answers.append((response.status, response.url)))
    sign_in(page, server)
    expect(page.locator("#active-version")).to_be_visible()
    page.wait_for_load_state("networkidle")
    icons = [(status, url) for status, url in answers if "favicon" in url]
    assert icons, answers
    assert all(status == 200 for status, _ in icons), icons
    assert [(status, url) for status, url in answers if status >= 400] == []


def test_change_form_hints_are_plain_text_with_code_not_backticks(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    sign_in(page, server)
    open_panel(page, "Change")
    hints = page.locator("#change-fields .hint")
    expect(hints.first).to_be_visible()
    texts = hints.all_inner_texts()
    assert [text for text in texts if "`" in text] == []
    # `cdn_host` in the pool's description is shown as code
    expect(page.locator("#field-cdn_hosts .hint code")).to_have_text(["cdn_host"])


@pytest.fixture
def region_edges() -> Iterator[tuple[FakeCdn, FakeCdn, FakeCdn]]:
    """The global pool's edge, and a region's two: one answering, one stopped."""
    edges = (FakeCdn().start(), FakeCdn().start(), FakeCdn())
    yield edges
    for edge in edges:
        edge.stop()


def test_now_shows_a_region_pool_with_its_down_host_and_an_amber_summary(
    server: ServerProcess, console: GuardedPage, region_edges: tuple[FakeCdn, FakeCdn, FakeCdn]
) -> None:
    default, fra, stopped = region_edges
    patch(
        server,
        cdn_hosts=[{"host": default.host}],
        regions=[
            {
                "name": "eu",
                "countries": ["DE"],
                "networks": ["10.20.0.0/16"],
                "cdn_hosts": [{"host": fra.host, "weight": 3}, {"host": stopped.host}],
            }
        ],
        server_rules={
            "s9": {"cdn_weight": 1, "origin_weight": 0, "cdn_hosts": [{"host": fra.host}]}
        },
        cdn_health={"enabled": True, "interval_seconds": 1.0, "timeout_seconds": 0.5},
    )
    try:
        wait_until_down(server, stopped)
        page = console.page
        sign_in(page, server)
        summary = page.locator("#cdn-summary")
        expect(summary).to_contain_text("1 of 3 CDN hosts down")
        expect(summary).to_have_attribute("data-level", "warn")
        amber = summary.evaluate("card => getComputedStyle(card).backgroundColor")
        assert amber == "rgb(255, 241, 194)", amber  # --warn-bg
        region = page.locator("#pool-region-eu")
        expect(region.locator("h4")).to_contain_text("Region eu")
        expect(region.locator("h4")).to_contain_text("1 of 2 up")
        expect(region).to_contain_text("countries DE; networks 10.20.0.0/16")
        rows = region.locator("tbody tr")
        expect(rows).to_have_count(2)
        down = rows.filter(has=page.locator("th", has_text=stopped.host)).locator("td")
        expect(down.nth(2)).to_have_text(re.compile("down$"))  # state
        expect(down.nth(1)).to_have_text("0.00 %")  # share now
        up = rows.filter(has=page.locator("th", has_text=fra.host)).locator("td")
        expect(up.nth(1)).to_have_text("100.0 %")  # its weight is the whole healthy pool's
        expect(page.locator("#pool-global")).to_contain_text("1 of 1 up")
        expect(page.locator("#pool-server-s9 h4")).to_contain_text("Server s9")
        expect(page.locator("#pool-server-s9")).to_contain_text("split 1 : 0")
        probes = page.locator("#now-state li", has_text="CDN health checks")
        expect(probes).to_have_class("warn")

        fra.stop()  # the region's last healthy host: its viewers fall back, the summary is red
        expect(summary).to_have_attribute("data-level", "bad", timeout=15_000)
        expect(summary).to_contain_text(
            "2 of 3 CDN hosts down; Region eu has no healthy host: its viewers get the pool "
            "they would have without regions (the origin if that one is down too); Server s9 "
            "has no healthy host: "
            "its CDN-bound requests go to the origin."
        )
        expect(region.locator(".alert")).to_contain_text("its viewers get the pool they would")
    finally:
        patch(server, regions=[])
        reset_config(server.url)


def test_now_shows_what_steered_players_report_by_pathway(
    server: ServerProcess, console: GuardedPage
) -> None:
    """Off in plain words; on, each pathway's steering manifests and mean reported throughput
    from real reloads (`_HLS_pathway`, `_HLS_throughput`), through GET /stats."""
    page = console.page
    sign_in(page, server)
    state = page.locator("#steering-state")
    expect(state).to_contain_text("Off: players are not steered")

    tag = uuid.uuid4().hex[:8]  # the server's stats outlive a test: pathways of this one
    first, second = f"cdn-a-{tag}", f"cdn-b-{tag}"
    patch(
        server,
        cdn_hosts=[
            {"host": "cdn-a.example.com", "weight": 1, "pathway": first},
            {"host": "cdn-b.example.com", "weight": 1, "pathway": second},
        ],
        content_steering={"enabled": True, "ttl_seconds": 5},
    )
    try:
        expect(state).to_contain_text("On for Global pool.")
        for throughput in ("2000000", "4000000", "6000000"):
            response = httpx.get(
                f"{server.url}/steering/hls",
                params={"_HLS_pathway": first, "_HLS_throughput": throughput},
            )
            assert response.status_code == 200, response.text
        cells = page.locator(f'#steering-table tr[data-pathway="{first}"] td')
        expect(cells).to_have_text(["cdn-a.example.com", "3", "3", "4.0 Mbit/s"], timeout=10_000)
        quiet = page.locator(f'#steering-table tr[data-pathway="{second}"] td')
        expect(quiet).to_have_text(["cdn-b.example.com", "0", "0", "—"])
        expect(page.locator("#pool-table")).to_contain_text(f"pathway {first}")
    finally:
        patch(server, content_steering={"enabled": False})
        reset_config(server.url)


def test_now_shows_the_default_rate_limit_and_how_many_clients_have_their_own(
    server: ServerProcess, console: GuardedPage
) -> None:
    overrides = ["198.51.100.7", "198.51.100.8", "2001:db8:77::/48"]
    patch(server, rate_limit={"capacity": 100, "refill_per_second": 50})
    for client in overrides:
        created = httpx.post(
            f"{server.url}/limits",
            json={"client_id": client, "capacity": 1, "refill_per_second": 1},
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
    try:
        page = console.page
        sign_in(page, server)
        card = page.locator("#rate-limit-summary")
        expect(card).to_contain_text("100 at once, 50/s per client by default")
        expect(card).to_contain_text("3 per-client overrides")
    finally:
        for client in overrides:
            httpx.delete(f"{server.url}/limits/{quote(client, safe='')}", headers=ADMIN)
        patch(server, rate_limit=None)


def test_region_health_check_and_rate_limit_are_edited_with_forms_and_saved(
    server: ServerProcess, console: GuardedPage
) -> None:
    page = console.page
    sign_in(page, server)
    open_panel(page, "Change")
    regions = page.locator("#field-regions")
    regions.get_by_role("button", name="Add a region").click()
    region = regions.locator("fieldset.item").first
    region.get_by_label("Name").fill("eu")
    region.get_by_label("Countries").fill("DE, FR")
    region.get_by_label("Networks").fill("10.20.0.0/16")
    region.get_by_role("button", name="Add a row").click()
    region.get_by_label("CDN hosts, row 1: host").fill("cdn-fra.example.com")
    region.get_by_label("CDN hosts, row 1: weight").fill("2")
    page.locator("#field-cdn_health").get_by_label("Every (seconds)").fill("3")
    limit = page.locator("#field-rate_limit")
    limit.get_by_label("No default limit (off)").uncheck()
    limit.get_by_label("Capacity (requests at once)").fill("10")
    limit.get_by_label("Refill per second").fill("5")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.locator("#change-message")).to_contain_text("Saved as version")
    try:
        stored = active(server)
        assert stored["regions"] == [
            {
                "name": "eu",
                "countries": ["DE", "FR"],
                "networks": ["10.20.0.0/16"],
                "cdn_hosts": [{"host": "cdn-fra.example.com", "weight": 2}],
            }
        ]
        assert stored["cdn_health"]["interval_seconds"] == 3  # type: ignore[index]
        assert stored["cdn_health"]["enabled"] is False  # type: ignore[index]
        assert stored["rate_limit"] == {"capacity": 10, "refill_per_second": 5}

        # The JSON view of the same value, edited there and taken back into the form
        regions.get_by_role("button", name="Edit as JSON").click()
        as_json = page.get_by_label("Regions as JSON")
        assert json.loads(as_json.input_value()) == stored["regions"]
        as_json.fill(as_json.input_value().replace('"eu"', '"eu-west"'))
        regions.get_by_role("button", name="Back to the form").click()
        expect(region.get_by_label("Name")).to_have_value("eu-west")
        page.get_by_role("button", name="Save as a new version").click()
        expect(page.locator("#change-message")).to_contain_text("Saved as version")
        assert active(server)["regions"][0]["name"] == "eu-west"  # type: ignore[index]

        regions.get_by_role("button", name="Remove region 1").click()
        limit.get_by_label("No default limit (off)").check()
        page.get_by_role("button", name="Save as a new version").click()
        expect(page.locator("#change-message")).to_contain_text("Saved as version")
        after = active(server)
        assert (after["regions"], after["rate_limit"]) == ([], None)
    finally:
        patch(server, regions=[], rate_limit=None, cdn_health={"interval_seconds": 2.0})


READER_SECRET = "Hq3vNb7XkT2mWc9RpL5sYd8Fg4JzE6aQ"


@pytest.fixture(scope="module")
def roles_server(database_url: str, redis_url: str) -> Iterator[ServerProcess]:
    """One worker that also knows a reader's named token."""
    with running_server(
        database_url, redis_url, workers=1, admin_tokens=f"oncall:reader:{READER_SECRET}"
    ) as process:
        reset_config(process.url)
        yield process


def test_a_reader_sees_who_is_signed_in_and_no_change_controls(
    roles_server: ServerProcess, browser: Browser
) -> None:
    server = roles_server
    changed = patch(server, cdn_weight=7, comment="by the admin")
    limit = {"client_id": "198.51.100.0/24", "capacity": 5, "refill_per_second": 1}
    httpx.post(f"{server.url}/limits", json=limit, headers=ADMIN)
    with guarded_page(browser, server.url) as console:
        page = console.page
        sign_in(page, server, token=READER_SECRET)
        expect(page.locator("#who")).to_contain_text("Signed in as oncall")
        expect(page.locator("#who-role")).to_have_text("reader")

        open_panel(page, "Change")
        expect(page.get_by_text("Your role may read only")).to_be_visible()
        expect(page.get_by_role("button", name="Save as a new version")).to_be_hidden()
        expect(page.get_by_role("button", name="Check")).to_be_visible()  # a read

        open_panel(page, "History")
        entry = page.locator(f"#version-{changed['version']}")
        expect(entry).to_contain_text("by the admin")
        expect(entry).to_contain_text("from 127.0.0.1")
        expect(page.locator("#history-list li.version").first).to_be_visible()
        expect(page.get_by_role("button", name=re.compile("Roll back"))).to_have_count(0)

        open_panel(page, "Limits")
        expect(page.locator('tr[data-client="198.51.100.0/24"]')).to_be_visible()
        expect(
            page.get_by_role("button", name=re.compile("^(Edit|Delete) the limit"))
        ).to_have_count(0)
        expect(page.get_by_role("button", name="Add limit")).to_be_hidden()
        assert console.blocked == []
        assert console.errors == []
    httpx.delete(f"{server.url}/limits/198.51.100.0/24", headers=ADMIN)
