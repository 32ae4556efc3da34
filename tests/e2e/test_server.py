"""The real server: `python -m app serve` with two worker processes."""

import asyncio
import re
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.redirects import redirect_hosts
from tests.support.servers import WorkerLines, reset_config, running_server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLOSE = {"Connection": "close"}  # a new connection per request spreads them over the workers
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8?token=abc&exp=1"


WORKERS = 2


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str, fast_path: bool) -> Iterator[ServerProcess]:
    """Two workers sharing one PostgreSQL and one Redis, with the edge's fast path on and
    off: the redirect suite holds in both."""
    with running_server(database_url, redis_url, workers=WORKERS, fast_path=fast_path) as process:
        reset_config(process.url)
        yield process


def patch(server: ServerProcess, **values: object) -> dict[str, object]:
    """Change the config and wait until every worker serves it."""
    response = httpx.patch(f"{server.url}/config", json=values, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    deadline = time.monotonic() + 2
    while set(worker_versions(server).values()) != {body["version"]}:
        assert time.monotonic() < deadline, "a worker did not pick the change up"
    return body


def worker_versions(server: ServerProcess, attempts: int = 200) -> dict[int, int]:
    """The config version each of the two workers serves (its pid -> version).

    New connections land on either worker as the kernel hands them out; ask until both
    have answered, and fail if one never does.
    """
    seen: dict[int, int] = {}
    for _ in range(attempts):
        body = httpx.get(f"{server.url}/ready", headers=CLOSE).json()
        seen[body["worker"]] = body["config_version"]
        if len(seen) == WORKERS:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered in {attempts} requests")


def test_both_workers_serve(server: ServerProcess) -> None:
    workers = worker_versions(server)
    assert len(workers) == WORKERS


async def test_split_is_exact_across_two_workers(server: ServerProcess) -> None:
    cdn_host = f"cdn-{uuid.uuid4().hex[:8]}.example.com"
    patch(server, cdn_host=cdn_host, cdn_weight=9, origin_weight=1)
    hosts = await redirect_hosts(server.url, 2000, video=VIDEO)
    origin = hosts.count("s1.origin-cluster")
    assert hosts.count(cdn_host) + origin == 2000
    assert abs(origin - 200) <= 4  # each worker may stand inside a block: one off at most each


async def test_split_3_to_2_is_exact_across_two_workers(server: ServerProcess) -> None:
    patch(server, cdn_weight=3, origin_weight=2)
    hosts = await redirect_hosts(server.url, 1000, video=VIDEO)
    assert abs(hosts.count("s1.origin-cluster") - 400) <= 4


def test_config_change_reaches_every_worker_within_a_second(server: ServerProcess) -> None:
    with WorkerLines([server], WORKERS) as workers:
        cdn_host = f"cdn-{uuid.uuid4().hex[:8]}.example.com"
        response = httpx.patch(f"{server.url}/config", json={"cdn_host": cdn_host}, headers=ADMIN)
        version = response.json()["version"]
        started = time.monotonic()
        current: dict[int, object] = {}
        while time.monotonic() - started < 1.0:
            current = {pid: body["config_version"] for pid, body in workers.ready().items()}
            if set(current.values()) == {version}:
                break
        elapsed = time.monotonic() - started
    assert len(current) == WORKERS
    assert set(current.values()) == {version}, current
    assert elapsed < 1.0
    for _ in range(20):
        response = httpx.get(f"{server.url}/", params={"video": VIDEO}, headers=CLOSE)
        assert urlsplit(response.headers["location"]).netloc in (cdn_host, "s1.origin-cluster")


BAD_VIDEOS = [
    ("", "missing-video"),
    ("ftp://s1.origin-cluster/v.m3u8", "unsupported-scheme"),
    ("javascript:alert(1)", "unsupported-scheme"),
    ("//s1.origin-cluster/v.m3u8", "unsupported-scheme"),
    ("http://evil.example/v.m3u8", "host-not-allowed"),
    ("http://s1.origin-cluster.evil.example/v.m3u8", "host-not-allowed"),
    ("http://s1.origin-cluster@evil.example/v.m3u8", "userinfo-not-allowed"),
    ("http://s1.origin-cluster\\@evil.example/v.m3u8", "invalid-characters"),
    ("http:\\\\s1.origin-cluster/v.m3u8", "invalid-characters"),
    ("http://s1.origin-cluster/v.m3u8\r\nLocation: http://evil.example/", "invalid-characters"),
    ("http://s1.origin-cluster:99999/v.m3u8", "invalid-port"),
    ("http://s1.origin-cluster", "missing-path"),
    ("http://s1.origin-cluster/a/../../etc/passwd", "invalid-path"),
    ("http://s1.origin-cluster/..%3F/s2/x.m3u8", "invalid-path"),
    ("http://s1.origin-cluster/..%253F/s2/x.m3u8", "invalid-path"),
    ("http://s1.origin-cluster/..%23/s2/x.m3u8", "invalid-path"),
    ("http://s1.origin-cluster/%u002e%u002e/s2/x.m3u8", "invalid-path"),
    ("http://s1.origin-cluster/" + "a" * 9000, "video-too-long"),
]


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers
    body = response.json()
    assert (body["status"], body["code"], body["type"]) == (
        400,
        code,
        f"urn:balancer:problem:{code}",
    )
    assert body["detail"]


@pytest.mark.parametrize(("video", "code"), BAD_VIDEOS)
def test_bad_video_gets_400_with_its_code_and_never_a_location(
    server: ServerProcess, video: str, code: str
) -> None:
    assert_refused(httpx.get(f"{server.url}/", params={"video": video}), code)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "missing-video"),
        ("?", "missing-video"),
        ("?foo=bar", "missing-video"),
        ("?video", "missing-video"),
        ("?video=%ZZ", "unsupported-scheme"),
        ("?video=%FF%FE", "invalid-characters"),
    ],
)
def test_missing_or_garbled_video_parameter_gets_400_with_its_code(
    server: ServerProcess, query: str, code: str
) -> None:
    assert_refused(httpx.get(f"{server.url}/{query}"), code)


