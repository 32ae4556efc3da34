"""Admin operations: history, rollback, safe concurrent edits, JSON decisions, server rules."""

import asyncio

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.support.app import ADMIN, VIDEO

BLOCK = 1000  # the default BALANCER_SEQUENCE_BLOCK the in-process app runs with


async def patch(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.patch("/config", json=body, headers=ADMIN)


async def test_history_lists_versions_newest_first_with_comments(
    client: httpx.AsyncClient,
) -> None:
    await patch(client, cdn_host="cdn2.example.com", comment="new CDN")
    await patch(client, origin_every=5)
    response = await client.get("/config/history", headers=ADMIN)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["version"] for item in items] == [3, 2, 1]
    assert items[1]["comment"] == "new CDN"
    assert (items[0]["cdn_weight"], items[0]["origin_weight"]) == (4, 1)
    assert all(item["created_at"] for item in items)


async def test_history_pages_with_limit_and_before(client: httpx.AsyncClient) -> None:
    for weight in range(1, 6):
        await patch(client, cdn_weight=weight)
    first = (await client.get("/config/history", params={"limit": 2}, headers=ADMIN)).json()
    assert [item["version"] for item in first["items"]] == [6, 5]
    second = (
        await client.get(
            "/config/history", params={"limit": 2, "before": first["next_before"]}, headers=ADMIN
        )
    ).json()
    assert [item["version"] for item in second["items"]] == [4, 3]
    last = (await client.get("/config/history", params={"before": 2}, headers=ADMIN)).json()
    assert ([item["version"] for item in last["items"]], last["next_before"]) == ([1], None)


async def test_history_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/config/history")).status_code == 401


async def test_rollback_makes_old_values_active_as_a_new_version(
    client: httpx.AsyncClient,
) -> None:
    await patch(client, cdn_host="cdn2.example.com")
    response = await client.post("/config/rollback/1", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["cdn_host"]) == (3, "cdn.example.com")
    assert body["comment"] == "rollback to version 1"
    location = (await client.get("/", params={"video": VIDEO})).headers["location"]
    assert location.startswith("http://cdn.example.com/")
    versions = (await client.get("/config/history", headers=ADMIN)).json()["items"]
    assert [item["version"] for item in versions] == [3, 2, 1]


