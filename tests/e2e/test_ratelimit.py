"""Rate limits on the real server: two workers, one client spread over both."""

import asyncio
import ipaddress
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.servers import running_server

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIDEO = {"video": "http://s1.origin-cluster/video/1488/xcg2djHckad.m3u8"}


def trusting(
    database_url: str, redis_url: str, proxy: str, fast_path: bool
) -> Iterator[ServerProcess]:
    """A server that takes X-Forwarded-For from `proxy` only."""
    with running_server(
        database_url, redis_url, workers=2, forwarded_allow_ips=proxy, fast_path=fast_path
    ) as process:
        yield process


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str, fast_path: bool) -> Iterator[ServerProcess]:
    """Trusts X-Forwarded-For from 127.0.0.1, where the tests connect from (a proxy)."""
    yield from trusting(database_url, redis_url, "127.0.0.1", fast_path)


@pytest.fixture(scope="module")
def distrustful_server(
    database_url: str, redis_url: str, fast_path: bool
) -> Iterator[ServerProcess]:
    """Trusts only a proxy that is not us: our X-Forwarded-For is a spoof."""
    yield from trusting(database_url, redis_url, "192.0.2.254", fast_path)


@pytest.fixture
def limits(server: ServerProcess) -> Iterator[list[str]]:
    """Client ids created by the test, deleted afterwards."""
    created: list[str] = []
    yield created
    for client_id in created:
        httpx.delete(f"{server.url}/limits/{client_id}", headers=ADMIN)


def create(server: ServerProcess, created: list[str], client_id: str, **limit: float) -> None:
    body = {"client_id": client_id, **limit}
    response = httpx.post(f"{server.url}/limits", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created.append(client_id)


@pytest.fixture
async def connections(server: ServerProcess) -> AsyncIterator[dict[int, list[httpx.AsyncClient]]]:
    """Keep-alive connections by the worker serving them, at least 3 on each of the two."""
    by_worker: dict[int, list[httpx.AsyncClient]] = {}
    opened: list[httpx.AsyncClient] = []
    try:
        for _ in range(60):
            client = httpx.AsyncClient(
                base_url=server.url, limits=httpx.Limits(max_connections=1), timeout=5
            )
            opened.append(client)
            worker = (await client.get("/ready")).json()["worker"]
            by_worker.setdefault(worker, []).append(client)
            if len(by_worker) == 2 and all(len(c) >= 3 for c in by_worker.values()):
                break
        assert len(by_worker) == 2, "the kernel gave every connection to one worker"
        yield by_worker
    finally:
        for client in opened:
            await client.aclose()


async def statuses_per_worker(
    connections: dict[int, list[httpx.AsyncClient]], forwarded_for: str
) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for worker, clients in connections.items():
        response = await clients[0].get(
            "/", params=VIDEO, headers={"X-Forwarded-For": forwarded_for}
        )
        found[worker] = {response.status_code}
    return found


async def test_a_new_limit_reaches_both_workers_within_a_second(
    server: ServerProcess, limits: list[str], connections: dict[int, list[httpx.AsyncClient]]
) -> None:
    client_id = "198.51.100.10"
    assert set().union(*(await statuses_per_worker(connections, client_id)).values()) == {301}
    create(server, limits, client_id, capacity=0, refill_per_second=1)
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        seen = await statuses_per_worker(connections, client_id)
        if all(statuses == {429} for statuses in seen.values()):
            break
    assert all(statuses == {429} for statuses in seen.values()), seen
    assert time.monotonic() - started < 1.0


async def test_the_rightmost_untrusted_forwarded_address_is_the_client(
    server: ServerProcess, limits: list[str]
) -> None:
    create(server, limits, "203.0.113.5", capacity=0, refill_per_second=1)
    await asyncio.sleep(1)
    async with httpx.AsyncClient(base_url=server.url) as client:
        # A proxy appended the real peer (203.0.113.5) to what the client claimed.
        appended = {"X-Forwarded-For": "198.51.100.99, 203.0.113.5"}
        assert (await client.get("/", params=VIDEO, headers=appended)).status_code == 429
        # The blocked client claims to be someone else: the proxy still appends its address.
        spoof = {"X-Forwarded-For": "203.0.113.5, 198.51.100.98"}
        assert (await client.get("/", params=VIDEO, headers=spoof)).status_code == 301
        # A chain through another trusted hop: 127.0.0.1 is skipped.
        hops = {"X-Forwarded-For": "203.0.113.5, 127.0.0.1"}
        assert (await client.get("/", params=VIDEO, headers=hops)).status_code == 429


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    distrustful_server: ServerProcess,
) -> None:
    created = []
    async with httpx.AsyncClient(base_url=distrustful_server.url) as client:
        try:
            for client_id in ("198.51.100.7", "127.0.0.1"):
                body = {"client_id": client_id, "capacity": 0, "refill_per_second": 1}
                response = await client.post("/limits", json=body, headers=ADMIN)
                assert response.status_code == 201
                created.append(client_id)
                await asyncio.sleep(1)
                response = await client.get(
                    "/", params=VIDEO, headers={"X-Forwarded-For": "198.51.100.7"}
                )
                # Blocking the claimed address changes nothing; blocking the peer does.
                assert response.status_code == (301 if client_id == "198.51.100.7" else 429)
        finally:
            for client_id in created:
                await client.delete(f"/limits/{client_id}", headers=ADMIN)


