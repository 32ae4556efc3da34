"""The health prober against broken and hostile CDN hosts: real sockets, each fake host a
small asyncio server of the test's own, and the prober's round on a real Redis board.

Whatever one host answers (or does not), that host alone is marked, with a readable
`last_error`, and every other host is still probed and published.
"""

import asyncio
import itertools
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from app.application.cdn_health import CdnHealthView, ProbeCdnHosts
from app.application.snapshot import ConfigSnapshot
from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.pool import CdnPool
from app.domain.split import Split
from app.infrastructure.http.probe import HttpProbe
from app.infrastructure.redis.cdn_health import CdnHealthMonitor, RedisHealthBoard
from tests.support.logs import events, json_logs
from tests.support.probe_hosts import SLACK, TIMEOUT, Answer, fake_host, hangs, says
from tests.support.tools import require_tool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
MB = 1024 * 1024
LINE_LIMIT = 1024  # bytes of a status line, its line end included


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS server context with a self-signed certificate for 127.0.0.1."""
    openssl = require_tool("openssl", install="apt-get install openssl")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(Path(cert), Path(key))
    return context


async def probe_answer(answer: Answer, *, scheme: str = "http", method: str = "HEAD") -> str | None:
    async with fake_host(answer) as port:
        started = time.monotonic()
        verdict = await HttpProbe()(f"{scheme}://127.0.0.1:{port}/", method=method, timeout=TIMEOUT)
        assert time.monotonic() - started < TIMEOUT + SLACK
        return verdict


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (says(OK), None),
        (says(b"HTTP/1.1 200\r\n\r\n"), None),  # no reason phrase
        (says(b"HTTP/1.1 204 \r\n\r\n"), None),  # an empty one
        (says(b"HTTP/1.0 302 Found\nLocation: /x\n\n"), None),  # HTTP/1.0, bare LF
        # a status line of exactly LINE_LIMIT bytes with its CRLF, and one a byte longer
        (says(b"HTTP/1.1 200 " + b"k" * (LINE_LIMIT - 15) + b"\r\n\r\n"), None),
        (
            says(b"HTTP/1.1 200 " + b"k" * (LINE_LIMIT - 14) + b"\r\n\r\n"),
            "status line longer than 1024 bytes",
        ),
        (says(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n", b"v" * 10 * MB), None),
        (says(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"), "status 503"),
        (says(b"HTTP/1.1 404 Not Found\r\n\r\n"), "status 404"),
        # Non-ASCII digits: `"\xb200".isdigit()` holds, `int()` of it raises.
        (
            says(b"HTTP/1.1 \xb200 OK\r\n\r\n"),
            "not an HTTP/1.x status line: b'HTTP/1.1 \\xb200 OK'",
        ),
        (says("HTTP/1.1 \N{SUPERSCRIPT TWO}00 OK\r\n".encode()), "not an HTTP/1.x status line"),
        (says("HTTP/1.1 \u0662\u0660\u0660 OK\r\n".encode()), "not an HTTP/1.x status line"),
        (says("HTTP/1.1 \uff12\uff10\uff10 OK\r\n".encode()), "not an HTTP/1.x status line"),
        (says(b"HTTP/2 200\r\n\r\n"), "not an HTTP/1.x status line: b'HTTP/2 200'"),
        (says(b"HTTP/1.1 2000 OK\r\n\r\n"), "not an HTTP/1.x status line"),
        (says(b"HTTP/1.1 20 OK\r\n\r\n"), "not an HTTP/1.x status line"),
        (says(b"HTTP/1.1 200OK\r\n\r\n"), "not an HTTP/1.x status line"),
        (says(b"http/1.1 200 OK\r\n\r\n"), "not an HTTP/1.x status line"),
        (says(b"\x00\xffSSH-2.0-OpenSSH_9.6\r\n"), "not an HTTP/1.x status line"),
        (says(b"HTTP/1.1 200 " + b"A" * MB + b"\r\n\r\n"), "status line longer than 1024 bytes"),
        (says(b"\x00" * 10 * MB), "status line longer than 1024 bytes"),
        (says(b"HTTP/1.1 20"), "connection closed mid status line (11 bytes received)"),
        (says(), "connection closed without an answer"),
        (says(*(bytes([byte]) for byte in OK), every=0.2), "status line not complete within 0.5 s"),
        (hangs, "no answer within 0.5 s"),
    ],
    ids=[
        "200 OK",
        "200 without reason",
        "204 with an empty reason",
        "HTTP/1.0 and bare LF",
        "a status line of 1024 bytes",
        "a status line of 1025 bytes",
        "a 10 MB body",
        "503",
        "404",
        "latin-1 superscript two",
        "utf-8 superscript two",
        "arabic-indic digits",
        "fullwidth digits",
        "HTTP/2 text",
        "four digits",
        "two digits",
        "no space after the code",
        "lower-case protocol",
        "garbage bytes",
        "a 1 MB status line",
        "10 MB without a line end",
        "closed mid-line",
        "closed without a word",
        "one byte every 0.2 s",
        "silence",
    ],
)
async def test_a_probe_reads_only_an_ascii_http_1_status_line_and_names_what_else_it_got(
    answer: Answer, verdict: str | None
) -> None:
    got = await probe_answer(answer, method="GET")
    if verdict is None:
        assert got is None
    else:
        assert got is not None
        assert got.startswith(verdict), got


async def test_tls_on_a_plain_http_port_is_a_failure_not_a_crash(
    certificate: ssl.SSLContext,
) -> None:
    async with fake_host(says(OK), tls=certificate) as port:
        got = await HttpProbe()(f"http://127.0.0.1:{port}/", method="HEAD", timeout=TIMEOUT)
    assert got is not None
    assert got.startswith(("connection closed", "not an HTTP/1.x status line")), got


async def test_plain_http_on_an_https_url_and_an_unknown_certificate_are_named(
    certificate: ssl.SSLContext,
) -> None:
    plain = await probe_answer(says(OK, listen=False), scheme="https")
    assert plain == "TLS failed: wrong version number"
    async with fake_host(says(OK), tls=certificate) as port:
        unknown = await HttpProbe()(f"https://127.0.0.1:{port}/", method="HEAD", timeout=TIMEOUT)
    assert unknown == "TLS failed: certificate verify failed: self-signed certificate"


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.0.1:8080/",
        "http://[fe80::1]/",
        "http://[febf:ffff::1]/",
        "http://[::ffff:169.254.169.254]/",
    ],
)
async def test_a_link_local_target_is_refused_without_connecting(url: str) -> None:
    started = time.monotonic()
    got = await HttpProbe()(url, method="GET", timeout=2.0)
    assert got is not None
    assert got.startswith("refused: link-local address"), got
    assert time.monotonic() - started < 0.5  # no connection was tried: it would take 2 s


async def test_a_name_that_resolves_to_a_link_local_address_is_refused() -> None:
    """The address is checked after resolution, not the name: `metadata.example` may well
    be a CDN name in the configuration and 169.254.169.254 in DNS."""
    async with fake_host(says(OK)) as port:
        probe = HttpProbe()

        async def resolve(host: str, port: int) -> list[str]:
            assert host in ("metadata.example", "cdn.example")
            return ["127.0.0.1", "169.254.169.254"] if host == "metadata.example" else ["127.0.0.1"]

        probe.resolve = resolve
        refused = await probe(f"http://metadata.example:{port}/", method="HEAD", timeout=TIMEOUT)
        allowed = await probe(f"http://cdn.example:{port}/", method="HEAD", timeout=TIMEOUT)
    assert refused == (
        "refused: link-local address 169.254.169.254 for metadata.example "
        "(cloud metadata services answer there, no CDN does)"
    )
    assert allowed is None  # connected to the resolved 127.0.0.1


async def test_hosts_that_hang_delay_no_other_verdict_beyond_the_timeout() -> None:
    async with (
        fake_host(hangs) as hung_a,
        fake_host(hangs) as hung_b,
        fake_host(hangs) as hung_c,
        fake_host(says(OK)) as up,
    ):
        probe = HttpProbe()
        started = time.monotonic()
        verdicts = await asyncio.gather(
            *(
                probe(f"http://127.0.0.1:{port}/", method="HEAD", timeout=TIMEOUT)
                for port in (hung_a, hung_b, hung_c, up)
            )
        )
        took = time.monotonic() - started
    assert verdicts == [*["no answer within 0.5 s"] * 3, None]
    assert took < 2.4 * TIMEOUT  # one after the other would take three timeouts


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_round_marks_each_hostile_host_down_and_still_publishes_the_healthy_ones(
    redis: Redis, sequence_key: str
) -> None:
    board = RedisHealthBoard(
        redis, key=f"{sequence_key}.cdn-health", lease_seconds=5, timeout=0.5, me="prober"
    )
    assert await board.hold_lease()
    async with (
        fake_host(says(OK)) as up,
        fake_host(says(b"HTTP/1.1 \xb200 OK\r\n\r\n")) as superscript,
        fake_host(says(b"HTTP/1.1 200 " + b"A" * MB + b"\r\n\r\n")) as long_line,
        fake_host(says(b"HTTP/2 200\r\n\r\n")) as http2,
        fake_host(says(b"HTTP/1.1 20")) as cut,
    ):
        hosts = {
            name: f"http://127.0.0.1:{port}"
            for name, port in (
                ("up", up),
                ("superscript", superscript),
                ("long line", long_line),
                ("http2", http2),
                ("cut", cut),
            )
        }
        config = BalancerConfig(
            cdn_host="x",
            split=Split(1, 0),
            cdn_hosts=CdnPool.of((url, 1) for url in hosts.values()),
            cdn_health=HealthSettings(interval_seconds=1.0, timeout_seconds=TIMEOUT, fall=1),
        )
        snapshot = ConfigSnapshot()
        snapshot.offer(ConfigVersion(1, config, datetime.now(UTC)))
        before = (await board.read()).round
        states = await ProbeCdnHosts(snapshot, HttpProbe(), board)()
    published = await board.read()
    assert published.round == before + 1
    assert published.hosts == states
    assert {name: states[url].healthy for name, url in hosts.items()} == {
        "up": True,
        "superscript": False,
        "long line": False,
        "http2": False,
        "cut": False,
    }
    assert states[hosts["superscript"]].last_error == (
        "not an HTTP/1.x status line: b'HTTP/1.1 \\xb200 OK'"
    )
    assert states[hosts["long line"]].last_error == "status line longer than 1024 bytes"


async def test_a_round_that_fails_unexpectedly_is_logged_once_counted_and_the_next_runs_on_time(
    redis: Redis, sequence_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    interval = 0.3
    board = RedisHealthBoard(
        redis, key=f"{sequence_key}.cdn-health", lease_seconds=1.5, timeout=0.5, me="prober"
    )
    view = CdnHealthView()
    rounds: list[float] = []

    async def probe_round() -> None:
        rounds.append(time.monotonic())
        if len(rounds) <= 3:
            raise RuntimeError("a bug in the round")

    async def refresh() -> None:
        pass

    with json_logs():
        monitor = CdnHealthMonitor(
            board, probe_round, refresh, lambda: interval, view, lease_seconds=1.5
        )
        await monitor.start()
        try:
            while len(rounds) < 5:
                assert not rounds or time.monotonic() - rounds[0] < 10 * interval, rounds
                await asyncio.sleep(0.02)
        finally:
            await monitor.stop()
        logged = capsys.readouterr().err
    gaps = [later - earlier for earlier, later in itertools.pairwise(rounds[:5])]
    assert all(interval - 0.02 < gap < interval + 0.25 for gap in gaps), gaps
    assert view.round_failures == 3
    (failed,) = events(logged, "cdn_probe_round_failed")
    assert "RuntimeError: a bug in the round" in str(failed["exception"])
    (recovered,) = events(logged, "cdn_probe_round_recovered")
    assert recovered["failed_rounds"] == 3
