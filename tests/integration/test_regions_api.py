"""Regions through the HTTP API on real PostgreSQL and Redis, with the bundled country data
(iptocc) and with a real MaxMind DB file that is replaced while serving."""

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.application.snapshot import ConfigSnapshot
from app.domain.config import BalancerConfig, ConfigVersion
from app.domain.pool import CdnPool
from app.domain.regions import Region
from app.domain.split import Split
from app.infrastructure.geoip import MaxMindCountries
from tests.support.app import ADMIN, VIDEO
from tests.support.fakes import CountingSequence
from tests.support.geoip import write_database

REGIONS: list[dict[str, object]] = [
    {
        "name": "eu",
        "countries": ["DE", "FR"],
        "networks": ["10.20.0.0/16"],
        "cdn_hosts": [{"host": "cdn-fra.example.com", "weight": 1}],
        "cdn_weight": 1,
        "origin_weight": 1,
    },
    {"name": "us", "countries": ["US"], "cdn_hosts": [{"host": "cdn-nyc.example.com"}]},
    {"name": "lab", "networks": ["2001:db8::/32"], "cdn_hosts": [{"host": "cdn-lab.example"}]},
]


@pytest.fixture
async def regional(client: httpx.AsyncClient) -> httpx.AsyncClient:
    response = await client.patch("/config", json={"regions": REGIONS}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return client


async def route(client: httpx.AsyncClient, ip: str) -> httpx.Response:
    return await client.get("/config/route", params={"ip": ip, "video": VIDEO}, headers=ADMIN)


async def test_regions_are_stored_and_read_back_when_patched(
    regional: httpx.AsyncClient,
) -> None:
    body = (await regional.get("/config")).json()
    assert [region["name"] for region in body["regions"]] == ["eu", "us", "lab"]
    assert body["regions"][0]["cdn_weight"] == 1
    assert "cdn_weight" not in body["regions"][1]
    history = (await regional.get("/config/history", headers=ADMIN)).json()
    assert history["items"][0]["regions"] == body["regions"]  # as stored in PostgreSQL


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"countries": ["ZZ"]}, "regions[0].countries"),
        ({"networks": ["10.20.0.0/33"]}, "regions[0].networks"),
        ({"name": "default"}, "regions[0].name"),
        ({"cdn_hosts": []}, "regions[0].cdn_hosts"),
        ({"cdn_hosts": [{"host": "169.254.169.254"}]}, "regions[0].cdn_hosts[0].host"),
        ({"cdn_weight": 5, "origin_weight": None}, "regions[0].origin_weight"),
    ],
)
async def test_invalid_region_is_refused_with_422_naming_the_field_and_nothing_written(
    client: httpx.AsyncClient, change: dict[str, object], field: str
) -> None:
    before = (await client.get("/config")).json()["version"]
    bad = {**REGIONS[0], **change}
    response = await client.patch("/config", json={"regions": [bad]}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field
    assert (await client.get("/config")).json()["version"] == before


async def test_route_names_region_pool_and_target_by_network_country_or_default(
    regional: httpx.AsyncClient,
) -> None:
    by_network = (await route(regional, "10.20.1.2")).json()
    assert by_network["region"] == "eu"
    assert by_network["matched_by"] == "network"
    assert by_network["pool"] == ["http://cdn-fra.example.com"]
    assert by_network["location"].startswith("http://cdn-fra.example.com/s1/")
    by_country = (await route(regional, "8.8.8.8")).json()  # US in iptocc's RIR data
    assert (by_country["country"], by_country["region"]) == ("US", "us")
    assert by_country["matched_by"] == "country"
    assert by_country["country_source"] == "iptocc"
    assert (await route(regional, "2001:db8::7")).json()["region"] == "lab"
    unknown = (await route(regional, "1.0.16.1")).json()  # JP: no region
    assert (unknown["region"], unknown["matched_by"]) == ("default", "default")


async def test_route_takes_no_sequence_number(regional: httpx.AsyncClient) -> None:
    targets = {(await route(regional, "85.214.132.117")).json()["target"] for _ in range(6)}
    assert len(targets) == 1  # the region's split is 1:1: taking numbers would alternate


async def test_route_refuses_a_bad_address_with_422(regional: httpx.AsyncClient) -> None:
    response = await route(regional, "10.20.1.300")
    assert response.status_code == 422
    assert response.json()["code"] == "invalid-address"
    assert (
        await regional.get("/config/route", params={"ip": "8.8.8.8", "video": VIDEO})
    ).status_code == 401


async def test_redirect_and_balance_use_the_connection_address(
    regional: httpx.AsyncClient,
) -> None:
    front = regional._transport.app  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=front, client=("85.214.132.117", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://balancer") as german:
        decisions = [
            (await german.post("/balance", json={"video": VIDEO})).json() for _ in range(4)
        ]
        location = (await german.get("/", params={"video": VIDEO})).headers["location"]
    assert {d["region"] for d in decisions} == {"eu"}
    assert sorted(d["target"] for d in decisions) == ["cdn", "cdn", "origin", "origin"]  # 1:1
    assert location.startswith(("http://cdn-fra.example.com/s1/", "http://s1.origin-cluster"))
    assert (await regional.post("/balance", json={"video": VIDEO})).json()["region"] == "default"


async def test_regions_follow_a_replaced_maxmind_file(tmp_path: Path) -> None:
    path = tmp_path / "countries.mmdb"
    write_database(path, {"DE": ["85.214.0.0/16"]})
    countries = MaxMindCountries(path)
    snapshot = ConfigSnapshot(countries)
    countries.on_reload.append(snapshot.forget_regions)
    pools = {name: Region(name, CdnPool.single(f"cdn-{name}.example.com")) for name in "ab"}
    config = BalancerConfig(
        cdn_host="cdn.example.com",
        split=Split(1, 0),
        regions=(
            Region("de", pools["a"].pool, countries=("DE",)),
            Region("fr", pools["b"].pool, countries=("FR",)),
        ),
    )
    snapshot.offer(ConfigVersion(1, config, datetime.now(UTC)))
    sequence = CountingSequence()
    assert snapshot.router.redirect(VIDEO, sequence.next, "85.214.1.1").region == "de"
    write_database(path, {"FR": ["85.214.0.0/16"]})
    assert countries.reload_if_changed()
    assert snapshot.router.redirect(VIDEO, sequence.next, "85.214.1.1").region == "fr"
    await countries.stop()