async def test_rollback_to_an_unknown_version_is_404_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/config/rollback/99", headers=ADMIN)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/config")).json()["version"] == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/config/history?before=2147483648"),
        ("POST", "/config/rollback/2147483648"),
        ("POST", "/config/rollback/99999999999999999999"),
    ],
)
async def test_versions_beyond_postgresqls_integers_are_422_not_a_storage_error(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    # Versions are PostgreSQL integers: a larger one is the request's fault, not a 503.
    response = await client.request(method, path, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/config")).json()["version"] == 1


async def test_rollback_needs_the_admin_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/config/rollback/1", headers={"Authorization": "Bearer x"})
    assert response.status_code == 403


async def test_stale_if_match_is_412_and_changes_nothing(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/config")).headers["etag"]
    await patch(client, cdn_weight=5)
    stale = await client.patch(
        "/config", json={"cdn_weight": 7}, headers={**ADMIN, "If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    rollback = await client.post("/config/rollback/1", headers={**ADMIN, "If-Match": etag})
    assert rollback.status_code == 412
    assert (await client.get("/config")).json()["cdn_weight"] == 5


async def test_current_if_match_lets_the_change_through(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/config")).headers["etag"]
    response = await client.patch(
        "/config", json={"cdn_weight": 7}, headers={**ADMIN, "If-Match": etag}
    )
    assert response.status_code == 200
    assert response.headers["etag"] == '"2"'


async def test_parallel_writers_leave_consecutive_versions_and_the_last_write_active(
    client: httpx.AsyncClient,
) -> None:
    writers = 25
    responses = await asyncio.gather(
        *(patch(client, cdn_weight=weight, comment=f"writer {weight}") for weight in range(1, 26))
    )
    assert all(response.status_code == 200 for response in responses)
    assert sorted(r.json()["version"] for r in responses) == list(range(2, writers + 2))
    history = (await client.get("/config/history", params={"limit": 100}, headers=ADMIN)).json()
    assert [item["version"] for item in history["items"]] == list(range(writers + 1, 0, -1))
    last = max(responses, key=lambda r: r.json()["version"]).json()
    active = (await client.get("/config")).json()
    assert (active["version"], active["cdn_weight"]) == (last["version"], last["cdn_weight"])


async def test_balance_returns_the_decision_as_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/balance", json={"video": VIDEO})
    assert response.status_code == 200
    assert response.json() == {
        "redirect_url": "http://cdn.example.com/s1/video/1488/xcg2djHckad.m3u8",
        "target": "cdn",
        "server": "s1",
        "config_version": 1,
        "region": "default",
    }


async def test_balance_refuses_bad_input_like_the_redirect(client: httpx.AsyncClient) -> None:
    foreign = await client.post(
        "/balance", json={"video": "http://s1.origin-cluster@evil.example/"}
    )
    assert foreign.status_code == 400
    assert foreign.json()["code"] == "userinfo-not-allowed"
    missing = await client.post("/balance", json={})
    assert missing.status_code == 422
    assert missing.headers["content-type"] == "application/problem+json"


async def test_server_rule_overrides_the_global_split_for_that_server_only(
    client: httpx.AsyncClient,
) -> None:
    response = await patch(client, server_rules={"s7": {"cdn_weight": 0, "origin_weight": 1}})
    assert response.json()["server_rules"] == {"s7": {"cdn_weight": 0, "origin_weight": 1}}
    s7 = "http://s7.origin-cluster/video/1/a.m3u8"
    for _ in range(20):
        assert (await client.get("/", params={"video": s7})).headers["location"] == s7
    s1 = [(await client.get("/", params={"video": VIDEO})).headers["location"] for _ in range(20)]
    assert s1.count(VIDEO) == 2


async def test_server_rule_split_is_exact_on_its_own(client: httpx.AsyncClient) -> None:
    await patch(client, server_rules={"s8": {"cdn_weight": 1, "origin_weight": 1}})
    s8 = "http://s8.origin-cluster/v.m3u8"
    locations = []
    for n in range(200):
        video = s8 if n % 3 else VIDEO  # interleave other servers' traffic
        location = (await client.get("/", params={"video": video})).headers["location"]
        if video == s8:
            locations.append(location == s8)
    assert abs(sum(locations) - len(locations) / 2) <= 1


async def test_invalid_server_rule_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await patch(client, server_rules={"s7": {"cdn_weight": 0, "origin_weight": 0}})
    assert response.status_code == 422
    assert response.json()["field"] == "origin_weight"
    response = await patch(
        client, server_rules={"bad label": {"cdn_weight": 1, "origin_weight": 0}}
    )
    assert (response.status_code, response.json()["field"]) == (422, "server_rules")


async def put_rule(
    client: httpx.AsyncClient, server: str, body: object, **headers: str
) -> httpx.Response:
    return await client.put(
        f"/config/server-rules/{server}", json=body, headers={**ADMIN, **headers}
    )


async def test_put_server_rule_adds_that_rule_and_serves_it(client: httpx.AsyncClient) -> None:
    await patch(client, cdn_host="cdn2.example.com")
    response = await put_rule(
        client, "s7", {"cdn_weight": 0, "origin_weight": 1, "comment": "s7 off the CDN"}
    )
    assert response.status_code == 200
    assert response.headers["etag"] == '"3"'
    body = response.json()
    assert (body["version"], body["comment"]) == (3, "s7 off the CDN")
    assert body["server_rules"] == {"s7": {"cdn_weight": 0, "origin_weight": 1}}
    assert body["cdn_host"] == "cdn2.example.com"  # the rest of the version is kept
    s7 = "http://s7.origin-cluster/video/1/a.m3u8"
    assert (await client.get("/", params={"video": s7})).headers["location"] == s7
    rule = await client.get("/config/server-rules/s7")
    assert (rule.status_code, rule.headers["etag"]) == (200, '"3"')
    assert rule.json() == {"cdn_weight": 0, "origin_weight": 1}


async def test_concurrent_puts_of_different_rules_without_if_match_all_survive(
    client: httpx.AsyncClient,
) -> None:
    servers = [f"s{n}" for n in range(1, 21)]
    responses = await asyncio.gather(
        *(
            put_rule(client, server, {"cdn_weight": n, "origin_weight": 1})
            for n, server in enumerate(servers, start=1)
        )
    )
    assert [response.status_code for response in responses] == [200] * 20
    assert sorted(r.json()["version"] for r in responses) == list(range(2, 22))
    final = (await client.get("/config")).json()
    assert final["version"] == 21
    assert final["server_rules"] == {
        server: {"cdn_weight": n, "origin_weight": 1} for n, server in enumerate(servers, start=1)
    }


async def test_put_server_rule_replaces_that_rule_and_keeps_the_others(
    client: httpx.AsyncClient,
) -> None:
    await patch(client, server_rules={"s1": {"cdn_weight": 1, "origin_weight": 1}})
    await put_rule(client, "s7", {"cdn_weight": 0, "origin_weight": 1})
    response = await put_rule(client, "s7", {"cdn_weight": 3, "origin_weight": 1})
    assert response.json()["server_rules"] == {
        "s1": {"cdn_weight": 1, "origin_weight": 1},
        "s7": {"cdn_weight": 3, "origin_weight": 1},
    }


async def test_delete_server_rule_removes_only_that_rule(client: httpx.AsyncClient) -> None:
    await patch(
        client,
        server_rules={
            "s1": {"cdn_weight": 1, "origin_weight": 1},
            "s7": {"cdn_weight": 0, "origin_weight": 1},
        },
    )
    response = await client.delete("/config/server-rules/s7", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["comment"]) == (3, "remove the rule of server s7")
    assert body["server_rules"] == {"s1": {"cdn_weight": 1, "origin_weight": 1}}
    assert response.headers["etag"] == '"3"'
    assert (await client.get("/config/server-rules/s7")).status_code == 404


async def test_delete_of_a_rule_that_does_not_exist_is_404_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/config/server-rules/s7", headers=ADMIN)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "server-rule-not-found"
    assert (await client.get("/config")).json()["version"] == 1


async def test_per_rule_writes_need_the_admin_token(client: httpx.AsyncClient) -> None:
    rule = {"cdn_weight": 0, "origin_weight": 1}
    assert (await client.put("/config/server-rules/s7", json=rule)).status_code == 401
    wrong = {"Authorization": "Bearer not-the-admin-token-at-all"}
    assert (
        await client.put("/config/server-rules/s7", json=rule, headers=wrong)
    ).status_code == 403
    assert (await client.delete("/config/server-rules/s7")).status_code == 401
    assert (await client.delete("/config/server-rules/s7", headers=wrong)).status_code == 403
    assert (await client.get("/config")).json()["version"] == 1


async def test_per_rule_writes_honour_if_match(client: httpx.AsyncClient) -> None:
    rule = {"cdn_weight": 0, "origin_weight": 1}
    stale = '"1"'
    await patch(client, cdn_weight=5)
    assert (await put_rule(client, "s7", rule, **{"If-Match": stale})).status_code == 412
    current = await put_rule(client, "s7", rule, **{"If-Match": '"2"'})
    assert current.status_code == 200
    delete = await client.delete("/config/server-rules/s7", headers={**ADMIN, "If-Match": stale})
    assert delete.status_code == 412
    assert (await client.get("/config")).json()["server_rules"] == {"s7": rule}


@pytest.mark.parametrize(
    ("server", "body", "field"),
    [
        ("s7", {"cdn_weight": -1, "origin_weight": 1}, "cdn_weight"),
        ("s7", {"cdn_weight": 0, "origin_weight": 0}, "origin_weight"),
        ("s7", {"cdn_weight": 2_000_000, "origin_weight": 1}, "cdn_weight"),
        ("s7", {"cdn_weight": 1}, "origin_weight"),
        ("s7", {"cdn_weight": "1", "origin_weight": 1}, "cdn_weight"),
        ("s7", {"cdn_weight": None, "origin_weight": 1}, "cdn_weight"),
        ("s7", {"cdn_weight": 1, "origin_weight": 1, "cdn_host": "x.example"}, "cdn_host"),
        ("s7", {"cdn_weight": 1, "origin_weight": 1, "comment": "x" * 1001}, "comment"),
        ("S7", {"cdn_weight": 1, "origin_weight": 1}, "server"),
        ("bad%20label", {"cdn_weight": 1, "origin_weight": 1}, "server"),
        ("-s7", {"cdn_weight": 1, "origin_weight": 1}, "server"),
        ("s" * 64, {"cdn_weight": 1, "origin_weight": 1}, "server"),
    ],
)
async def test_a_bad_rule_or_server_label_is_422_naming_the_field_and_writes_nothing(
    client: httpx.AsyncClient, server: str, body: object, field: str
) -> None:
    response = await put_rule(client, server, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field
    assert (await client.get("/config")).json()["version"] == 1


async def test_delete_with_a_bad_server_label_is_422_naming_the_server(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/config/server-rules/S7", headers=ADMIN)
    assert (response.status_code, response.json()["field"]) == (422, "server")


async def test_server_rule_counts_on_its_own_redis_key_and_leaves_the_global_one_alone(
    client: httpx.AsyncClient, redis_url: str, sequence_key: str
) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await put_rule(client, "s8", {"cdn_weight": 1, "origin_weight": 1})
        global_before = int(await redis.get(sequence_key) or 0)
        assert global_before == 2 * BLOCK  # leased at start-up: the first block and the next
        s8 = "http://s8.origin-cluster/v.m3u8"
        for _ in range(50):
            await client.get("/", params={"video": s8})
        await asyncio.sleep(0.1)
        # one block taken for s8 and the next leased ahead; the global key did not move
        assert int(await redis.get(f"{sequence_key}:s8") or 0) == 2 * BLOCK
        assert int(await redis.get(sequence_key) or 0) == global_before
    finally:
        await redis.aclose()


async def test_balance_takes_the_next_number_of_the_sequence_redirects_use(
    client: httpx.AsyncClient,
) -> None:
    # At 1:1 consecutive numbers alternate between the targets. Interleaved with redirects,
    # decisions that share the redirects' sequence all land on one target and the redirects
    # on the other; with a sequence of their own, or without taking a number, each alternates.
    await patch(client, cdn_weight=1, origin_weight=1)
    redirects, decisions = [], []
    for _ in range(10):
        location = (await client.get("/", params={"video": VIDEO})).headers["location"]
        redirects.append("origin" if location == VIDEO else "cdn")
        decisions.append((await client.post("/balance", json={"video": VIDEO})).json()["target"])
    assert len(set(redirects)) == 1
    assert len(set(decisions)) == 1
    assert redirects[0] != decisions[0]


async def test_a_value_postgresql_refuses_is_422_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await patch(client, cdn_weight=5, comment="a NUL \u0000 PostgreSQL cannot store")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "storage-rejected"
    assert "0x00" in problem["detail"]
    assert (await client.get("/config")).json()["version"] == 1


async def test_an_unexpected_database_error_is_a_logged_500_without_internals(
    client: httpx.AsyncClient, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    connection = await asyncpg.connect(database_url)
    await connection.execute("ALTER TABLE config_versions RENAME TO config_versions_away")
    try:
        response = await patch(client, cdn_weight=5)
    finally:
        await connection.execute("ALTER TABLE config_versions_away RENAME TO config_versions")
        await connection.close()
    assert response.status_code == 500
    problem = response.json()
    assert problem["code"] == "storage-failed"
    assert "config_versions" not in response.text
    assert "UndefinedTable" not in response.text
    logged = capsys.readouterr().err
    assert "request_failed" in logged
    assert "UndefinedTableError" in logged


async def test_put_server_rule_with_a_pool_of_its_own_sends_that_server_there(
    client: httpx.AsyncClient,
) -> None:
    pool = [{"host": "cdn-eu.example.com", "weight": 1}]
    response = await put_rule(
        client, "s9", {"cdn_weight": 1, "origin_weight": 0, "cdn_hosts": pool}
    )
    assert response.status_code == 200
    assert response.json()["server_rules"]["s9"]["cdn_hosts"] == pool
    s9 = "http://s9.origin-cluster/v.m3u8"
    location = (await client.get("/", params={"video": s9})).headers["location"]
    assert location == "http://cdn-eu.example.com/s9/v.m3u8"
    rule = (await client.get("/config/server-rules/s9")).json()
    assert rule == {"cdn_weight": 1, "origin_weight": 0, "cdn_hosts": pool}
    # PUT is the whole rule: without cdn_hosts the server goes back to the global pool
    await put_rule(client, "s9", {"cdn_weight": 1, "origin_weight": 0})
    location = (await client.get("/", params={"video": s9})).headers["location"]
    assert location == "http://cdn.example.com/s9/v.m3u8"


async def test_put_server_rule_with_a_bad_pool_host_is_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    body = {"cdn_weight": 1, "origin_weight": 0, "cdn_hosts": [{"host": "evil/path"}]}
    response = await put_rule(client, "s9", body)
    assert response.status_code == 422
    assert response.json()["field"].startswith("cdn_hosts")
    assert (await client.get("/config")).json()["version"] == 1


async def test_history_lists_a_version_as_get_config_serves_it(client: httpx.AsyncClient) -> None:
    """History items are written from the stored documents, GET /config from the version
    served: the same JSON, for the seeded version (stored before pools, health checks and
    regions existed) as for one that has them all."""
    seeded = (await client.get("/config")).json()
    response = await patch(
        client,
        cdn_hosts=[{"host": "cdn-a.example.com", "weight": 3}, {"host": "cdn-b.example.com"}],
        server_rules={
            "s7": {"cdn_weight": 0, "origin_weight": 1},
            "s8": {
                "cdn_weight": 2,
                "origin_weight": 1,
                "cdn_hosts": [{"host": "cdn-s8.example.com"}],
            },
        },
        down_servers=["s9"],
        cdn_health={"path": "/health", "interval_seconds": 5, "enabled": False},
        rate_limit={"capacity": 10, "refill_per_second": 2.5},
        regions=[
            {
                "name": "eu",
                "countries": ["DE", "FR"],
                "networks": ["10.20.0.0/16", "2001:db8::/32"],
                "cdn_hosts": [{"host": "cdn-fra.example.com", "weight": 2}],
                "cdn_weight": 3,
                "origin_weight": 1,
            },
            {"name": "us", "countries": ["US"], "cdn_hosts": [{"host": "cdn-nyc.example.com"}]},
        ],
        comment="caf\u00e9 \u2713",
    )
    assert response.status_code == 200, response.text
    served = (await client.get("/config")).json()
    history = await client.get("/config/history", params={"limit": 2}, headers=ADMIN)
    items = history.json()["items"]
    actors = [item.pop("actor") for item in items]  # the history's own field
    assert items == [served, seeded]
    assert served == response.json()
    assert actors[0]["name"].startswith("token-")  # a plain token, named by its fingerprint
    assert actors[1] is None  # the seeded version: written by the migration
