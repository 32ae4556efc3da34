"""Admin operations: history, rollback, safe concurrent edits, JSON decisions, server rules."""

import asyncio

import httpx

from tests.integration.conftest import ADMIN, VIDEO


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
    }


async def test_balance_counts_in_the_split_like_a_redirect(client: httpx.AsyncClient) -> None:
    targets = []
    for n in range(20):
        if n % 2:
            decision = (await client.post("/balance", json={"video": VIDEO})).json()
            targets.append(decision["target"])
        else:
            location = (await client.get("/", params={"video": VIDEO})).headers["location"]
            targets.append("origin" if location == VIDEO else "cdn")
    assert targets.count("origin") == 2


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
