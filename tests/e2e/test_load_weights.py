"""Load-aware CDN weights on a real server of 2 workers, against fake CDN hosts whose
answers the tests change while it runs: agent words and ORCA utilizations move the shares
of CDN hosts, `maint` takes a host out at once, a recovered host ramps up over slow start,
and the origin share stays exact (every 10th request of each worker) throughout."""

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

from loadtest.fake_cdn import FakeCdn
from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.redirects import VIDEO
from tests.support.servers import WorkerLines, reset_config, running_server

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKERS = 2
INTERVAL, TIMEOUT = 0.5, 0.25
ORIGIN = "s1.origin-cluster"
EVERY = 10  # origin_every: 9 of 10 requests go to the CDN
POINTS = 0.02  # the issue's ±2 percentage points
# The bound for a change to reach every worker: one probe interval plus 0.5 s (the
# board is read every 0.25 s). Asked by HTTP on a busy 2-core machine: a little slack.
APPLIED = INTERVAL + 0.5
POLL_SLACK = 0.3


def answer(body: bytes = b"", *headers: bytes) -> bytes:
    head = b"".join(header + b"\r\n" for header in headers)
    return (
        b"HTTP/1.1 200 OK\r\n"
        + head
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


def agent(words: str) -> bytes:
    return answer(f"{words}\n".encode())


def orca(value: str) -> bytes:
    return answer(b"OK", f"endpoint-load-metrics: {value}".encode())


@dataclass
class Redirected:
    worker: int
    at: float
    host: str  # the CDN host's host:port, or ORIGIN


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str) -> Iterator[ServerProcess]:
    with running_server(database_url, redis_url, workers=WORKERS) as process:
        reset_config(process.url)
        yield process


@pytest.fixture
def lines(server: ServerProcess) -> Iterator[WorkerLines]:
    # Not `initial_config`: removing versions under a running server numbers the next one
    # below what its workers serve, and they keep the newer number (CI: one worker went on
    # routing to the baseline's host).
    with WorkerLines([server], WORKERS) as workers:
        yield workers


@pytest.fixture
def cdns() -> Iterator[list[FakeCdn]]:
    hosts = [FakeCdn().start() for _ in range(3)]
    yield hosts
    for host in hosts:
        host.stop()


