"""Each hole of the hardening issue, tried through HTTP on the whole app (real PostgreSQL and
Redis): a clear 4xx problem or a refusal, never a 500, never a bad `Location`, and nothing
written when a configuration change is refused."""

import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from app.domain.config import BalancerConfig
from app.domain.router import Redirect
from app.domain.split import CDN, ORIGIN, Split
from tests.support.app import ADMIN, app_client, app_settings
from tests.support.hostile import assert_safe_location

pytestmark = pytest.mark.usefixtures("initial_config")

SEEDED = BalancerConfig(cdn_host="cdn.example.com", split=Split(9, 1))
NON_ASCII_PORTS = [
    "\N{SUPERSCRIPT TWO}",
    "\N{ARABIC-INDIC DIGIT EIGHT}\N{ARABIC-INDIC DIGIT ZERO}",
    "\N{FULLWIDTH DIGIT EIGHT}",
]
ENCODED_DOT_PATHS = [
    "%2e%2e%2fs2%2fx.m3u8",  # the value as the query decoding leaves it
    "%252e%252e%252fs2%252fx.m3u8",
    "%25252e%25252e%25252fs2%25252fx.m3u8",
    "..%2fs2%2fx.m3u8",
    ".%2e/s2/x.m3u8",
    "%2e./s2/x.m3u8",
    "..;/s2/x.m3u8",
    "..%3b/s2/x.m3u8",
    "a%5c..%5cs2%5cx.m3u8",
    "%c0%ae%c0%ae/s2/x.m3u8",
    "\N{FULLWIDTH FULL STOP}\N{FULLWIDTH FULL STOP}/s2/x.m3u8",
    "..%3F/s2/x.m3u8",
    "..%253F/s2/x.m3u8",
    "..%23/s2/x.m3u8",
    "%u002e%u002e/s2/x.m3u8",
]


def check_location(response: httpx.Response) -> None:
    """A redirect for server s1 is safe by the same rule the property tests use."""
    location = response.headers["location"]
    target = CDN if location.startswith("http://cdn.example.com/") else ORIGIN
    assert_safe_location(Redirect(target, location, response.status_code, "s1", 1), SEEDED)


async def config_version(client: httpx.AsyncClient) -> int:
    version = (await client.get("/config")).json()["version"]
    assert isinstance(version, int)
    return version


async def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers
    assert response.json()["code"] == code


# --- video URLs -------------------------------------------------------------------------


@pytest.mark.parametrize("port", NON_ASCII_PORTS)
async def test_a_port_in_non_ascii_digits_is_400_invalid_port(
    client: httpx.AsyncClient, port: str
) -> None:
    video = f"http://s1.origin-cluster:{port}/v.m3u8"
    for query in (f"video={video}", "video=" + quote(video, safe="")):
        await assert_refused(await client.get("/?" + query), 400, "invalid-port")
    response = await client.post("/balance", json={"video": video})
    await assert_refused(response, 400, "invalid-port")


@pytest.mark.parametrize("path", ENCODED_DOT_PATHS)
async def test_a_path_with_dot_segments_at_any_encoding_level_is_400_invalid_path(
    client: httpx.AsyncClient, path: str
) -> None:
    video = f"http://s1.origin-cluster/{path}"
    deeper = f"http://s1.origin-cluster/{quote(path, safe='/')}"  # one more level
    for value in (video, deeper):  # encoded for the query, whose decoding gives `value`
        response = await client.get("/?video=" + quote(value, safe=""))
        await assert_refused(response, 400, "invalid-path")
    response = await client.post("/balance", json={"video": video})
    await assert_refused(response, 400, "invalid-path")


async def test_a_lone_surrogate_in_post_balance_is_400_invalid_characters(
    client: httpx.AsyncClient,
) -> None:
    body = '{"video": "http://s1.origin-cluster/a\\ud800.m3u8"}'
    response = await client.post(
        "/balance", content=body, headers={"Content-Type": "application/json"}
    )
    await assert_refused(response, 400, "invalid-characters")


async def test_look_alike_letters_in_the_video_host_are_400(client: httpx.AsyncClient) -> None:
    for host in (
        "s\N{KELVIN SIGN}.origin-cluster",
        "s1.origin-clu\N{LATIN SMALL LETTER LONG S}ter",
    ):
        response = await client.get("/", params={"video": f"http://{host}/v.m3u8"})
        await assert_refused(response, 400, "host-not-allowed")


