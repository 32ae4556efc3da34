"""Load reports read from the probe's answer by the real HTTP probe: the body's first line
(agent words) or the `endpoint-load-metrics` header (ORCA), whatever shape the answer has.
A report that is late, cut or garbage is that report's `error`; the host stays up."""

import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from app.application.cdn_health import CdnHealthView, ProbeCdnHosts, RefreshCdnHealth
from app.application.ports import ProbeAnswer
from app.application.snapshot import ConfigSnapshot
from app.domain.cdn_health import HealthSettings
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.load import LoadReport
from app.domain.pool import CdnPool
from app.domain.split import Split
from app.infrastructure.http.probe import MAX_HEADER_BYTES, HttpProbe
from app.infrastructure.redis.cdn_health import RedisHealthBoard
from tests.support.probe_hosts import SLACK, TIMEOUT, Answer, fake_host, hangs, says


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def answer_of(answer: Answer, load: str, method: str = "GET") -> ProbeAnswer:
    async with fake_host(answer) as port:
        started = time.monotonic()
        found = await HttpProbe().answer(
            f"http://127.0.0.1:{port}/health", method=method, timeout=TIMEOUT, load=load
        )
        assert time.monotonic() - started < TIMEOUT + SLACK
        return found


def body(text: bytes, *headers: bytes) -> bytes:
    head = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: %d\r\n\r\n" % len(text) + text


@pytest.mark.parametrize(
    ("answer", "report"),
    [
        (says(body(b"up 80%\n")), LoadReport(state="up", weight_percent=80)),
        (says(body(b"drain")), LoadReport(state="drain")),
        (says(body(b"50%\r\nanything else\n")), LoadReport(weight_percent=50)),
        (says(body(b'{"state": "maint"}\n')), LoadReport(state="maint")),
        # in pieces, a byte or so at a time
        (
            says(*[bytes([byte]) for byte in body(b"up 30%\n")]),
            LoadReport(state="up", weight_percent=30),
        ),
        # chunked, and an answer without a length that ends with the connection
        (
            says(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nup 60%\n\r\n0\r\n\r\n"
            ),
            LoadReport(state="up", weight_percent=60),
        ),
        (says(b"HTTP/1.0 200 OK\n\n40%"), LoadReport(weight_percent=40)),
        (says(body(b"")), None),
    ],
)
async def test_the_agent_report_is_the_first_body_line(
    answer: Answer, report: LoadReport | None
) -> None:
    assert await answer_of(answer, "agent") == ProbeAnswer(None, report)


@pytest.mark.parametrize(
    ("answer", "utilization"),
    [
        (says(body(b"OK", b"Endpoint-Load-Metrics: TEXT cpu_utilization=0.72")), 0.72),
        (
            says(body(b"", b'endpoint-load-metrics: JSON {"application_utilization": 0.2}')),
            0.2,
        ),
        (says(body(b'{"utilization": 0.6}\n')), 0.6),
    ],
)
async def test_the_utilization_is_the_orca_header_or_a_json_body(
    answer: Answer, utilization: float
) -> None:
    assert await answer_of(answer, "utilization") == ProbeAnswer(
        None, LoadReport(utilization=utilization)
    )


async def test_a_head_probe_reads_the_orca_header_and_no_body() -> None:
    header = b"endpoint-load-metrics: TEXT cpu_utilization=0.5"
    got = await answer_of(
        says(b"HTTP/1.1 200 OK\r\n" + header + b"\r\n\r\n"), "utilization", "HEAD"
    )
    assert got == ProbeAnswer(None, LoadReport(utilization=0.5))


@pytest.mark.parametrize(
    ("answer", "load", "error"),
    [
        (says(body(b"OK\n")), "agent", "unknown agent word"),
        (says(body(b"9" * 2000)), "agent", "first body line longer than 1024 bytes"),
        (
            says(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * MAX_HEADER_BYTES + b"\r\n\r\nup"),
            "agent",
            "header section longer than",
        ),
        (says(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"), "agent", "closed mid header"),
        # the status line in time, the body never
        (
            says(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"up", every=10),
            "agent",
            "not complete",
        ),
        (
            says(body(b"", b"endpoint-load-metrics: TEXT cpu_utilization=lots")),
            "utilization",
            "not a number",
        ),
        (says(body(b"", b"endpoint-load-metrics: BIN AAAA")), "utilization", "binary form"),
    ],
)
async def test_a_report_that_cannot_be_read_is_its_error_and_the_host_stays_up(
    answer: Answer, load: str, error: str
) -> None:
    got = await answer_of(answer, load)
    assert got.error is None
    assert got.report is not None
    assert got.report.error is not None
    assert error in got.report.error


async def test_with_load_off_nothing_but_the_status_line_is_read() -> None:
    assert await answer_of(says(body(b"maint\n")), "off") == ProbeAnswer(None)


async def test_a_failed_probe_reads_no_report() -> None:
    got = await answer_of(says(b"HTTP/1.1 503 Busy\r\nContent-Length: 5\r\n\r\nmaint"), "agent")
    assert got == ProbeAnswer("status 503")
    assert (await answer_of(hangs, "agent")).report is None


async def test_a_round_publishes_reports_and_every_reader_routes_by_them(
    redis: Redis, sequence_key: str
) -> None:
    board = RedisHealthBoard(
        redis, key=f"{sequence_key}.cdn-health", lease_seconds=5, timeout=0.5, me="prober"
    )
    assert await board.hold_lease()
    async with (
        fake_host(says(body(b"up 100%\n"))) as full,
        fake_host(says(body(b"50%\n"))) as half,
        fake_host(says(body(b"drain\n"))) as drained,
        fake_host(says(body(b"garbage\n"))) as garbage,
    ):
        urls = [f"http://127.0.0.1:{port}" for port in (full, half, drained, garbage)]
        config = BalancerConfig(
            cdn_host="x",
            split=Split(1, 0),
            cdn_hosts=CdnPool.of((url, 1) for url in urls),
            cdn_health=HealthSettings(
                method="GET", load="agent", interval_seconds=1.0, timeout_seconds=TIMEOUT
            ),
        )
        prober = ConfigSnapshot()
        prober.offer(ConfigVersion(1, config, datetime.now(UTC)))
        states = await ProbeCdnHosts(prober, HttpProbe(), board)()
    assert (await board.read()).hosts == states  # the reports survive the board's JSON
    assert [states[url].weight_percent for url in urls] == [100, 50, 0, 100]
    assert states[urls[2]].reported == LoadReport(state="drain")
    assert states[urls[3]].load_error is not None
    assert all(state.healthy for state in states.values())

    worker = ConfigSnapshot()
    worker.offer(ConfigVersion(1, config, datetime.now(UTC)))
    await RefreshCdnHealth(worker, board, CdnHealthView())()
    assert worker.percents == {urls[1]: 50, urls[2]: 0}
    rotation = worker.router.pools["cdn_hosts"]
    picked = Counter(rotation.next() for _ in range(500))
    assert picked == {urls[0]: 200, urls[1]: 100, urls[3]: 200}
