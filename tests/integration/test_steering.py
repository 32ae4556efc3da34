"""Content steering in process, on real PostgreSQL and Redis: the manifests players reload,
their order by weight and health, sticky sessions, regions, and what the players report."""

import asyncio
import base64
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from loadtest.fake_cdn import FakeCdn
from tests.support.app import ADMIN, VIDEO

INTERVAL, TIMEOUT, FALL, RISE = 0.4, 0.2, 2, 2
FAST = {
    "enabled": True,
    "interval_seconds": INTERVAL,
    "timeout_seconds": TIMEOUT,
    "fall": FALL,
    "rise": RISE,
}
DOWN_WITHIN = FALL * INTERVAL + TIMEOUT + INTERVAL + 1.0
ON = {"enabled": True, "ttl_seconds": 2}


@pytest.fixture
def cdns() -> Iterator[list[FakeCdn]]:
    servers = [FakeCdn().start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


async def patch(client: httpx.AsyncClient, **values: object) -> dict[str, Any]:
    response = await client.patch("/config", json=values, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def pool(cdns: list[FakeCdn], *weights: int) -> list[dict[str, object]]:
    names = "abc"
    return [
        {"host": cdn.host, "weight": weight, "pathway": f"cdn-{names[index]}"}
        for index, (cdn, weight) in enumerate(zip(cdns, weights, strict=False))
    ]


async def manifest(client: httpx.AsyncClient, kind: str = "hls", **params: str) -> dict[str, Any]:
    response = await client.get(f"/steering/{kind}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def session_of(body: dict[str, Any]) -> str:
    session: str = parse_qs(urlsplit(body["RELOAD-URI"]).query)["session"][0]
    return session


async def reload(client: httpx.AsyncClient, body: dict[str, Any], **params: str) -> dict[str, Any]:
    """What the player gets next: the previous manifest's RELOAD-URI, with what it reports."""
    uri = urlsplit(body["RELOAD-URI"])
    assert uri.path in {"hls", "dash"}
    query = {key: values[0] for key, values in parse_qs(uri.query).items()}
    return await manifest(client, uri.path, **query, **params)


async def test_steering_is_off_by_default_and_answers_404(client: httpx.AsyncClient) -> None:
    config = (await client.get("/config")).json()
    assert config["content_steering"] == {"enabled": False, "ttl_seconds": 10}
    for kind in ("hls", "dash", "tag"):
        response = await client.get(f"/steering/{kind}", params={"video": VIDEO})
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "steering-disabled"


async def test_hls_and_dash_manifests_have_the_specified_shape(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1, 1), content_steering=ON)
    hls = await manifest(client, "hls")
    assert set(hls) == {"VERSION", "TTL", "RELOAD-URI", "PATHWAY-PRIORITY"}
    assert hls["VERSION"] == 1
    assert hls["TTL"] == 2
    assert sorted(hls["PATHWAY-PRIORITY"]) == ["cdn-a", "cdn-b"]
    assert hls["RELOAD-URI"].startswith("hls?session=")
    dash = await manifest(client, "dash")
    assert set(dash) == {
        "VERSION",
        "TTL",
        "RELOAD-URI",
        "SERVICE-LOCATION-PRIORITY",
        "PATHWAY-PRIORITY",  # what ETSI TS 103 998 and dash.js 5 read
    }
    assert dash["RELOAD-URI"].startswith("dash?session=")
    assert sorted(dash["SERVICE-LOCATION-PRIORITY"]) == ["cdn-a", "cdn-b"]
    assert dash["PATHWAY-PRIORITY"] == dash["SERVICE-LOCATION-PRIORITY"]
    response = await client.get("/steering/hls")
    assert response.headers["access-control-allow-origin"] == "*"


async def test_first_manifests_put_heads_in_weight_proportion_exactly(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 3, 1, 1), content_steering=ON)
    heads = [(await manifest(client))["PATHWAY-PRIORITY"] for _ in range(50)]
    assert Counter(order[0] for order in heads) == {"cdn-a": 30, "cdn-b": 10, "cdn-c": 10}
    for order in heads:  # after the head: heaviest first, then as configured
        rest = [pathway for pathway in ("cdn-a", "cdn-b", "cdn-c") if pathway != order[0]]
        assert order == [order[0], *rest]


async def test_a_viewer_keeps_its_head_across_reloads(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1, 1, 1), content_steering=ON)
    first = await manifest(client)
    head = first["PATHWAY-PRIORITY"][0]
    body = first
    for _ in range(10):
        await manifest(client)  # other viewers move the rotation meanwhile
        body = await reload(client, body, _HLS_pathway=head, _HLS_throughput="5000000")
        assert body["PATHWAY-PRIORITY"][0] == head
    assert session_of(body) == session_of(first)  # the same session, re-signed


