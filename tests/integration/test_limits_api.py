import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.support.app import ADMIN, VIDEO, app_client, app_settings

pytestmark = pytest.mark.usefixtures("initial_config", "no_limits")


@pytest.fixture
async def no_limits(database_url: str) -> AsyncIterator[None]:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("DELETE FROM rate_limits")
        yield
        await connection.execute("DELETE FROM rate_limits")
    finally:
        await connection.close()


async def create(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/limits", json=body, headers=ADMIN)


async def until_limited(client: httpx.AsyncClient, path: str = "/") -> httpx.Response:
    """The first 429 for the in-process client (127.0.0.1), waiting for the change to land."""
    for _ in range(100):
        if path == "/":
            response = await client.get("/", params={"video": VIDEO})
        else:
            response = await client.post(path, json={"video": VIDEO})
        if response.status_code == 429:
            return response
        await asyncio.sleep(0.02)
    raise AssertionError("never limited")


# --- CRUD --------------------------------------------------------------------------------


async def test_create_answers_201_with_the_stored_limit(client: httpx.AsyncClient) -> None:
    response = await create(
        client, client_id="203.0.113.7", capacity=10, refill_per_second=1.5, comment="noisy"
    )
    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in ("client_id", "capacity", "refill_per_second", "comment")} == {
        "client_id": "203.0.113.7",
        "capacity": 10,
        "refill_per_second": 1.5,
        "comment": "noisy",
    }
    assert (await client.get("/limits/203.0.113.7", headers=ADMIN)).json() == body


