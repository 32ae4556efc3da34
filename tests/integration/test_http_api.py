import base64
import hashlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from urllib.parse import urljoin

import asyncpg
import httpx
import pytest

from app.application.config_versions import MAX_WRITE_ATTEMPTS
from app.main.asgi import create_app
from app.presentation.api.auth import fingerprint
from loadtest.support import scratch_database
from tests.support.app import (
    ADMIN,
    ADMIN_TOKEN,
    SECOND_ADMIN_TOKEN,
    VIDEO,
    Servers,
    app_client,
    app_settings,
)

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


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"])
async def test_other_methods_on_the_redirect_path_get_405(
    client: httpx.AsyncClient, method: str
) -> None:
    response = await client.request(method, "/", params={"video": VIDEO})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "method-not-allowed"
    assert "location" not in response.headers


@pytest.mark.parametrize("status", [302, 307, 308, 301])
async def test_origin_redirect_has_the_configured_status_and_no_store(
    client: httpx.AsyncClient, status: int
) -> None:
    changed = await client.patch(
        "/config",
        json={"cdn_weight": 0, "origin_weight": 1, "redirect_status": status},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    for method in ("GET", "HEAD"):
        response = await client.request(method, "/", params={"video": VIDEO})
        assert response.status_code == status
        assert response.headers["location"] == VIDEO
        assert response.headers["cache-control"] == "no-store"


async def test_origin_domains_change_which_videos_are_accepted(client: httpx.AsyncClient) -> None:
    changed = await client.patch(
        "/config",
        json={"origin_domains": ["video-cluster", "backup.example"], "origin_weight": 0},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["origin_domains"] == ["video-cluster", "backup.example"]

    for host in ("s1.video-cluster", "edge-7.backup.example"):
        response = await client.get("/", params={"video": f"http://{host}/v.m3u8"})
        assert response.status_code == 301, response.text
        assert response.headers["location"] == f"http://cdn.example.com/{host.split('.')[0]}/v.m3u8"
    refused = await client.get("/", params={"video": VIDEO})
    assert refused.status_code == 400
    assert refused.json()["code"] == "host-not-allowed"
    assert "location" not in refused.headers


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
        headers={"Authorization": f"Bearer {SECOND_ADMIN_TOKEN}"},
    )
    assert response.status_code == 200


BAD_CREDENTIALS = [
    ({}, 401, "unauthorized"),
    ({"Authorization": "Basic abc"}, 401, "unauthorized"),
    ({"Authorization": "Bearer "}, 401, "unauthorized"),
    ({"Authorization": "Bearer wrong-token-0123456789"}, 403, "forbidden"),
]
ADMIN_REQUESTS = [
    ("PATCH", "/config", {"cdn_host": "evil.example"}),
    ("GET", "/config/history", None),
    ("POST", "/config/rollback/1", {"comment": "not allowed"}),
]


def assert_refused_admin(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    else:
        assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("request_", ADMIN_REQUESTS)
@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
async def test_admin_endpoints_refuse_a_missing_or_wrong_token_and_change_nothing(
    client: httpx.AsyncClient,
    request_: tuple[str, str, dict[str, object] | None],
    credentials: tuple[dict[str, str], int, str],
) -> None:
    method, path, body = request_
    headers, status, code = credentials
    await client.patch("/config", json={"cdn_weight": 4}, headers=ADMIN)  # something to undo

    response = await client.request(method, path, json=body, headers=headers)

    assert_refused_admin(response, status, code)
    assert "items" not in response.json()
    config = (await client.get("/config")).json()
    assert (config["version"], config["cdn_weight"]) == (2, 4)


METRICS_TOKEN = "Rk5wXb2NqT8zLc4VmY7hGd3JsP9fEa6U"
PATH_PARAMETERS = {"version": "1", "server": "s1", "client_id": "10.0.0.0/8"}
UNREAD_BODIES = {
    "malformed": b"{not json",
    "oversized": b"{" + b" " * (64 * 1024) + b"}",  # four times BALANCER_MAX_BODY_BYTES
}


@pytest.fixture
async def guarded_client(
    database_url: str, redis_url: str, sequence_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a metrics token too, so that every operation that documents 401 needs
    a token."""
    settings = app_settings(database_url, redis_url, sequence_key, metrics_token=(METRICS_TOKEN,))
    async with app_client(settings) as client:
        yield client


async def admin_operations(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation the OpenAPI document says answers 401."""
    document = (await client.get("/openapi.json")).json()
    return [
        (method.upper(), path.format_map(PATH_PARAMETERS))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "401" in operation["responses"]
    ]


@pytest.mark.parametrize("body", UNREAD_BODIES.values(), ids=UNREAD_BODIES)
@pytest.mark.parametrize(
    ("credentials", "status", "code"),
    [({}, 401, "unauthorized"), ({"Authorization": "Bearer not-a-token"}, 403, "forbidden")],
    ids=["missing", "wrong"],
)
async def test_every_admin_endpoint_refuses_a_bad_token_before_it_reads_the_body(
    guarded_client: httpx.AsyncClient,
    body: bytes,
    credentials: dict[str, str],
    status: int,
    code: str,
) -> None:
    operations = await admin_operations(guarded_client)
    assert len(operations) >= 15
    for method, path in operations:
        read: list[bytes] = []

        async def sent(read: list[bytes] = read) -> AsyncIterator[bytes]:
            read.append(body)
            yield body

        headers = {
            **credentials,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }
        response = await guarded_client.request(method, path, content=sent(), headers=headers)

        assert (method, path, response.status_code) == (method, path, status), response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
        assert response.headers["connection"] == "close"
        assert read == [], f"{method} {path} read the body"


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_REQUESTS)
async def test_admin_endpoints_answer_the_admin_token(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, object] | None
) -> None:
    await client.patch("/config", json={"cdn_weight": 4}, headers=ADMIN)
    response = await client.request(method, path, json=body, headers=ADMIN)
    assert response.status_code == 200, response.text


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
        ({"cdn_health": {"load": "least_conn"}}, "cdn_health.load"),
        ({"cdn_health": {"load": "agent"}}, "cdn_health.method"),  # HEAD carries no body
        ({"cdn_health": {"slow_start_seconds": -1}}, "cdn_health.slow_start_seconds"),
        ({"cdn_health": {"slow_start_seconds": 1e9}}, "cdn_health.slow_start_seconds"),
        ({"cdn_health": {"slow_start_seconds": "5"}}, "cdn_health.slow_start_seconds"),
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


async def test_malformed_json_is_400_problem(client: httpx.AsyncClient) -> None:
    response = await client.patch(
        "/config", content=b"{not json", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed-json"


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
    assert body["checks"] == {
        "config": "ok",
        "postgres": "ok",
        "redis": "ok",
        "cdn_health": "ok",
        "rate_limits": "ok",
    }
    assert body["cdn_hosts"] == {"http://cdn.example.com": "up"}
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


# Paths one slash away from a route or mount, and the console's directory by another name.
SLASH_PATHS = ["/config/", "/stats/", "/health/", "/docs/", "/redoc/", "/openapi.json/"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PATCH", "POST"])
async def test_no_answer_carries_a_location_built_from_the_host_header(
    client: httpx.AsyncClient, method: str
) -> None:
    for path in [*SLASH_PATHS, "/limits/", "/admin", "/admin/%2e", "/static-offline-docs/%2e"]:
        response = await client.request(method, path, headers={"Host": "evil.example"})
        location = response.headers.get("location", "")
        assert "evil.example" not in location, (method, path, location)
        assert "//" not in location, (method, path, location)


@pytest.mark.parametrize("path", SLASH_PATHS)
async def test_a_path_with_a_trailing_slash_is_404_problem_not_a_redirect(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, headers=ADMIN)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "location" not in response.headers


async def test_the_console_and_the_docs_are_still_where_they_were(
    client: httpx.AsyncClient,
) -> None:
    console = await client.get("/admin")
    assert (console.status_code, console.headers["location"]) == (308, "admin/")
    for path in ("/admin/", "/admin/app.js", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert (await client.get(path)).status_code == 200, path
    directory = await client.get("/admin/%2e")
    assert directory.status_code == 307
    assert urljoin("http://balancer/admin/%2e", directory.headers["location"]) == (
        "http://balancer/admin/"
    )


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_docs_pages_cannot_be_framed_and_load_nothing_from_elsewhere(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_docs_pages_run_their_own_inline_script_and_no_other(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    directives = dict(
        directive.strip().partition(" ")[::2]
        for directive in response.headers["content-security-policy"].split(";")
    )
    scripts = directives["script-src"].split()
    assert "'unsafe-inline'" not in scripts
    assert "'unsafe-eval'" not in scripts
    for inline in re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in scripts


PATH_VALUES = {"version": "1", "server": "s7", "client_id": "203.0.113.7"}


async def test_operations_that_answer_401_without_a_token_declare_the_admin_token(
    client: httpx.AsyncClient,
) -> None:
    """So Swagger UI offers Authorize and sends the token with "Try it out", and ReDoc names
    the operations that need it; an `authorization` header parameter would be dropped by
    Swagger UI (OpenAPI ignores header parameters of that name)."""
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["adminToken"]["description"],
    }
    declared, refused = set(), set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") == [{"adminToken": []}]:
                declared.add((method, path))
            names = [parameter["name"].lower() for parameter in operation.get("parameters", ())]
            assert "authorization" not in names, (method, path)
            url = path.format(**PATH_VALUES)
            params = {"ip": "203.0.113.7", "video": VIDEO} if path == "/config/route" else {}
            answer = await client.request(method.upper(), url, params=params)
            if answer.status_code == 401:
                refused.add((method, path))
    assert declared == refused
    assert ("patch", "/config") in declared
    assert ("get", "/config") not in declared


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


async def test_config_change_is_logged_with_the_actor_never_the_token(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await client.patch("/config", json={"cdn_weight": 4}, headers=ADMIN)
    await client.patch("/config", json={"cdn_weight": 4}, headers={"Authorization": "Bearer nope"})
    logged = capsys.readouterr().err
    change = next(line for line in logged.splitlines() if "config_changed" in line)
    # A plain token is an admin named after its fingerprint.
    assert f"actor=token-{fingerprint(ADMIN_TOKEN.encode())}" in change
    assert "cdn_weight" in change
    assert "admin_token_rejected" in logged
    assert ADMIN_TOKEN not in logged


@pytest.fixture
async def rival_writer(database_url: str) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Another writer that wins every race for a change commented `contested`: it inserts
    the same version first, in the same statement, so each attempt hits the primary key
    (and is rolled back with it). Yields how many attempts were made."""
    connection = await asyncpg.connect(database_url)
    await connection.execute(
        """
        CREATE SEQUENCE test_rival_attempts;
        CREATE FUNCTION test_rival_writer() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF pg_trigger_depth() = 1 THEN
                PERFORM nextval('test_rival_attempts');
                INSERT INTO config_versions (version, cdn_host, cdn_weight, origin_weight)
                VALUES (NEW.version, 'rival.example.com', 1, 1);
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_rival_writer BEFORE INSERT ON config_versions
        FOR EACH ROW WHEN (NEW.comment = 'contested') EXECUTE FUNCTION test_rival_writer();
        """
    )

    async def attempts() -> int:
        value: int = await connection.fetchval(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_rival_attempts"
        )
        return value

    try:
        yield attempts
    finally:
        await connection.execute(
            "DROP TRIGGER test_rival_writer ON config_versions;"
            " DROP FUNCTION test_rival_writer(); DROP SEQUENCE test_rival_attempts;"
        )
        await connection.close()


async def test_change_is_409_and_writes_nothing_when_rival_writers_keep_winning(
    client: httpx.AsyncClient, rival_writer: Callable[[], Awaitable[int]]
) -> None:
    response = await client.patch(
        "/config", json={"cdn_weight": 5, "comment": "contested"}, headers=ADMIN
    )

    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "too-many-conflicts"
    assert await rival_writer() == MAX_WRITE_ATTEMPTS
    history = (await client.get("/config/history", headers=ADMIN)).json()["items"]
    assert [item["version"] for item in history] == [1]
    assert (await client.get("/config")).json()["cdn_weight"] == 9


@pytest.fixture
def scratch_database_url(servers: Servers) -> Iterator[str]:
    with scratch_database(servers.database_url, "balancer_test_empty") as url:
        yield url


async def test_ready_is_503_while_no_config_is_loaded(
    scratch_database_url: str, redis_url: str, sequence_key: str
) -> None:
    """A worker whose configuration never loaded (here: none is stored) must leave the
    rotation. The ASGI app is asked before its lifespan ran (a real server answers the same
    while its start-up waits for PostgreSQL: tests/e2e/test_lifecycle.py)."""
    empty = await asyncpg.connect(scratch_database_url)
    await empty.execute("DELETE FROM config_versions")
    await empty.close()
    front = create_app(app_settings(scratch_database_url, redis_url, sequence_key))
    transport = httpx.ASGITransport(app=front)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
            response = await client.get("/ready")
    finally:
        await front.app.state.dishka_container.close()  # type: ignore[attr-defined]
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "starting"
    assert body["worker"] == os.getpid()


async def test_method_not_allowed_names_every_method_of_the_path(
    client: httpx.AsyncClient,
) -> None:
    response = await client.request("OPTIONS", "/config")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert set(response.headers["allow"].split(", ")) == {"GET", "PATCH"}