@pytest.mark.parametrize(
    "forged",
    [
        "garbage",
        "a.b",
        "",
        "x" * 5000,
        "%00",
    ],
)
async def test_forged_or_garbage_session_tokens_are_ignored(
    client: httpx.AsyncClient, cdns: list[FakeCdn], forged: str
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1, 1, 1), content_steering=ON)
    body = await manifest(client, session=forged)
    assert len(body["PATHWAY-PRIORITY"]) == 3


async def test_a_token_edited_to_another_pathway_does_not_verify(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1, 1, 1), content_steering=ON)
    first = await manifest(client)
    token = session_of(first)
    payload, _, mac = token.partition(".")
    text = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    head = first["PATHWAY-PRIORITY"][0]
    other = next(p for p in ("cdn-a", "cdn-b", "cdn-c") if p != head)
    edited = base64.urlsafe_b64encode(text.replace(head, other).encode()).rstrip(b"=").decode()
    heads: Counter[str] = Counter()
    for _ in range(30):
        body = await manifest(client, session=f"{edited}.{mac}")
        heads[body["PATHWAY-PRIORITY"][0]] += 1
    assert len(heads) == 3  # treated as new viewers: the rotation decides, not the token


async def test_a_down_pathway_goes_last_and_its_viewers_move(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    a = cdns[0]
    await patch(client, cdn_hosts=pool(cdns[:2], 1, 1), content_steering=ON, cdn_health=FAST)
    await asyncio.sleep(2 * INTERVAL)
    body = await manifest(client)
    if body["PATHWAY-PRIORITY"][0] != "cdn-a":
        body = await manifest(client)  # the rotation's next head
    assert body["PATHWAY-PRIORITY"] == ["cdn-a", "cdn-b"]
    a.stop()
    started = time.monotonic()
    while True:
        body = await reload(client, body, _HLS_pathway="cdn-a")
        if body["PATHWAY-PRIORITY"] == ["cdn-b", "cdn-a"]:
            break
        assert time.monotonic() - started < DOWN_WITHIN, body
        await asyncio.sleep(0.05)
    for _ in range(5):  # new viewers too
        assert (await manifest(client))["PATHWAY-PRIORITY"] == ["cdn-b", "cdn-a"]
    a.start()
    started = time.monotonic()
    while Counter([(await manifest(client))["PATHWAY-PRIORITY"][0] for _ in range(4)]) != {
        "cdn-a": 2,
        "cdn-b": 2,
    }:
        assert time.monotonic() - started < DOWN_WITHIN + RISE * INTERVAL
        await asyncio.sleep(0.05)
    # The viewer moved to cdn-b stays there while it is healthy.
    for _ in range(3):
        body = await reload(client, body)
        assert body["PATHWAY-PRIORITY"][0] == "cdn-b"


async def test_a_removed_pathway_moves_its_viewers(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1, 1), content_steering=ON)
    body = await manifest(client)
    while body["PATHWAY-PRIORITY"][0] != "cdn-a":
        body = await manifest(client)
    await patch(client, cdn_hosts=[pool(cdns, 1, 1)[1]])
    assert (await reload(client, body))["PATHWAY-PRIORITY"] == ["cdn-b"]


