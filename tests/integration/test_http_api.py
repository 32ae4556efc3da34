import httpx
import pytest

from app.presentation.http.auth import fingerprint
from tests.conftest import ADMIN_TOKEN
from tests.integration.conftest import ADMIN, VIDEO

pytestmark = pytest.mark.usefixtures("initial_config")


async def test_redirect_answers_301_to_the_cdn_with_no_store(client: httpx.AsyncClient) -> None:
    response = await client.get("/", params={"video": VIDEO})
    assert response.status_code == 301
    assert response.headers["location"] == "http://cdn.example.com/s1/video/1488/xcg2djHckad.m3u8"
    assert response.headers["cache-control"] == "no-store"


async def test_head_gets_the_same_redirect(client: httpx.AsyncClient) -> None:
    response = await client.head("/", params={"video": VIDEO})
    assert response.status_code == 301
    assert response.headers["location"].startswith("http://cdn.example.com/s1/")


async def test_bad_video_gets_problem_json_and_no_location(client: httpx.AsyncClient) -> None:
    response = await client.get("/", params={"video": "http://evil.example/x"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers
    assert response.json()["code"] == "host-not-allowed"


async def test_other_methods_on_the_redirect_path_get_405(client: httpx.AsyncClient) -> None:
    response = await client.post("/", params={"video": VIDEO})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_get_config_shows_the_active_version_and_its_etag(client: httpx.AsyncClient) -> None:
    response = await client.get("/config")
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("cdn_host", "cdn_weight", "origin_weight", "version")} == {
        "cdn_host": "cdn.example.com",
        "cdn_weight": 9,
        "origin_weight": 1,
        "version": 1,
    }
    assert response.headers["etag"] == '"1"'


async def test_patch_changes_the_config_and_the_next_redirect(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/config", json={"cdn_host": "https://cdn2.example.com", "origin_weight": 0}, headers=ADMIN
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.headers["etag"] == '"2"'
    redirect = await client.get("/", params={"video": VIDEO})
    assert redirect.headers["location"].startswith("https://cdn2.example.com/s1/")


async def test_any_configured_admin_token_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/config",
        json={"cdn_weight": 4},
        headers={"Authorization": "Bearer second-admin-token-abcdef"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Basic abc"}, 401), ({"Authorization": "Bearer wrong"}, 403)],
)
async def test_patch_without_a_valid_token_changes_nothing(
    client: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await client.patch("/config", json={"cdn_host": "evil.example"}, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/config")).json()["cdn_host"] == "cdn.example.com"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cdn_weight": -1}, "cdn_weight"),
        ({"cdn_weight": 1.5}, "cdn_weight"),
        ({"cdn_weight": "5"}, "cdn_weight"),
        ({"cdn_weight": 0, "origin_weight": 0}, "origin_weight"),
        ({"cdn_host": ""}, "cdn_host"),
        ({"cdn_host": "cdn example.com"}, "cdn_host"),
        ({"cdn_host": "cdn.example.com/path"}, "cdn_host"),
        ({"cdn_host": "cdn..example.com"}, "cdn_host"),
        ({"cdn_host": "ftp://cdn.example.com"}, "cdn_host"),
        ({"cdn_host": None}, "cdn_host"),
        ({"redirect_status": 200}, "redirect_status"),
        ({"unknown": 1}, "unknown"),
        ({}, "body"),
    ],
)
async def test_invalid_patch_is_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.patch("/config", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field
    assert (await client.get("/config")).json()["version"] == 1


async def test_malformed_json_is_422_problem(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/config", content=b"{not json", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_path_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_ready_reports_every_dependency(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok", body
    assert body["config_version"] == 1
    assert body["checks"] == {"config": "ok", "postgres": "ok", "redis": "ok"}
    assert (await client.get("/health")).json() == {"status": "ok"}


async def test_openapi_documents_every_endpoint_including_the_redirect(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"get", "head"} <= set(paths["/"])
    assert paths["/"]["get"]["parameters"][0]["name"] == "video"
    assert {"/config", "/health", "/ready"} <= set(paths)
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/redoc")).status_code == 200


async def origin_pattern(client: httpx.AsyncClient, count: int) -> list[bool]:
    pattern = []
    for _ in range(count):
        response = await client.get("/", params={"video": VIDEO})
        pattern.append(response.headers["location"] == VIDEO)
    return pattern


async def test_one_worker_sends_exactly_one_of_any_ten_consecutive_to_origin_at_9_to_1(
    client: httpx.AsyncClient,
) -> None:
    pattern = await origin_pattern(client, 1500)  # crosses leased blocks of 1000
    assert all(sum(pattern[i : i + 10]) == 1 for i in range(len(pattern) - 9))


async def test_one_worker_sends_exactly_two_of_any_five_consecutive_to_origin_at_3_to_2(
    client: httpx.AsyncClient,
) -> None:
    await client.patch("/config", json={"cdn_weight": 3, "origin_weight": 2}, headers=ADMIN)
    pattern = await origin_pattern(client, 200)
    assert all(sum(pattern[i : i + 5]) == 2 for i in range(len(pattern) - 4))


async def test_every_admin_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    given = await client.get("/config", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/config", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(made.headers["x-request-id"]) == 32


async def test_config_change_is_logged_with_the_admin_fingerprint_never_the_token(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await client.patch("/config", json={"cdn_weight": 4}, headers=ADMIN)
    await client.patch("/config", json={"cdn_weight": 4}, headers={"Authorization": "Bearer nope"})
    logged = capsys.readouterr().err
    change = next(line for line in logged.splitlines() if "config_changed" in line)
    assert f"admin={fingerprint(ADMIN_TOKEN.encode())}" in change
    assert "cdn_weight" in change
    assert "admin_token_rejected" in logged
    assert ADMIN_TOKEN not in logged
