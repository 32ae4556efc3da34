"""The prober's round with probes that misbehave in ways the HTTP probe should never: one
host's surprise is that host's failure, and the round still ends on time and publishes."""

import asyncio
import time
from collections.abc import Iterator, Mapping

import pytest

from app.application.cdn_health import ProbeCdnHosts
from app.application.ports import BoardView, ProbeAnswer
from app.application.snapshot import ConfigSnapshot
from app.domain.cdn_health import HealthSettings, HostState
from app.domain.config import BalancerConfig
from app.domain.load import LoadReport, parse_agent
from app.domain.pool import CdnPool
from app.domain.split import Split
from tests.support.fakes import version
from tests.support.logs import events, json_logs

A, B, C = "http://cdn-a.example.com", "http://cdn-b.example.com", "http://cdn-c.example.com"
TIMEOUT = 0.2


class MemoryBoard:
    def __init__(self) -> None:
        self.hosts: Mapping[str, HostState] = {}
        self.round = 0

    async def read(self) -> BoardView:
        return BoardView(self.hosts, self.round)

    async def publish(self, hosts: Mapping[str, HostState]) -> bool:
        self.hosts = dict(hosts)
        self.round += 1
        return True


class Misbehaving:
    """B raises a surprise, C overruns its timeout tenfold; A answers."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def answer(self, url: str, *, method: str, timeout: float, load: str) -> ProbeAnswer:
        self.asked.append(url)
        if url.startswith(B):
            raise ValueError("invalid literal for int() with base 10: '²00'")
        if url.startswith(C):
            await asyncio.sleep(10 * timeout)
        return ProbeAnswer(None)


def snapshot_of(*hosts: str, fall: int = 1) -> ConfigSnapshot:
    snapshot = ConfigSnapshot()
    config = BalancerConfig(
        cdn_host="x",
        split=Split(1, 0),
        cdn_hosts=CdnPool.of((host, 1) for host in hosts),
        cdn_health=HealthSettings(interval_seconds=1.0, timeout_seconds=TIMEOUT, fall=fall),
    )
    snapshot.offer(version(1, config))
    return snapshot


@pytest.fixture
def logged_as_json() -> Iterator[None]:
    with json_logs():
        yield


@pytest.mark.usefixtures("logged_as_json")
async def test_a_probe_that_raises_fails_its_own_host_and_the_round_still_publishes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    board = MemoryBoard()
    probe = Misbehaving()
    round_ = ProbeCdnHosts(snapshot_of(A, B), probe, board)
    for _ in range(3):
        states = await round_()
    assert board.round == 3
    assert board.hosts == states
    assert states[A].healthy
    assert not states[B].healthy
    assert states[B].last_error == "probe failed: ValueError (a bug of the prober: see its log)"
    assert states[B].consecutive_failures == 3
    # The traceback once, when the host's error became this one, not every round.
    crashes = events(capsys.readouterr().err, "cdn_probe_failed")
    assert len(crashes) == 1
    assert crashes[0]["host"] == B
    assert "ValueError: invalid literal" in str(crashes[0]["exception"])


async def test_probes_that_overrun_their_timeout_are_cut_off_at_once_failing_their_hosts() -> None:
    overrunning = [C, *(f"{C}:{port}" for port in range(8081, 8085))]
    board = MemoryBoard()
    round_ = ProbeCdnHosts(snapshot_of(A, *overrunning), Misbehaving(), board)
    started = time.monotonic()
    states = await asyncio.wait_for(round_(), 50 * TIMEOUT)
    took = time.monotonic() - started
    # Each is cut off 0.2 s past its 0.2 s timeout, all at once: 0.4 s. Waiting for them
    # would take 2 s, cutting them off one after the other 5 x 0.4 s.
    assert took < 5 * TIMEOUT
    assert states[A].healthy
    for url in overrunning:
        assert not states[url].healthy
        assert states[url].last_error == "no answer within 0.2 s"
    assert board.round == 1


class Reporting:
    """Every host answers; what each reports is the test's to change."""

    def __init__(self) -> None:
        self.reports: dict[str, LoadReport | None] = {}

    async def answer(self, url: str, *, method: str, timeout: float, load: str) -> ProbeAnswer:
        base = next(host for host in self.reports if url.startswith(host))
        return ProbeAnswer(None, self.reports[base])


@pytest.mark.usefixtures("logged_as_json")
async def test_a_garbage_report_is_logged_once_per_change_and_never_fails_the_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    snapshot = ConfigSnapshot()
    config = BalancerConfig(
        cdn_host="x",
        split=Split(1, 0),
        cdn_hosts=CdnPool.of([(A, 1), (B, 1)]),
        cdn_health=HealthSettings(method="GET", load="agent", fall=1, timeout_seconds=TIMEOUT),
    )
    snapshot.offer(version(1, config))
    probe = Reporting()
    probe.reports = {A: LoadReport(weight_percent=50), B: parse_agent(b"OK")}
    round_ = ProbeCdnHosts(snapshot, probe, MemoryBoard())
    for _ in range(3):
        states = await round_()
    probe.reports[B] = parse_agent(b"up 200% 300%")
    states = await round_()
    assert states[B].healthy
    assert states[B].load_error == "two percentages: 'up 200% 300%'"
    assert (states[A].weight_percent, states[B].weight_percent) == (50, 100)
    ignored = events(capsys.readouterr().err, "cdn_load_report_ignored")
    assert [event["host"] for event in ignored] == [B, B]