async def test_hosts_without_a_pathway_are_not_steered(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    hosts = pool(cdns, 1, 1)
    del hosts[1]["pathway"]
    config = await patch(client, cdn_hosts=hosts, content_steering=ON)
    assert config["cdn_hosts"][0]["pathway"] == "cdn-a"
    assert "pathway" not in config["cdn_hosts"][1]
    assert (await manifest(client))["PATHWAY-PRIORITY"] == ["cdn-a"]


async def test_a_viewer_in_a_region_is_steered_over_the_regions_pool(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    a, b, c = cdns
    region = {
        "name": "local",
        "networks": ["127.0.0.0/8"],  # the in-process client is 127.0.0.1
        "cdn_hosts": [{"host": c.host, "pathway": "near"}],
        "content_steering": {"enabled": True, "ttl_seconds": 5},
    }
    config = await patch(
        client, cdn_hosts=pool([a, b], 1, 1), content_steering={"enabled": False}, regions=[region]
    )
    assert config["regions"][0]["content_steering"] == {"enabled": True, "ttl_seconds": 5}
    body = await manifest(client)
    assert body["PATHWAY-PRIORITY"] == ["near"]
    assert body["TTL"] == 5
    # A token of another pool (the region's) is no sticky head in the global pool.
    await patch(client, regions=[], content_steering=ON)
    assert (await reload(client, body))["PATHWAY-PRIORITY"][0] in ("cdn-a", "cdn-b")


async def test_a_server_rule_pool_is_steered_with_its_own_settings(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    c = cdns[2]
    rule = {
        "cdn_weight": 1,
        "origin_weight": 0,
        "cdn_hosts": [{"host": c.host, "weight": 1, "pathway": "s7-cdn"}],
        "content_steering": {"enabled": True, "ttl_seconds": 3},
    }
    response = await client.put("/config/server-rules/s7", json=rule, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert (await client.get("/config/server-rules/s7")).json() == rule
    body = await manifest(client, server="s7")
    assert body == {**body, "TTL": 3, "PATHWAY-PRIORITY": ["s7-cdn"]}
    assert body["RELOAD-URI"].endswith("&server=s7")
    # Without the rule's pool, the global one (off here).
    assert (await client.get("/steering/hls", params={"server": "s1"})).status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"_HLS_pathway": "no-such-pathway", "_HLS_throughput": "-5"},
        {"_HLS_pathway": "x" * 5000, "_HLS_throughput": "1e400"},
        {"_HLS_pathway": "\u212a", "_HLS_throughput": "\u0661\u0662"},
        {"_HLS_throughput": "99999999999999999999999"},
        {"server": "not a label", "session": "\x00"},
        {"_DASH_pathway": "", "_DASH_throughput": "NaN"},
    ],
)
async def test_garbage_query_values_are_ignored(
    client: httpx.AsyncClient, cdns: list[FakeCdn], params: dict[str, str]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1), content_steering=ON)
    for kind in ("hls", "dash"):
        response = await client.get(f"/steering/{kind}", params=params)
        assert response.status_code == 200, response.text