CAPACITY = 20
REFILL = 20.0
SECONDS = 10.0


def same_address(client_id: str) -> Iterator[str]:
    while True:
        yield client_id


def rotating_in_64(client_id: str) -> Iterator[str]:
    """A new address of the /64 for every request, in ever new spellings."""
    prefix = ipaddress.IPv6Network(client_id).network_address
    for number in itertools.count(1):
        address = ipaddress.IPv6Address(int(prefix) + number * 7919).exploded
        yield address if number % 2 else address.upper()


CLIENTS = {
    "ipv4 address": ("198.51.100.{}", same_address),
    "ipv6 client rotating through its /64": ("2001:db8:{}::/64", rotating_in_64),
}


async def test_clients_over_both_workers_are_each_held_to_their_limit_within_15_percent(
    server: ServerProcess,
    limits: list[str],
    connections: dict[int, list[httpx.AsyncClient]],
) -> None:
    """Four clients at once, each limited on its own: an address and a rotating /64, each
    at 2 and at 20 times its limit. Every one is held to its own limit, whatever the others
    send."""
    workers = {id(c): worker for worker, cs in connections.items() for c in cs}
    clients = [client for per_worker in connections.values() for client in per_worker]
    runs = {}
    for kind, (pattern, spellings) in CLIENTS.items():
        for times_the_limit in (2, 20):
            client_id = pattern.format(times_the_limit)
            create(server, limits, client_id, capacity=CAPACITY, refill_per_second=REFILL)
            runs[f"{kind}, {times_the_limit} times the limit"] = (
                spellings(client_id),
                len(clients) / (REFILL * times_the_limit),
                Counter[int](),
                Counter[int](),
            )
    await asyncio.sleep(1)
    started = time.monotonic()

    async def send(client: httpx.AsyncClient, run: str, offset: float) -> None:
        addresses, interval, statuses, by_worker = runs[run]
        due = started + offset
        while due < started + SECONDS:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            forwarded = {"X-Forwarded-For": next(addresses)}
            response = await client.get("/", params=VIDEO, headers=forwarded)
            statuses[response.status_code] += 1
            if response.status_code == 301:
                by_worker[workers[id(client)]] += 1
            due += interval

    await asyncio.gather(
        *(
            send(client, run, i * interval / len(clients))
            for run, (_, interval, _, _) in runs.items()
            for i, client in enumerate(clients)
        )
    )
    expected = CAPACITY + REFILL * (time.monotonic() - started)
    for run, (_, _, statuses, by_worker) in runs.items():
        assert set(statuses) <= {301, 429}, (run, statuses)
        assert statuses[429] > 0, run
        assert len(by_worker) == 2, (run, by_worker)  # both workers admitted some of it
        assert abs(statuses[301] - expected) <= 0.15 * expected, (run, statuses, expected)


async def test_an_emptied_bucket_stays_empty_on_both_workers_when_another_override_lands(
    server: ServerProcess, limits: list[str], connections: dict[int, list[httpx.AsyncClient]]
) -> None:
    emptied, other = "198.51.100.40", "198.51.100.41"
    create(server, limits, emptied, capacity=3, refill_per_second=0.01)
    started = time.monotonic()
    while set().union(*(await statuses_per_worker(connections, emptied)).values()) != {429}:
        assert time.monotonic() - started < 2
    create(server, limits, other, capacity=0, refill_per_second=1)
    started = time.monotonic()
    while set().union(*(await statuses_per_worker(connections, other)).values()) != {429}:
        assert time.monotonic() - started < 2  # landed on both workers
    assert set().union(*(await statuses_per_worker(connections, emptied)).values()) == {429}


async def test_spellings_and_addresses_of_one_ipv6_64_are_one_client(
    server: ServerProcess, limits: list[str], connections: dict[int, list[httpx.AsyncClient]]
) -> None:
    create(server, limits, "2001:db8:77::/48", capacity=4, refill_per_second=0.01)
    await asyncio.sleep(1)
    clients = [client for per_worker in connections.values() for client in per_worker]
    spellings = ["2001:db8:77:1::1", "2001:0db8:0077:0001::1", "2001:DB8:77:1:0:0:0:1"]
    spellings += [f"2001:db8:77:1:{n:x}::{n:x}" for n in range(1, 20)]
    statuses = [
        (
            await clients[n % len(clients)].get(
                "/", params=VIDEO, headers={"X-Forwarded-For": address}
            )
        ).status_code
        for n, address in enumerate(spellings)
    ]
    # 4 in all, give or take what a worker admits before its first settlement answers: one
    # bucket per address would admit every one of them
    assert 4 <= statuses.count(301) <= 8, statuses
    # another /64 of the block is another client
    other = await clients[0].get("/", params=VIDEO, headers={"X-Forwarded-For": "2001:db8:77:2::1"})
    assert other.status_code == 301
