"""Request limits on the real server: oversized bodies and heads, slow clients, bodies that
are not JSON. Every refusal is a 4xx problem document and writes nothing.

Raw sockets where the point is what happens on the wire (a body that is never sent, a head
that never ends); httpx elsewhere.
"""

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import httpx
import pytest

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.servers import running_server

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"
MAX_BODY = 16 * 1024
MAX_HEAD = 64 * 1024
READ_TIMEOUT = 2.0


class Endpoint(NamedTuple):
    method: str
    path: str
    body: dict[str, str]  # a valid one
    headers: dict[str, str]


BODY_ENDPOINTS = [
    Endpoint("PATCH", "/config", {"cdn_host": "cdn9.example.com"}, ADMIN),
    Endpoint("POST", "/config/rollback/1", {"comment": "back"}, ADMIN),
    Endpoint("POST", "/balance", {"video": VIDEO}, {}),
]
each_endpoint = pytest.mark.parametrize(
    "endpoint", BODY_ENDPOINTS, ids=[f"{e.method} {e.path}" for e in BODY_ENDPOINTS]
)


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str, fast_path: bool) -> Iterator[ServerProcess]:
    """One worker, so a stalled client would stall everyone if it could hold the worker."""
    with running_server(
        database_url,
        redis_url,
        workers=1,
        fast_path=fast_path,
        max_body_bytes=MAX_BODY,
        max_header_bytes=MAX_HEAD,
        read_timeout_seconds=READ_TIMEOUT,
        keep_alive_seconds=1,
    ) as process:
        yield process


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, object]:
        assert self.headers["content-type"] == "application/problem+json"
        document: dict[str, object] = json.loads(self.body)
        assert document["status"] == self.status
        return document


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_answer(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed without an answer after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return Answer(int(status_line.split()[1]), headers, body)


def closed_after(sock: socket.socket, started: float, limit: float) -> float:
    """Seconds from `started` until the server closed `sock`, waiting at most `limit`."""
    sock.settimeout(limit)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        pytest.fail(f"still open after {limit} s")
    assert data == b"", data
    return time.monotonic() - started


def closes_at_once(sock: socket.socket) -> bool:
    return closed_after(sock, time.monotonic(), 1.0) < 1.0


def active_version(server: ServerProcess) -> int:
    version: int = httpx.get(f"{server.url}/config").json()["version"]
    return version


def history_length(server: ServerProcess) -> int:
    page = httpx.get(f"{server.url}/config/history", params={"limit": 100}, headers=ADMIN).json()
    return len(page["items"])


@pytest.fixture
def unchanged(server: ServerProcess) -> Iterator[None]:
    """The test must leave the configuration exactly as it found it."""
    before = active_version(server), history_length(server)
    yield
    assert (active_version(server), history_length(server)) == before


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: balancer",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- bodies -----------------------------------------------------------------------------


@each_endpoint
@pytest.mark.usefixtures("unchanged")
def test_413_before_the_body_is_read_when_content_length_is_over_the_limit(
    server: ServerProcess, endpoint: Endpoint
) -> None:
    with connect(server) as sock:
        # Only the head: an answer that waited for the 10 MB would never come.
        head = {
            **endpoint.headers,
            "Content-Type": "application/json",
            "Content-Length": "10000000",
        }
        sock.sendall(request_head(endpoint.method, endpoint.path, head))
        answer = read_answer(sock)
        assert closes_at_once(sock)
    assert answer.status == 413
    assert answer.problem()["code"] == "body-too-large"


@each_endpoint
@pytest.mark.usefixtures("unchanged")
def test_413_while_a_chunked_body_streams_past_the_limit(
    server: ServerProcess, endpoint: Endpoint
) -> None:
    chunk = b"x" * 4096
    with connect(server) as sock:
        head = {
            **endpoint.headers,
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        }
        sock.sendall(request_head(endpoint.method, endpoint.path, head))
        for _ in range(MAX_BODY // len(chunk) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # No terminating chunk: the answer comes while the body is still open.
        answer = read_answer(sock)
        assert closes_at_once(sock)
    assert answer.status == 413
    assert answer.problem()["code"] == "body-too-large"


ADMIN_BODY_ENDPOINTS = [endpoint for endpoint in BODY_ENDPOINTS if endpoint.headers]


@pytest.mark.parametrize("length", [MAX_BODY, 10_000_000], ids=["within", "over"])
@pytest.mark.parametrize(
    ("credentials", "status"),
    [({}, 401), ({"Authorization": "Bearer not-the-admin-token"}, 403)],
    ids=["missing", "wrong"],
)
@pytest.mark.parametrize(
    "endpoint", ADMIN_BODY_ENDPOINTS, ids=[f"{e.method} {e.path}" for e in ADMIN_BODY_ENDPOINTS]
)
@pytest.mark.usefixtures("unchanged")
def test_an_admin_request_without_a_valid_token_is_refused_before_its_body_arrives(
    server: ServerProcess,
    endpoint: Endpoint,
    credentials: dict[str, str],
    status: int,
    length: int,
) -> None:
    with connect(server) as sock:
        head = {**credentials, "Content-Type": "application/json", "Content-Length": str(length)}
        # One byte of the body, the rest never: an answer that waited for it would come
        # only when the read timeout closes the connection, without an answer.
        sock.sendall(request_head(endpoint.method, endpoint.path, head) + b"{")
        sock.settimeout(READ_TIMEOUT / 2)
        answer = read_answer(sock)
        assert closes_at_once(sock)
    assert answer.status == status
    assert answer.problem()["code"] == ("unauthorized" if status == 401 else "forbidden")


def test_body_of_exactly_the_limit_is_accepted(server: ServerProcess) -> None:
    document = json.dumps({"video": VIDEO}).encode()
    body = document[:-1] + b" " * (MAX_BODY - len(document)) + b"}"
    assert len(body) == MAX_BODY
    response = httpx.post(
        f"{server.url}/balance", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    too_long = httpx.post(
        f"{server.url}/balance", content=body + b" ", headers={"Content-Type": "application/json"}
    )
    assert too_long.status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        None,
    ],
)
@each_endpoint
@pytest.mark.usefixtures("unchanged")
def test_415_when_the_body_is_not_json(
    server: ServerProcess, endpoint: Endpoint, content_type: str | None
) -> None:
    sent = {**endpoint.headers, **({"Content-Type": content_type} if content_type else {})}
    url = f"{server.url}{endpoint.path}"
    response = httpx.request(endpoint.method, url, content=json.dumps(endpoint.body), headers=sent)
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unsupported-media-type"


@pytest.mark.parametrize(
    "body", [b"{", b'{"cdn_host": }', b"nonsense", b'{"a": 1}}', b"\xff\xfe{}"], ids=repr
)
@each_endpoint
@pytest.mark.usefixtures("unchanged")
def test_400_for_malformed_json(server: ServerProcess, endpoint: Endpoint, body: bytes) -> None:
    sent = {**endpoint.headers, "Content-Type": "application/json"}
    url = f"{server.url}{endpoint.path}"
    response = httpx.request(endpoint.method, url, content=body, headers=sent)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed-json"


def test_json_with_a_charset_or_a_json_suffix_is_json(server: ServerProcess) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = httpx.post(
            f"{server.url}/balance",
            content=json.dumps({"video": VIDEO}),
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 200, (content_type, response.text)


# --- heads ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", f"/?video={VIDEO}", "/config", "/balance"])
def test_431_for_a_one_megabyte_header_on_any_path(server: ServerProcess, path: str) -> None:
    with connect(server) as sock:
        head = request_head("GET", path, {"X-Padding": "a" * 1_000_000})
        # It may stop reading before the megabyte is sent; the answer is waiting.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        answer = read_answer(sock)
        assert closes_at_once(sock)
    assert answer.status == 431
    assert answer.problem()["code"] == "headers-too-large"


def test_431_for_too_many_small_headers(server: ServerProcess) -> None:
    headers = {f"X-Header-{n}": "v" for n in range(10_000)}
    with connect(server) as sock:
        sock.sendall(request_head("GET", "/health", headers))
        answer = read_answer(sock)
    assert answer.status == 431


def test_head_just_under_the_limit_is_served(server: ServerProcess) -> None:
    padding = "a" * (MAX_HEAD - 1024)
    response = httpx.get(f"{server.url}/health", headers={"X-Padding": padding})
    assert response.status_code == 200


def test_pipelined_requests_larger_together_than_the_limit_are_all_served(
    server: ServerProcess,
) -> None:
    one = request_head("GET", "/health", {})
    count = 2 * MAX_HEAD // len(one)  # two limits' worth of small heads in one write
    with connect(server) as sock:
        sock.sendall(one * count)
        answers = b""
        while answers.count(b"HTTP/1.1 200 OK") < count:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {answers.count(b'HTTP/1.1 200 OK')} of {count}"
            answers += chunk
    assert b"HTTP/1.1 431" not in answers


def test_worker_serves_on_after_refusing_heads(server: ServerProcess) -> None:
    for _ in range(5):
        with connect(server) as sock:
            sock.sendall(request_head("GET", "/", {"X-Padding": "a" * 200_000}))
            assert read_answer(sock).status == 431
    response = httpx.get(f"{server.url}/", params={"video": VIDEO})
    assert response.status_code == 301


# --- slow clients -----------------------------------------------------------------------


async def test_stalled_clients_hold_no_worker_and_are_closed_in_bounded_time(
    server: ServerProcess,
) -> None:
    stalls = {
        "a connection that sends nothing": b"",
        "half a request line": b"GET /?video=http://s1.orig",
        "half a head": b"GET /config HTTP/1.1\r\nHost: balancer\r\nX-Slow: abc",
        "half a body": request_head(
            "POST", "/balance", {"Content-Type": "application/json", "Content-Length": "200"}
        )
        + b'{"video": "http://s1',
    }
    sockets: dict[str, list[socket.socket]] = {}
    started = time.monotonic()
    for name, data in stalls.items():
        for _ in range(10):  # forty stalled connections on the one worker
            sock = connect(server)
            sock.sendall(data)
            sockets.setdefault(name, []).append(sock)

    async with httpx.AsyncClient(base_url=server.url) as client:
        begun = time.monotonic()
        for _ in range(50):
            response = await client.get("/", params={"video": VIDEO})
            assert response.status_code == 301
        served_in = time.monotonic() - begun
    # A worker held by one stalled client would answer nobody until it gave up (2 s).
    assert served_in < READ_TIMEOUT / 2, served_in

    # Each is closed between the timeout and one and a half times it (the sweep runs every
    # half timeout), plus scheduling on a busy machine.
    for name, group in sockets.items():
        for sock in group:
            elapsed = await asyncio.to_thread(closed_after, sock, started, READ_TIMEOUT * 3)
            assert READ_TIMEOUT * 0.9 <= elapsed <= READ_TIMEOUT * 2.5, (name, elapsed)
            sock.close()


def test_idle_keep_alive_connection_is_closed_after_keep_alive_seconds(
    server: ServerProcess,
) -> None:
    with connect(server) as sock:
        for _ in range(3):  # the connection is kept for the next request...
            sock.sendall(request_head("GET", "/health", {}))
            assert read_answer(sock).status == 200
        elapsed = closed_after(sock, time.monotonic(), 5)  # ...and closed once idle
    assert 0.5 <= elapsed <= 3, elapsed