async def test_reported_pathways_and_throughput_reach_metrics(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1, 1), content_steering=ON)
    for _ in range(3):
        await manifest(client, _HLS_pathway="cdn-a", _HLS_throughput="3000000")
    # dash.js: every service location, quoted, and a throughput for those it measured
    await manifest(client, "dash", _DASH_pathway='"cdn-a,cdn-b"', _DASH_throughput=",600000")
    await manifest(client, _HLS_pathway="evil-label", _HLS_throughput="3000000")
    deadline = time.monotonic() + 5
    while True:
        text = (await client.get("/metrics")).text
        if 'balancer_steering_requests_total{pathway="cdn-a"} 3.0' in text:
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.2)
    assert 'balancer_steering_requests_total{pathway="cdn-b"} 1.0' in text
    assert 'balancer_steering_requests_total{pathway=""} 1.0' in text
    assert "evil-label" not in text
    assert (
        'balancer_steering_throughput_bits_per_second_bucket{le="4000000.0",pathway="cdn-a"} 3.0'
        in text
    )
    assert (
        'balancer_steering_throughput_bits_per_second_bucket{le="2000000.0",pathway="cdn-a"} 0.0'
        in text
    )
    assert 'balancer_steering_throughput_bits_per_second_sum{pathway="cdn-b"} 600000.0' in text


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"content_steering": {"ttl_seconds": 0}}, "content_steering.ttl_seconds"),
        ({"content_steering": {"ttl_seconds": 3601}}, "content_steering.ttl_seconds"),
        ({"content_steering": {"ttl_seconds": 1.5}}, "content_steering.ttl_seconds"),
        ({"content_steering": {"enabled": None}}, "content_steering.enabled"),
        (
            {"cdn_hosts": [{"host": "a.example.com", "pathway": "has space"}]},
            "cdn_hosts[0].pathway",
        ),
        (
            {"cdn_hosts": [{"host": "a.example.com", "pathway": "p" * 65}]},
            "cdn_hosts[0].pathway",
        ),
        (
            {
                "cdn_hosts": [
                    {"host": "a.example.com", "pathway": "same"},
                    {"host": "b.example.com", "pathway": "same"},
                ]
            },
            "cdn_hosts[1].pathway",
        ),
        (
            {
                "regions": [
                    {
                        "name": "eu",
                        "countries": ["DE"],
                        "cdn_hosts": [{"host": "a.example.com"}],
                        "content_steering": {"ttl_seconds": 4000},
                    }
                ]
            },
            "regions[0].content_steering.ttl_seconds",
        ),
    ],
)
async def test_bad_steering_settings_and_pathways_are_refused_with_422(
    client: httpx.AsyncClient, values: dict[str, object], field: str
) -> None:
    response = await client.patch("/config", json=values, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert field in response.text


async def test_ttl_bounds_are_accepted(client: httpx.AsyncClient) -> None:
    for ttl in (1, 3600):
        config = await patch(client, content_steering={"ttl_seconds": ttl})
        assert config["content_steering"]["ttl_seconds"] == ttl


async def test_settings_and_pathways_are_kept_in_the_history(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 2, 1), content_steering=ON)
    await patch(client, cdn_weight=5)
    response = await client.get("/config/history", params={"limit": 2}, headers=ADMIN)
    history = response.json()["items"]
    for item in history:
        assert item["content_steering"] == ON
        assert [host["pathway"] for host in item["cdn_hosts"]] == ["cdn-a", "cdn-b"]


async def test_the_tag_names_the_balancer_and_the_starting_pathway(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(client, cdn_hosts=pool(cdns, 1, 1), content_steering=ON)
    response = await client.get("/steering/tag", params={"video": VIDEO})
    assert response.status_code == 200, response.text
    tag = response.json()
    assert tag["hls"] == (
        '#EXT-X-CONTENT-STEERING:SERVER-URI="http://balancer/steering/hls?server=s1",'
        f'PATHWAY-ID="{tag["pathway"]}"'
    )
    assert tag["pathway"] in ("cdn-a", "cdn-b")
    assert tag["dash"] == (
        f'<ContentSteering defaultServiceLocation="{tag["pathway"]}" queryBeforeStart="true">'
        "http://balancer/steering/dash?server=s1</ContentSteering>"
    )
    bad = await client.get("/steering/tag", params={"video": "http://evil.example/x.m3u8"})
    assert bad.status_code == 400


async def test_steering_counts_against_the_viewers_rate_limit(
    client: httpx.AsyncClient, cdns: list[FakeCdn]
) -> None:
    await patch(
        client,
        cdn_hosts=pool(cdns, 1),
        content_steering=ON,
        rate_limit={"capacity": 3, "refill_per_second": 0.001},
    )
    statuses = [(await client.get("/steering/hls")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