async def test_the_first_non_empty_video_parameter_wins(client: httpx.AsyncClient) -> None:
    first = "http://s1.origin-cluster/first.m3u8"
    for query in (
        f"video={quote(first, safe='')}&video=http://evil.example/x",
        f"video=&video={quote(first, safe='')}&video=http://s2.origin-cluster/second.m3u8",
    ):
        response = await client.get("/?" + query)
        assert response.status_code == 301
        assert response.headers["location"] == "http://cdn.example.com/s1/first.m3u8"


async def test_a_raw_question_mark_after_an_encoded_video_url_stays_out_of_it(
    client: httpx.AsyncClient,
) -> None:
    video = quote("http://s1.origin-cluster/v.m3u8?t=1", safe="")
    response = await client.get(f"/?video={video}&utm=a?b/../../x&exp=2")
    assert response.status_code == 301
    assert response.headers["location"] == "http://cdn.example.com/s1/v.m3u8?t=1"
    check_location(response)


async def test_an_unencoded_video_url_keeps_its_own_query(client: httpx.AsyncClient) -> None:
    response = await client.get("/?video=http://s1.origin-cluster/v.m3u8?token=a&exp=1")
    assert response.headers["location"] == "http://cdn.example.com/s1/v.m3u8?token=a&exp=1"


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domains",
    [
        ["com"],
        ["co.uk"],
        ["github.io"],
        ["0.0.1"],
        ["127.0.0.1"],
        ["origin-cluster", "origin-cluster"],
        ["origin-clu\N{LATIN SMALL LETTER LONG S}ter"],
        ["\N{CYRILLIC SMALL LETTER ES}dn-origin"],
    ],
)
async def test_origin_domains_that_defeat_the_allow_list_are_422_and_change_nothing(
    client: httpx.AsyncClient, domains: list[str]
) -> None:
    response = await client.patch("/config", json={"origin_domains": domains}, headers=ADMIN)
    await assert_refused(response, 422, "invalid-config")
    assert response.json()["field"] == "origin_domains"
    assert await config_version(client) == 1
    evil = await client.get("/", params={"video": "https://evil.com/v.m3u8"})
    await assert_refused(evil, 400, "host-not-allowed")
    loopback = await client.get("/", params={"video": "http://127.0.0.1:6379/v.m3u8"})
    await assert_refused(loopback, 400, "host-not-allowed")


@pytest.mark.parametrize(
    "cdn_host",
    [
        "cdn.example\N{LATIN SMALL LETTER LONG S}.com",
        "cdn.\N{LATIN SMALL LETTER DOTLESS I}mages.example.com",
        "cdn.example.\N{KELVIN SIGN}z",
        *(f"cdn.example.com:{port}" for port in NON_ASCII_PORTS),
        "cdn.example.com:" + "9" * 5000,
    ],
)
async def test_a_cdn_host_with_non_ascii_letters_or_digits_is_422_and_changes_nothing(
    client: httpx.AsyncClient, cdn_host: str
) -> None:
    response = await client.patch("/config", json={"cdn_host": cdn_host}, headers=ADMIN)
    await assert_refused(response, 422, "invalid-config")
    assert response.json()["field"] == "cdn_host"
    assert await config_version(client) == 1
    redirect = await client.get("/", params={"video": "http://s1.origin-cluster/v.m3u8"})
    assert redirect.headers["location"].startswith("http://cdn.example.com/s1/")


async def test_a_pool_host_gets_the_same_host_rules_as_cdn_host(client: httpx.AsyncClient) -> None:
    pool = [
        {"host": "cdn-a.example.com", "weight": 1},
        {"host": "cdn-b.example\N{LATIN SMALL LETTER LONG S}.com", "weight": 1},
    ]
    response = await client.patch("/config", json={"cdn_hosts": pool}, headers=ADMIN)
    await assert_refused(response, 422, "invalid-config")
    assert response.json()["field"] == "cdn_hosts[1].host"
    assert await config_version(client) == 1


@pytest.mark.parametrize(
    "if_match",
    [
        '"\N{SUPERSCRIPT TWO}"',
        '"1\N{SUPERSCRIPT ONE}"',
        '"\N{ARABIC-INDIC DIGIT ONE}"',
        '"\N{FULLWIDTH DIGIT ONE}"',
        '"' + "1" * 5000 + '"',
        '"99999999999"',
    ],
)
async def test_if_match_that_names_no_version_is_412_and_changes_nothing(
    client: httpx.AsyncClient, if_match: str
) -> None:
    # Header bytes are read as Latin-1: b"\xb2" arrives as the superscript two itself.
    raw = if_match.encode("latin-1" if max(if_match) <= "\xff" else "utf-8")
    headers = {b"Authorization": ADMIN["Authorization"].encode(), b"If-Match": raw}
    for response in (
        await client.patch("/config", json={"cdn_weight": 4}, headers=headers),
        await client.post("/config/rollback/1", headers=headers),
    ):
        await assert_refused(response, 412, "precondition-failed")
    assert await config_version(client) == 1