def configure(server: ServerProcess, hosts: list[FakeCdn], **health: object) -> None:
    response = httpx.patch(
        f"{server.url}/config",
        json={
            "origin_every": EVERY,
            "server_rules": {},
            "cdn_hosts": [{"host": host.host, "weight": 1} for host in hosts],
            "cdn_health": {
                "enabled": True,
                "interval_seconds": INTERVAL,
                "timeout_seconds": TIMEOUT,
                "fall": 3,
                "rise": 1,
                **health,
            },
        },
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text


def health_of(lines: WorkerLines) -> dict[int, dict[str, dict[str, object]]]:
    """Every worker's GET /cdn/health, by worker and host (host:port)."""
    return {
        pid: {urlsplit(host["host"]).netloc: host for host in response.json()}
        for pid, response in lines.get("/cdn/health", headers=ADMIN).items()
    }


def wait_for_weights(
    lines: WorkerLines, expected: dict[str, float], within: float = 10.0
) -> dict[int, dict[str, dict[str, object]]]:
    """Until every worker shows these effective weights (by host:port)."""
    deadline = time.monotonic() + within
    while True:
        seen = health_of(lines)
        weights = [
            {host: state["effective_weight"] for host, state in hosts.items()}
            for hosts in seen.values()
        ]
        if all(found == expected for found in weights):
            return seen
        assert time.monotonic() < deadline, weights
        time.sleep(0.05)


def redirects(lines: WorkerLines, per_worker: int) -> list[Redirected]:
    """`per_worker` redirects from each worker at once, each worker's in the order served."""
    found: dict[int, list[Redirected]] = {}

    def drive(pid: int, client: httpx.Client) -> None:
        served = found[pid] = []
        for _ in range(per_worker):
            response = client.get("/", params={"video": VIDEO})
            assert response.status_code == 301, response.text
            served.append(Redirected(pid, time.monotonic(), host_of(response)))

    threads = [
        threading.Thread(target=drive, args=(pid, client)) for pid, client in lines.clients.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [one for served in found.values() for one in served]


def host_of(response: httpx.Response) -> str:
    return urlsplit(response.headers["location"]).netloc


def assert_origin_exact(served: list[Redirected]) -> None:
    """Each worker sent every 10th of its requests to the origin, never another: its numbers
    come in leases of 1,000 from the shared sequence, and 9:1 places the origin at n % 10 == 9."""
    for worker in {one.worker for one in served}:
        stream = [one.host == ORIGIN for one in served if one.worker == worker]
        places = [index for index, origin in enumerate(stream) if origin]
        assert places, worker
        gaps = {after - before for before, after in itertools.pairwise(places)}
        assert gaps <= {EVERY}, (worker, sorted(gaps))
        assert places[0] < EVERY
        assert len(stream) - 1 - places[-1] < EVERY


def shares(served: list[Redirected], hosts: list[FakeCdn]) -> list[float]:
    cdn = Counter(one.host for one in served if one.host != ORIGIN)
    total = sum(cdn.values())
    assert set(cdn) <= {host.host for host in hosts}, cdn
    return [cdn[host.host] / total for host in hosts]


def assert_shares(found: list[float], expected: list[float]) -> None:
    for got, want in zip(found, expected, strict=True):
        assert abs(got - want) <= POINTS, (found, expected)


def thirds_everywhere(lines: WorkerLines, hosts: list[FakeCdn]) -> dict[int, bool]:
    """Whether each worker's next three CDN-bound redirects went to three hosts: with equal
    weights, smooth weighted round robin gives every three consecutive picks one of each."""
    seen = {}
    for pid, client in lines.clients.items():
        picked: list[str] = []
        while len(picked) < 3:
            host = host_of(client.get("/", params={"video": VIDEO}))
            if host != ORIGIN:
                picked.append(host)
        seen[pid] = set(picked) == {host.host for host in hosts}
    return seen


def test_agent_100_50_drain_share_2_1_0_and_up_restores_thirds_on_every_worker_in_time(
    server: ServerProcess, lines: WorkerLines, cdns: list[FakeCdn]
) -> None:
    a, b, c = cdns
    a.answer, b.answer, c.answer = agent("up 100%"), agent("up 50%"), agent("drain")
    configure(server, cdns, method="GET", load="agent")
    seen = wait_for_weights(lines, {a.host: 1.0, b.host: 0.5, c.host: 0.0})
    for hosts in seen.values():
        assert hosts[c.host]["healthy"] is True  # drained, not down
        assert hosts[c.host]["reported"] == {"state": "drain"}
        assert hosts[b.host]["reported"] == {"state": "up", "weight_percent": 50}
        assert hosts[b.host]["configured_weight"] == 1

    served = redirects(lines, 5000)
    assert sum(one.host != ORIGIN for one in served) == 9000
    found = shares(served, cdns)
    print(f"agent 100% / 50% / drain: CDN shares {[round(share, 4) for share in found]}")
    assert_shares(found, [2 / 3, 1 / 3, 0.0])
    assert_origin_exact(served)

    # The drained host back `up`, and the half-loaded one back to its full weight: thirds.
    b.answer = c.answer = agent("up")
    changed = time.monotonic()
    restored: dict[int, float] = {}
    while len(restored) < WORKERS:
        for pid, thirds in thirds_everywhere(lines, cdns).items():
            if thirds:
                restored.setdefault(pid, time.monotonic() - changed)
        assert time.monotonic() - changed < APPLIED + POLL_SLACK, restored
    print(f"drain -> up applied on every worker after {max(restored.values()):.2f} s")
    served = redirects(lines, 2000)
    assert_shares(shares(served, cdns), [1 / 3, 1 / 3, 1 / 3])
    assert_origin_exact(served)


def test_maint_takes_a_host_out_without_waiting_for_fall(
    server: ServerProcess, lines: WorkerLines, cdns: list[FakeCdn]
) -> None:
    a, b, c = cdns
    for host in cdns:
        host.answer = agent("up")
    configure(server, cdns, method="GET", load="agent", fall=10)
    wait_for_weights(lines, {a.host: 1.0, b.host: 1.0, c.host: 1.0})
    b.answer = agent("maint")
    changed = time.monotonic()
    while True:
        states = [hosts[b.host] for hosts in health_of(lines).values()]
        if all(state["healthy"] is False for state in states):
            break
        # fall is 10 probes of 0.5 s: maint must not wait for them
        assert time.monotonic() - changed < APPLIED + POLL_SLACK, states
    print(f"maint applied on every worker after {time.monotonic() - changed:.2f} s")
    assert all(state["last_error"] == "reported maint" for state in states)
    served = redirects(lines, 500)
    assert b.host not in {one.host for one in served}
    assert_origin_exact(served)


def test_utilization_02_and_06_share_2_1_and_a_malformed_header_changes_nothing(
    server: ServerProcess, lines: WorkerLines, cdns: list[FakeCdn]
) -> None:
    a, b = cdns[:2]
    a.answer = orca("TEXT cpu_utilization=0.2")
    b.answer = orca('JSON {"cpu_utilization": 0.9, "application_utilization": 0.6}')
    configure(server, [a, b], load="utilization")  # HEAD: the header is enough
    wait_for_weights(lines, {a.host: 0.8, b.host: 0.4})
    served = redirects(lines, 2000)
    found = shares(served, [a, b])
    print(f"utilization 0.2 / 0.6: CDN shares {[round(share, 4) for share in found]}")
    assert_shares(found, [2 / 3, 1 / 3])
    assert_origin_exact(served)
    metrics = httpx.get(f"{server.url}/metrics", headers=ADMIN).text
    assert f'balancer_cdn_reported_utilization{{host="{a.host}"}} 0.2' in metrics

    b.answer = orca("TEXT cpu_utilization=lots")
    deadline = time.monotonic() + 5
    while not all(hosts[b.host]["load_error"] for hosts in health_of(lines).values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for hosts in health_of(lines).values():
        assert "cpu_utilization is not a number" in str(hosts[b.host]["load_error"])
        assert hosts[b.host]["healthy"] is True
        assert hosts[b.host]["effective_weight"] == 0.4  # the last report that could be read
    served = redirects(lines, 2000)
    assert_shares(shares(served, [a, b]), [2 / 3, 1 / 3])
    assert_origin_exact(served)


def test_a_recovered_host_ramps_up_over_slow_start_and_reaches_its_full_share(
    server: ServerProcess, lines: WorkerLines, cdns: list[FakeCdn]
) -> None:
    slow_start = 4.0
    a, b = cdns[:2]
    configure(server, [a, b], fall=1, slow_start_seconds=slow_start)
    wait_for_weights(lines, {a.host: 1.0, b.host: 1.0})
    b.stop()
    wait_for_weights(lines, {a.host: 1.0, b.host: 0.0})
    b.start()
    wait_for_weights(lines, {a.host: 1.0, b.host: 0.1}, within=3 * INTERVAL + 1)
    back = time.monotonic()
    served: list[Redirected] = []
    while time.monotonic() - back < slow_start:
        served += redirects(lines, 100)
    window = slow_start / 4
    ramp = []
    for index in range(4):
        part = [one for one in served if index * window <= one.at - back < (index + 1) * window]
        ramp.append(shares(part, [a, b])[1])
    print(f"slow start over {slow_start:g} s, the recovered host's share by window: {ramp}")
    assert ramp == sorted(ramp), ramp
    assert ramp[0] < 0.25, ramp
    assert ramp[-1] > 0.4, ramp
    assert_origin_exact(served)
    wait_for_weights(lines, {a.host: 1.0, b.host: 1.0}, within=INTERVAL + 1)
    assert time.monotonic() - back < slow_start + APPLIED + POLL_SLACK
    served = redirects(lines, 2000)
    assert_shares(shares(served, [a, b]), [0.5, 0.5])
    assert_origin_exact(served)