async def test_the_same_client_id_again_is_409_whatever_its_spelling(
    client: httpx.AsyncClient,
) -> None:
    assert (
        await create(client, client_id="203.0.113.7", capacity=1, refill_per_second=1)
    ).is_success
    response = await create(client, client_id="203.0.113.7/32", capacity=5, refill_per_second=1)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "limit-exists"
    assert (await client.get("/limits/203.0.113.7", headers=ADMIN)).json()["capacity"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"client_id": "10.0.0.1/8", "capacity": 1, "refill_per_second": 1}, "client_id"),
        ({"client_id": "example.com", "capacity": 1, "refill_per_second": 1}, "client_id"),
        ({"client_id": "10.0.0.1", "capacity": -1, "refill_per_second": 1}, "capacity"),
        ({"client_id": "10.0.0.1", "capacity": 1_000_001, "refill_per_second": 1}, "capacity"),
        ({"client_id": "10.0.0.1", "capacity": "5", "refill_per_second": 1}, "capacity"),
        ({"client_id": "10.0.0.1", "capacity": 1, "refill_per_second": 0}, "refill_per_second"),
        ({"client_id": "10.0.0.1", "capacity": 1, "refill_per_second": 2e6}, "refill_per_second"),
        ({"client_id": "10.0.0.1", "capacity": 1}, "refill_per_second"),
        ({"client_id": "10.0.0.1", "capacity": 1, "refill_per_second": 1, "x": 1}, "x"),
    ],
)
async def test_invalid_limits_get_422_naming_the_field_and_nothing_is_written(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await create(client, **body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field
    assert (await client.get("/limits", headers=ADMIN)).json()["items"] == []


async def test_unknown_client_ids_are_404_for_get_put_and_delete(
    client: httpx.AsyncClient,
) -> None:
    get = await client.get("/limits/192.0.2.1", headers=ADMIN)
    put = await client.put(
        "/limits/192.0.2.1", json={"capacity": 1, "refill_per_second": 1}, headers=ADMIN
    )
    delete = await client.delete("/limits/192.0.2.1", headers=ADMIN)
    assert [get.status_code, put.status_code, delete.status_code] == [404, 404, 404]
    assert get.json()["code"] == "limit-not-found"
    assert (await client.get("/limits", headers=ADMIN)).json()["items"] == []


@pytest.mark.parametrize(
    "path", ["/limits/10.0.0.0/8", "/limits/10.0.0.0%2F8", "/limits/10.0.0.0%2f8"]
)
async def test_a_block_is_addressed_with_a_raw_or_encoded_slash(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (
        await create(client, client_id="10.0.0.0/8", capacity=3, refill_per_second=1)
    ).is_success
    assert (await client.get(path, headers=ADMIN)).json()["client_id"] == "10.0.0.0/8"
    replaced = await client.put(path, json={"capacity": 4, "refill_per_second": 2}, headers=ADMIN)
    assert replaced.status_code == 200
    assert replaced.json()["capacity"] == 4
    assert replaced.json()["comment"] is None
    assert (await client.delete(path, headers=ADMIN)).status_code == 204
    assert (await client.get(path, headers=ADMIN)).status_code == 404


async def test_put_replaces_the_whole_limit_and_validates_it(client: httpx.AsyncClient) -> None:
    await create(client, client_id="2001:db8::/32", capacity=3, refill_per_second=1, comment="a")
    bad = await client.put(
        "/limits/2001:db8::%2F32", json={"capacity": 5, "refill_per_second": -1}, headers=ADMIN
    )
    assert bad.status_code == 422
    assert bad.json()["field"] == "refill_per_second"
    good = await client.put(
        "/limits/2001:DB8::/32", json={"capacity": 5, "refill_per_second": 0.5}, headers=ADMIN
    )
    assert good.status_code == 200
    assert (good.json()["capacity"], good.json()["refill_per_second"]) == (5, 0.5)
    assert good.json()["comment"] is None


async def test_listing_pages_in_address_order_with_next_after(client: httpx.AsyncClient) -> None:
    ids = ["10.0.0.0/8", "10.0.0.5", "192.0.2.1", "2001:db8::1", "203.0.113.0/24"]
    for client_id in ids:
        await create(client, client_id=client_id, capacity=1, refill_per_second=1)
    seen: list[str] = []
    after = None
    for _ in range(5):
        params = {"limit": 2} | ({"after": after} if after else {})
        page = (await client.get("/limits", params=params, headers=ADMIN)).json()
        seen += [item["client_id"] for item in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == ["10.0.0.0/8", "10.0.0.5", "192.0.2.1", "203.0.113.0/24", "2001:db8::1"]
    bad = await client.get("/limits", params={"after": "nope"}, headers=ADMIN)
    assert bad.status_code == 422
    assert bad.json()["field"] == "client_id"


async def test_every_page_counts_all_stored_overrides_in_total(client: httpx.AsyncClient) -> None:
    empty = (await client.get("/limits", headers=ADMIN)).json()
    for client_id in ("10.0.0.0/8", "10.0.0.5", "192.0.2.1"):
        await create(client, client_id=client_id, capacity=1, refill_per_second=1)
    first = (await client.get("/limits", params={"limit": 2}, headers=ADMIN)).json()
    last = (
        await client.get("/limits", params={"limit": 2, "after": "10.0.0.5"}, headers=ADMIN)
    ).json()
    await client.delete("/limits/10.0.0.5", headers=ADMIN)
    after_delete = (await client.get("/limits", headers=ADMIN)).json()

    assert empty["total"] == 0
    assert (len(first["items"]), first["total"]) == (2, 3)
    assert (len(last["items"]), last["total"]) == (1, 3)
    assert after_delete["total"] == 2


async def test_the_limits_api_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/limits")).status_code == 401
    response = await client.post(
        "/limits",
        json={"client_id": "10.0.0.1", "capacity": 0, "refill_per_second": 1},
        headers={"Authorization": "Bearer wrong"},
    )
    assert response.status_code == 403


# --- enforcement -------------------------------------------------------------------------


async def test_over_the_limit_answers_429_problem_with_retry_after_and_no_location(
    client: httpx.AsyncClient,
) -> None:
    await create(client, client_id="127.0.0.1", capacity=0, refill_per_second=1)
    response = await until_limited(client)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "rate-limited"
    assert int(response.headers["retry-after"]) >= 1
    assert "location" not in response.headers


async def test_a_client_gets_its_capacity_then_429_until_refilled(
    client: httpx.AsyncClient,
) -> None:
    await create(client, client_id="127.0.0.0/8", capacity=0, refill_per_second=1)
    await until_limited(client)
    await client.put(
        "/limits/127.0.0.0/8", json={"capacity": 5, "refill_per_second": 0.2}, headers=ADMIN
    )
    for _ in range(100):  # the replacement lands with a fresh bucket
        if (await client.get("/", params={"video": VIDEO})).status_code == 301:
            break
        await asyncio.sleep(0.02)
    statuses = [(await client.get("/", params={"video": VIDEO})).status_code for _ in range(6)]
    assert statuses == [301] * 4 + [429] * 2
    response = await client.get("/", params={"video": VIDEO})
    assert response.headers["retry-after"] == "5"  # 0.2 tokens a second


async def test_the_most_specific_block_decides_over_the_default(client: httpx.AsyncClient) -> None:
    await client.patch(
        "/config", json={"rate_limit": {"capacity": 0, "refill_per_second": 1}}, headers=ADMIN
    )
    await until_limited(client)
    await create(client, client_id="127.0.0.0/8", capacity=1000, refill_per_second=1000)
    await create(client, client_id="127.0.0.0/16", capacity=0, refill_per_second=1)
    await create(client, client_id="127.0.0.0/24", capacity=1000, refill_per_second=1000)
    for _ in range(100):
        if (await client.get("/", params={"video": VIDEO})).status_code == 301:
            break
        await asyncio.sleep(0.02)
    assert (await client.get("/", params={"video": VIDEO})).status_code == 301
    await client.delete("/limits/127.0.0.0/24", headers=ADMIN)  # now /16 decides
    await until_limited(client)


async def test_post_balance_is_limited_and_admin_health_and_docs_are_not(
    client: httpx.AsyncClient,
) -> None:
    await create(client, client_id="127.0.0.1", capacity=0, refill_per_second=1)
    await until_limited(client, "/balance")
    for path in ("/health", "/ready", "/config", "/openapi.json", "/docs"):
        assert (await client.get(path)).status_code == 200, path
    assert (await client.get("/limits", headers=ADMIN)).status_code == 200


async def test_the_default_limit_is_set_and_switched_off_through_the_config(
    client: httpx.AsyncClient,
) -> None:
    response = await client.patch(
        "/config", json={"rate_limit": {"capacity": 0, "refill_per_second": 2.5}}, headers=ADMIN
    )
    assert response.status_code == 200
    assert response.json()["rate_limit"] == {"capacity": 0, "refill_per_second": 2.5}
    await until_limited(client)
    response = await client.patch("/config", json={"rate_limit": None}, headers=ADMIN)
    assert response.json()["rate_limit"] is None
    assert (await client.get("/", params={"video": VIDEO})).status_code == 301
    bad = await client.patch(
        "/config", json={"rate_limit": {"capacity": 5, "refill_per_second": 0}}, headers=ADMIN
    )
    assert bad.status_code == 422
    assert "refill_per_second" in bad.json()["field"]


# --- Redis down --------------------------------------------------------------------------


async def test_limits_hold_per_worker_and_ready_says_so_when_redis_is_down(
    database_url: str, sequence_key: str
) -> None:
    settings = app_settings(
        database_url,
        "redis://127.0.0.1:1/0",  # nothing listens there
        sequence_key,
        redis_timeout_seconds=0.2,
    )
    async with app_client(settings, httpx.ASGITransport) as client:
        await create(client, client_id="127.0.0.1", capacity=3, refill_per_second=0.01)
        await until_limited(client)  # the override landed; its bucket starts now
        await asyncio.sleep(1.2)  # a settlement was tried and failed
        ready = (await client.get("/ready")).json()
        assert ready["status"] == "degraded"
        assert "per worker" in ready["checks"]["rate_limits"]
        statuses = [(await client.get("/", params={"video": VIDEO})).status_code]
        assert statuses == [429]  # still enforced: never dropped, never an error


# --- what changes leave alone ------------------------------------------------------------


async def test_an_emptied_bucket_stays_empty_when_another_clients_override_is_created(
    client: httpx.AsyncClient,
) -> None:
    await create(client, client_id="127.0.0.1", capacity=3, refill_per_second=0.01)
    await until_limited(client)  # landed, and its 3 tokens spent
    await create(client, client_id="192.0.2.1", capacity=5, refill_per_second=1)
    await create(client, client_id="198.51.100.0/24", capacity=5, refill_per_second=1)
    await asyncio.sleep(1)  # both changes reached this worker ("within a second")
    statuses = [(await client.get("/", params={"video": VIDEO})).status_code for _ in range(3)]
    assert statuses == [429] * 3


# --- client ids and the PUT body ---------------------------------------------------------


@pytest.mark.parametrize("client_id", ["fe80::1%eth0", "fe80::%1/64"])
async def test_a_client_id_with_a_zone_is_422_not_stored_without_it(
    client: httpx.AsyncClient, client_id: str
) -> None:
    response = await create(client, client_id=client_id, capacity=1, refill_per_second=1)
    assert response.status_code == 422
    assert response.json()["field"] == "client_id"
    assert (await client.get("/limits", headers=ADMIN)).json()["items"] == []


async def test_put_takes_back_what_get_answered_edited(client: httpx.AsyncClient) -> None:
    await create(client, client_id="2001:db8::/48", capacity=3, refill_per_second=1, comment="a")
    got = (await client.get("/limits/2001:db8::/48", headers=ADMIN)).json()
    edited = {**got, "capacity": 7, "comment": "b", "updated_at": "2000-01-01T00:00:00Z"}
    response = await client.put("/limits/2001:db8::/48", json=edited, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["capacity"], body["comment"], body["created_at"]) == (7, "b", got["created_at"])
    assert body["updated_at"] > got["updated_at"]


@pytest.mark.parametrize("stamp", [0, 1.5, True, ["2000-01-01T00:00:00Z"]])
async def test_put_refuses_a_timestamp_that_is_not_a_string(
    client: httpx.AsyncClient, stamp: object
) -> None:
    """The document declares the read-only timestamps as date-time strings; a number of
    seconds, which lax parsing would read, is refused like any other body outside it."""
    await create(client, client_id="10.0.0.1", capacity=3, refill_per_second=1)
    body = {"capacity": 9, "refill_per_second": 1, "updated_at": stamp}
    response = await client.put("/limits/10.0.0.1", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert (await client.get("/limits/10.0.0.1", headers=ADMIN)).json()["capacity"] == 3


@pytest.mark.parametrize("other", ["2001:db8::/64", "2001:db8:1::/48", "10.0.0.1"])
async def test_put_with_another_client_id_in_the_body_is_422(
    client: httpx.AsyncClient, other: str
) -> None:
    await create(client, client_id="2001:db8::/48", capacity=3, refill_per_second=1)
    body = {"client_id": other, "capacity": 9, "refill_per_second": 1}
    response = await client.put("/limits/2001:db8::/48", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["field"] == "client_id"
    assert (await client.get("/limits/2001:db8::/48", headers=ADMIN)).json()["capacity"] == 3
    same = await client.put(
        "/limits/2001:db8::/48", json={**body, "client_id": "2001:0DB8::/48"}, headers=ADMIN
    )
    assert same.status_code == 200  # another spelling of the same client id


@pytest.mark.parametrize("method", ["PUT", "DELETE", "POST", "PATCH", "OPTIONS"])
async def test_the_limits_history_answers_405_with_allow_get_not_the_override_routes(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, "/limits/history", json={}, headers=ADMIN)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET"
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(("before", "status"), [(2**63 - 1, 200), (2**63, 422), (0, 422)])
async def test_the_limits_history_cursor_is_checked_against_the_stored_id_range(
    client: httpx.AsyncClient, before: int, status: int
) -> None:
    """Beyond a bigint the database would refuse the query; the API answers 422 first."""
    response = await client.get("/limits/history", params={"before": before}, headers=ADMIN)
    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["field"] == "query.before"
