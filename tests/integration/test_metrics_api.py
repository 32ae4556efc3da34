"""`/metrics` and `/stats` of the whole app in process, on real PostgreSQL and Redis."""

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtest.fake_cdn import FakeCdn
from tests.support.app import ADMIN, VIDEO, app_client, app_settings
from tests.support.proxy import CuttableProxy

METRICS_TOKEN = "Hq3vNc8RtZx5LmW2pYb7KdF4sJg9TeU6"
OTHER = "http://elsewhere.example/v.m3u8"


async def redirects(client: httpx.AsyncClient, count: int, video: str = VIDEO) -> None:
    for _ in range(count):
        await client.get("/", params={"video": video})


async def stats_when(client: httpx.AsyncClient, total: int) -> dict[str, Any]:
    """`/stats` once it shows `total` redirects (workers flush once a second)."""
    body: dict[str, Any] = {}
    for _ in range(50):
        response = await client.get("/stats", headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["total"] == total:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"/stats never showed {total}: {body}")


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_stats_count_redirects_and_refusals_since_the_last_reset(
    client: httpx.AsyncClient,
) -> None:
    await redirects(client, 20)
    await redirects(client, 2, OTHER)

    body = await stats_when(client, 20)

    assert body["scope"] == "cluster"
    assert body["by_target"] == {"cdn": 18, "origin": 2}
    assert body["by_server"] == {"s1": 20}
    assert body["by_cdn_host"] == {"cdn.example.com": 18}
    assert body["by_region"] == {"default": 20}
    assert body["rejected"] == {"host-not-allowed": 2}
    assert body["rate_limited"] == 0
    assert body["configured_origin_share"] == 0.1
    assert body["achieved_origin_share"] == 0.1
    assert body["requests_per_second"] >= 0


async def test_reset_starts_the_counts_again_from_zero(client: httpx.AsyncClient) -> None:
    await redirects(client, 5)
    before = await stats_when(client, 5)

    reset = await client.post("/stats/reset", headers=ADMIN)
    after = await stats_when(client, 0)
    await redirects(client, 3)
    again = await stats_when(client, 3)

    assert reset.status_code == 204
    assert after["by_target"] == {"cdn": 0, "origin": 0}
    assert after["since"] > before["since"]
    assert again["since"] == after["since"]


async def test_a_real_server_shows_after_5000_junk_servers_and_a_reset_starts_afresh(
    client: httpx.AsyncClient,
) -> None:
    for number in range(5000):  # valid hosts under the allowed origin domain
        await client.get("/", params={"video": f"http://junk{number}.origin-cluster/v.m3u8"})
    await redirects(client, 40, "http://s9.origin-cluster/v.m3u8")
    flooded = await stats_when(client, 5040)

    reset = await client.post("/stats/reset", headers=ADMIN)
    await stats_when(client, 0)
    await redirects(client, 3, "http://s7.origin-cluster/v.m3u8")
    again = await stats_when(client, 3)

    assert len(flooded["by_server"]) <= 2000
    error = flooded["by_server_error"]
    assert error < 10  # each junk label was seen once: what was dropped weighs little
    assert 40 <= flooded["by_server"]["s9"] <= 40 + error
    assert next(iter(flooded["by_server"])) == "s9"  # heaviest first
    assert reset.status_code == 204
    assert (again["by_server"], again["by_server_error"]) == ({"s7": 3}, 0)


async def test_stats_show_what_steered_players_reported_by_pathway(
    client: httpx.AsyncClient,
) -> None:
    """The console's live view reads `/stats`: players' steering reports reach it, cluster
    wide, as they reach `/metrics`."""
    cdns = [FakeCdn().start() for _ in range(2)]
    try:
        hosts = [
            {"host": cdn.host, "weight": 1, "pathway": name}
            for cdn, name in zip(cdns, ("cdn-a", "cdn-b"), strict=True)
        ]
        patched = await client.patch(
            "/config",
            json={"cdn_hosts": hosts, "content_steering": {"enabled": True, "ttl_seconds": 2}},
            headers=ADMIN,
        )
        assert patched.status_code == 200, patched.text
        for throughput in ("3000000", "5000000"):
            params = {"_HLS_pathway": "cdn-a", "_HLS_throughput": throughput}
            assert (await client.get("/steering/hls", params=params)).status_code == 200
        await client.get("/steering/hls", params={"_HLS_pathway": "cdn-a"})
        await client.get("/steering/dash", params={"_DASH_pathway": '"cdn-b"'})
        await client.get("/steering/hls", params={"_HLS_pathway": "evil-label"})

        body: dict[str, Any] = {}
        for _ in range(50):  # workers flush once a second
            body = (await client.get("/stats", headers=ADMIN)).json()
            if body["steering"].get("cdn-a", {}).get("requests") == 3:
                break
            await asyncio.sleep(0.1)
    finally:
        for cdn in cdns:
            cdn.stop()

    assert body["steering"] == {
        "cdn-a": {"requests": 3, "throughput_reports": 2, "throughput_bps_mean": 4000000.0},
        "": {"requests": 1, "throughput_reports": 0, "throughput_bps_mean": None},
        "cdn-b": {"requests": 1, "throughput_reports": 0, "throughput_bps_mean": None},
    }
    assert list(body["steering"]) == ["cdn-a", "", "cdn-b"]  # busiest first
    assert body["total"] == 0  # steering manifests are not redirects