def test_raw_unencoded_video_url_keeps_its_whole_query(server: ServerProcess) -> None:
    patch(server, cdn_weight=1, origin_weight=0)
    response = httpx.get(f"{server.url}/?video={VIDEO}")
    assert response.status_code == 301
    assert response.headers["location"].endswith("/s1/video/1488/xcg2djHckad.m3u8?token=abc&exp=1")


def test_configured_redirect_status_is_used(server: ServerProcess) -> None:
    patch(server, redirect_status=302)
    response = httpx.get(f"{server.url}/", params={"video": VIDEO})
    assert response.status_code == 302
    patch(server, redirect_status=301)


async def test_server_rules_hold_across_two_workers(server: ServerProcess) -> None:
    patch(
        server,
        cdn_weight=9,
        origin_weight=1,
        server_rules={
            "s7": {"cdn_weight": 0, "origin_weight": 1},
            "s8": {"cdn_weight": 1, "origin_weight": 1},
        },
    )
    outcomes: dict[str, list[bool]] = {"s1": [], "s7": [], "s8": []}

    async def run(client: httpx.AsyncClient, offset: int) -> None:
        for n in range(150):
            server_label = ("s1", "s7", "s8")[(n + offset) % 3]
            video = f"http://{server_label}.origin-cluster/v/{n}.m3u8"
            response = await client.get("/", params={"video": video}, headers=CLOSE)
            outcomes[server_label].append(response.headers["location"] == video)

    async with httpx.AsyncClient(base_url=server.url) as client:
        await asyncio.gather(*(run(client, offset) for offset in range(6)))
    assert {label: len(seen) for label, seen in outcomes.items()} == dict.fromkeys(outcomes, 300)
    assert all(outcomes["s7"])  # kept off the CDN
    assert abs(sum(outcomes["s8"]) - 150) <= 4
    assert abs(sum(outcomes["s1"]) - 30) <= 4
    patch(server, server_rules={})


def test_parallel_admins_on_both_workers_leave_consecutive_versions(
    server: ServerProcess,
) -> None:
    before = httpx.get(f"{server.url}/config").json()["version"]

    def write(weight: int) -> int:
        response = httpx.patch(
            f"{server.url}/config", json={"cdn_weight": weight}, headers={**ADMIN, **CLOSE}
        )
        assert response.status_code == 200, response.text
        version: int = response.json()["version"]
        return version

    with ThreadPoolExecutor(8) as pool:
        versions = sorted(pool.map(write, range(1, 21)))
    assert versions == list(range(before + 1, before + 21))
    time.sleep(0.5)
    assert set(worker_versions(server).values()) == {before + 20}


def exchange(server: ServerProcess, data: bytes, answers: int) -> bytes:
    """Send `data` on one connection; what comes back until the server closes it, or 0.3 s
    after `answers` status lines arrived (time for one answer too many to show)."""
    url = urlsplit(server.url)
    assert url.hostname is not None
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            if received.count(b"HTTP/1.1 ") >= answers:
                sock.settimeout(0.3)
    return received


def statuses(received: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


def request(method: str = "GET", headers: str = "") -> bytes:
    query = urlencode({"video": VIDEO})
    return f"{method} /?{query} HTTP/1.1\r\nHost: balancer\r\n{headers}\r\n".encode()


def test_one_connection_keeps_alive_across_get_and_head_redirects(server: ServerProcess) -> None:
    received = exchange(server, request() + request("HEAD") + request(), 3)
    assert statuses(received) == [301, 301, 301]
    assert received.count(b"location: ") == 3
    assert b"connection: close" not in received


def test_a_head_redirect_has_the_get_answer_without_a_body(server: ServerProcess) -> None:
    received = exchange(server, request("HEAD", "Connection: close\r\n"), 1)
    assert statuses(received) == [301]
    assert received.endswith(b"connection: close\r\n\r\n")


@pytest.mark.parametrize(
    "framing",
    [
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: xchunked\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
        "Content-Length: 1\r\nContent-Length: 2\r\n",
    ],
)
def test_a_request_whose_framing_is_refused_gets_only_a_400(
    server: ServerProcess, framing: str
) -> None:
    received = exchange(server, request(headers=framing), 2)
    assert statuses(received) == [400]


def test_a_valid_request_then_an_invalid_one_get_their_answers_in_order(
    server: ServerProcess,
) -> None:
    data = request() + request(headers="Transfer-Encoding: identity\r\n")
    assert statuses(exchange(server, data, 2)) == [301, 400]