async def test_a_bad_server_label_is_422_whatever_if_match_says(client: httpx.AsyncClient) -> None:
    # RFC 9110 13.2.2: preconditions count only for a request that would otherwise succeed.
    headers = {**ADMIN, "If-Match": '"not a version"'}
    rule = {"cdn_weight": 0, "origin_weight": 1}
    for response in (
        await client.put("/config/server-rules/S7", json=rule, headers=headers),
        await client.delete("/config/server-rules/S7", headers=headers),
    ):
        await assert_refused(response, 422, "invalid-config")
        assert response.json()["field"] == "server"
    assert await config_version(client) == 1


# --- stored versions the current rules refuse -------------------------------------------


async def insert_version(
    database_url: str, version: int, *, cdn_host: str, origin_domains: list[str]
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO config_versions (version, cdn_host, cdn_weight, origin_weight,"
            " origin_domains, comment) VALUES ($1, $2, 1, 0, $3, 'written by hand')",
            version,
            cdn_host,
            origin_domains,
        )
    finally:
        await connection.close()


@pytest.fixture
async def client_over_refused_rows(
    database_url: str, redis_url: str, sequence_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app started after two versions the current rules refuse were stored by hand."""
    await insert_version(database_url, 2, cdn_host="cdn.example.com", origin_domains=["com"])
    await insert_version(
        database_url,
        3,
        cdn_host="cdn.example\N{LATIN SMALL LETTER LONG S}.com",
        origin_domains=["origin-cluster"],
    )
    settings = app_settings(database_url, redis_url, sequence_key)
    async with app_client(settings, httpx.ASGITransport) as client:
        yield client


async def test_a_refused_stored_version_does_not_stop_start_up_or_get_served(
    client_over_refused_rows: httpx.AsyncClient,
) -> None:
    client = client_over_refused_rows
    config = (await client.get("/config")).json()
    assert config["version"] == 3
    assert (config["cdn_host"], config["origin_domains"]) == ("cdn.example.com", ["origin-cluster"])
    assert "refused" in config["comment"]
    assert "serving the values of version 1" in config["comment"]
    assert (await client.get("/ready")).json()["status"] == "ok"
    evil = await client.get("/", params={"video": "https://evil.com/v.m3u8"})
    await assert_refused(evil, 400, "host-not-allowed")
    redirect = await client.get("/", params={"video": "http://s1.origin-cluster/v.m3u8"})
    assert redirect.status_code == 301
    check_location(redirect)


async def test_an_admin_can_write_over_a_refused_stored_version(
    client_over_refused_rows: httpx.AsyncClient,
) -> None:
    client = client_over_refused_rows
    headers = {**ADMIN, "If-Match": '"3"'}
    response = await client.patch("/config", json={"cdn_weight": 4}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 4
    assert response.json()["cdn_host"] == "cdn.example.com"
    history = await client.get("/config/history", headers=ADMIN)
    assert [item["version"] for item in history.json()["items"]] == [4, 3, 2, 1]
    rollback = await client.post("/config/rollback/2", headers=ADMIN)
    await assert_refused(rollback, 422, "invalid-config")
    assert json.loads(rollback.text)["field"] == "origin_domains"
    assert await config_version(client) == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"server_rules": [1]}, "server_rules"),
        (
            {"server_rules": {"s1": {"cdn_weight": "1", "origin_weight": 1}}},
            "server_rules.s1.cdn_weight",
        ),
        (
            {"server_rules": {"s1": {"cdn_weight": 1, "origin_weight": 1, "x": 1}}},
            "server_rules.s1.x",
        ),
        ({"server_rules": {"s1": {"cdn_weight": 1}}}, "server_rules.s1.origin_weight"),
        ({"regions": {"eu": {}}}, "regions"),
        ({"regions": [{"name": "eu", "cdn_hosts": "cdn.example.com"}]}, "regions.0.cdn_hosts"),
        ({"regions": [{"name": "eu", "cdn_hosts": [], "networks": [7]}]}, "regions.0.networks.0"),
    ],
)
async def test_a_long_field_of_the_wrong_shape_is_422_naming_where_and_writes_nothing(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    """server_rules and regions are checked entry by entry off the event loop, not by FastAPI:
    the same answer as for any other field."""
    response = await client.patch("/config", json=body, headers=ADMIN)
    await assert_refused(response, 422, "invalid-request")
    assert response.json()["field"] == field
    assert await config_version(client) == 1