async def test_stats_and_reset_need_the_admin_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/stats")).status_code == 401
    assert (await client.post("/stats/reset")).status_code == 401
    wrong = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert (await client.get("/stats", headers=wrong)).status_code == 403


async def metrics_when(client: httpx.AsyncClient, total: int) -> httpx.Response:
    """`/metrics` once it shows `total` redirects (workers write their figures each second)."""
    for _ in range(100):
        response = await client.get("/metrics")
        found = samples(response.text, "balancer_redirects_total")
        if sum(found.values()) == total:
            return response
        await asyncio.sleep(0.1)
    raise AssertionError(f"/metrics never showed {total} redirects")


async def test_metrics_are_open_without_a_metrics_token(client: httpx.AsyncClient) -> None:
    await redirects(client, 10)

    response = await metrics_when(client, 10)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text, "balancer_redirects_total")
    assert sum(found.values()) == 10
    assert (
        found[
            (
                ("cdn_host", "cdn.example.com"),
                ("region", "default"),
                ("status", "301"),
                ("target", "cdn"),
            )
        ]
        == 9
    )
    assert samples(response.text, "balancer_config_version")[()] >= 1
    assert samples(response.text, "balancer_sequence_degraded")[()] == 0
    assert samples(response.text, "balancer_configured_origin_share")[()] == 0.1
    assert samples(response.text, "balancer_workers")[()] == 1
    assert samples(response.text, "balancer_cdn_probe_round_failures_total") == {(): 0}
    assert samples(response.text, "balancer_redirect_duration_seconds_count")
    assert samples(response.text, "process_resident_memory_bytes")


async def test_metrics_need_the_metrics_token_when_one_is_set(
    database_url: str, redis_url: str, sequence_key: str, initial_config: None
) -> None:
    settings = app_settings(database_url, redis_url, sequence_key, metrics_token=(METRICS_TOKEN,))
    async with app_client(settings) as client:
        missing = await client.get("/metrics")
        admin = await client.get("/metrics", headers=ADMIN)
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        document = (await client.get("/openapi.json")).json()

    # /docs offers the metrics token for /metrics, not the admin token
    assert document["paths"]["/metrics"]["get"]["security"] == [{"metricsToken": []}]
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert admin.status_code == 403
    assert right.status_code == 200
    assert "balancer_config_version" in right.text


async def test_stats_answer_for_this_instance_only_while_redis_is_down(
    database_url: str, redis_url: str, sequence_key: str, initial_config: None
) -> None:
    proxy = CuttableProxy.for_url(redis_url)
    await proxy.start()
    settings = app_settings(database_url, proxy.proxied(redis_url), sequence_key)
    try:
        async with app_client(settings) as client:
            await redirects(client, 12)
            await stats_when(client, 12)
            await proxy.cut()
            await redirects(client, 8)
            for _ in range(100):  # until a flush reaches the worker's file, not Redis
                response = await client.get("/stats", headers=ADMIN)
                if response.json()["total"] == 20:
                    break
                await asyncio.sleep(0.1)
            reset = await client.post("/stats/reset", headers=ADMIN)
            await proxy.restore()
            recovered = await stats_when(client, 20)  # the outage's counts arrive late
    finally:
        await proxy.close()

    body = response.json()
    assert response.status_code == 200
    assert body["scope"] == "instance"
    assert body["total"] == 20
    assert "this instance only" in body["note"]
    assert reset.status_code == 503
    assert reset.json()["code"] == "stats-unavailable"
    assert recovered["scope"] == "cluster"


async def test_nothing_is_counted_while_metrics_are_off(
    database_url: str, redis_url: str, sequence_key: str, initial_config: None
) -> None:
    settings = app_settings(database_url, redis_url, sequence_key, metrics=False)
    async with app_client(settings) as client:
        await redirects(client, 5)
        await asyncio.sleep(1.2)
        stats = await client.get("/stats", headers=ADMIN)
        metrics = await client.get("/metrics")

    assert stats.status_code == 404
    assert stats.json()["code"] == "metrics-disabled"
    assert metrics.status_code == 200
    assert samples(metrics.text, "balancer_redirects_total") == {}
    assert samples(metrics.text, "balancer_config_version")[()] >= 1


async def test_openapi_documents_metrics_stats_and_their_problems(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert "text/plain" in next(iter(paths["/metrics"]["get"]["responses"]["200"]["content"]))
    stats = paths["/stats"]["get"]["responses"]
    reset = paths["/stats/reset"]["post"]["responses"]
    for responses in (stats, reset):
        for status in ("401", "403", "404", "503"):
            assert "application/problem+json" in responses[status]["content"]
    assert "204" in reset
    schema = (await client.get("/openapi.json")).json()["components"]["schemas"]["StatsBody"]
    assert {"scope", "since", "total", "by_region", "achieved_origin_share", "steering"} <= set(
        schema["properties"]
    )
