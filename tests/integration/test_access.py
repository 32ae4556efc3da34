"""Who may do what: roles over every admin operation, static named tokens, and JWTs from
an identity provider (a JWKS served by the test, keys made by the test)."""

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from app.main.settings import Settings
from tests.support.app import ADMIN, VIDEO, app_client, app_settings
from tests.support.jwks import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    SigningKey,
    forged,
    jwks_server,
    payload,
)

pytestmark = pytest.mark.usefixtures("initial_config")

RSA = SigningKey.make("rsa-1")
EC = SigningKey.make("ec-1", "ES256")
ED = SigningKey.make("ed-1", "EdDSA")
READER_TOKEN = "oncall:reader:Hq3vNb7XkT2mWc9RpL5sYd8Fg4JzE6aQ"
OPERATOR_TOKEN = "deploy-bot:operator:Zt5kWn2QyB8xMv4cRj7HpL3sGd9FeA6u"

# Every admin operation and the role it needs; the OpenAPI document must say the same.
OPERATIONS: dict[tuple[str, str], str] = {
    ("GET", "/config/history"): "reader",
    ("GET", "/config/route"): "reader",
    ("GET", "/stats"): "reader",
    ("GET", "/cdn/health"): "reader",
    ("GET", "/limits"): "reader",
    ("GET", "/limits/{client_id}"): "reader",
    ("GET", "/limits/history"): "reader",
    ("GET", "/whoami"): "reader",
    ("PATCH", "/config"): "operator",
    ("POST", "/config/rollback/{version}"): "operator",
    ("PUT", "/config/server-rules/{server}"): "operator",
    ("DELETE", "/config/server-rules/{server}"): "operator",
    ("POST", "/limits"): "operator",
    ("PUT", "/limits/{client_id}"): "operator",
    ("DELETE", "/limits/{client_id}"): "operator",
    ("POST", "/stats/reset"): "operator",
}
PATHS = {"client_id": "203.0.113.7", "version": "1", "server": "s1"}
LIMIT = {"capacity": 10, "refill_per_second": 1}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/config"): {"cdn_weight": 4},
    ("PUT", "/config/server-rules/{server}"): {"cdn_weight": 1, "origin_weight": 1},
    ("POST", "/limits"): {"client_id": "203.0.113.7", **LIMIT},
    ("PUT", "/limits/{client_id}"): LIMIT,
}
QUERIES = {("GET", "/config/route"): {"ip": "203.0.113.7", "video": VIDEO}}
RANK = {None: -1, "reader": 0, "operator": 1, "admin": 2}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    with jwks_server([RSA, EC, ED]) as served:
        yield served


def jwt_settings(settings: Settings, idp: JwksServer, **changes: Any) -> Settings:
    return dataclasses.replace(
        settings,
        admin_tokens=(READER_TOKEN, OPERATOR_TOKEN),
        jwt_jwks=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        **{"jwt_jwks_refetch_seconds": 0.0, **changes},
    )


@pytest.fixture
async def client(
    database_url: str, redis_url: str, sequence_key: str, idp: JwksServer
) -> AsyncIterator[httpx.AsyncClient]:
    settings = jwt_settings(app_settings(database_url, redis_url, sequence_key), idp)
    async with app_client(settings) as client:
        yield client


async def call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(
        method,
        path.format_map(PATHS),
        json=BODIES.get((method, path)),
        params=QUERIES.get((method, path)),
        headers=headers,
    )


async def test_the_document_names_the_role_of_every_admin_operation(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    declared = {
        (method.upper(), path): operation["x-required-role"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "x-required-role" in operation
    }
    assert declared == OPERATIONS
    patch = document["paths"]["/config"]["patch"]
    assert "Requires the `operator` role." in patch["description"]


CREDENTIALS: dict[str, tuple[str | None, Callable[[], str]]] = {
    "jwt-none": (None, lambda: RSA.token({"roles": []})),
    "jwt-reader": ("reader", lambda: RSA.token({"roles": ["reader"]})),
    "jwt-operator": ("operator", lambda: EC.token({"roles": ["operator"]})),
    "jwt-admin": ("admin", lambda: ED.token({"roles": ["admin", "reader"]})),
    "static-reader": ("reader", lambda: READER_TOKEN.rsplit(":", 1)[1]),
    "static-operator": ("operator", lambda: OPERATOR_TOKEN.rsplit(":", 1)[1]),
    "static-plain": ("admin", lambda: ADMIN["Authorization"].split()[1]),
}


@pytest.mark.parametrize("who", CREDENTIALS)
async def test_each_role_reaches_exactly_its_operations(
    client: httpx.AsyncClient, who: str
) -> None:
    role, token = CREDENTIALS[who]
    outcomes = {}
    for (method, path), needed in OPERATIONS.items():
        response = await call(client, method, path, bearer(token()))
        allowed = RANK[role] >= RANK[needed]
        if allowed:
            outcomes[method, path] = response.status_code < 400 or response.status_code == 404
        else:
            problem = response.json()
            outcomes[method, path] = (response.status_code, problem["code"], problem["role"]) == (
                403,
                "forbidden-role",
                needed,
            )
    assert [operation for operation, right in outcomes.items() if not right] == []


async def test_whoami_names_the_identity_and_its_role(client: httpx.AsyncClient) -> None:
    by_jwt = await client.get("/whoami", headers=bearer(EC.token({"roles": "operator"})))
    by_token = await client.get("/whoami", headers=bearer(READER_TOKEN.rsplit(":", 1)[1]))
    assert by_jwt.json() == {
        "name": "alice",
        "issuer": ISSUER,
        "role": "operator",
        "address": "127.0.0.1",
    }
    assert by_token.json()["name"] == "oncall"
    assert by_token.json()["role"] == "reader"
    assert by_token.json()["issuer"] is None


async def test_a_role_refusal_names_the_role_and_reads_no_body(
    client: httpx.AsyncClient,
) -> None:
    read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        read.append(b"{}")
        yield b"{}"

    response = await client.patch(
        "/config",
        content=body(),
        headers={**bearer(RSA.token({"roles": ["reader"]})), "Content-Length": "2"},
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden-role"
    assert response.json()["role"] == "operator"
    assert "operator" in response.json()["detail"]
    assert read == []


def _now() -> int:
    return int(time.time())


REFUSED: dict[str, Callable[[], str]] = {
    "expired": lambda: RSA.token({"exp": _now() - 120}),
    "not-yet-valid": lambda: RSA.token({"nbf": _now() + 120}),
    "issued-in-the-future": lambda: RSA.token({"iat": _now() + 120}),
    "wrong-issuer": lambda: RSA.token({"iss": "https://evil.example.test/"}),
    "wrong-audience": lambda: RSA.token({"aud": "another-service"}),
    "no-exp": lambda: RSA.token({"exp": None}),
    "no-sub": lambda: RSA.token({"sub": None}),
    "unknown-kid": lambda: SigningKey.make("stranger", "ES256").token(),
    "known-kid-other-key": lambda: dataclasses.replace(
        SigningKey.make("x", "ES256"), kid=EC.kid
    ).token(),
    "tampered-signature": lambda: _tampered(RSA.token({"roles": ["reader"]})),
    "tampered-claims": lambda: _swap_claims(RSA.token({"roles": ["reader"]}), {"roles": ["admin"]}),
    "alg-none": lambda: forged(
        {"alg": "none", "typ": "JWT", "kid": RSA.kid}, payload({"roles": ["admin"]}), None
    ),
    "hs256-public-key-as-secret": lambda: forged(
        {"alg": "HS256", "typ": "JWT", "kid": RSA.kid},
        payload({"roles": ["admin"]}),
        RSA.public_pem,
    ),
    "hs256-jwk-as-secret": lambda: forged(
        {"alg": "HS256", "typ": "JWT", "kid": RSA.kid},
        payload({"roles": ["admin"]}),
        str(RSA.jwk["n"]).encode(),
    ),
    "rs256-header-on-an-ec-key": lambda: forged(
        {"alg": "RS256", "typ": "JWT", "kid": EC.kid}, payload({"roles": ["admin"]}), b"x"
    ),
    "garbage": lambda: "not.a.jwt",
}


def _tampered(token: str) -> str:
    head, body, signature = token.split(".")
    flipped = ("A" if signature[10] != "A" else "B").join((signature[:10], signature[11:]))
    return f"{head}.{body}.{flipped}"


def _swap_claims(token: str, claims: dict[str, Any]) -> str:
    head, _, signature = token.split(".")
    other = forged({}, payload(claims), None).split(".")[1]
    return f"{head}.{other}.{signature}"


@pytest.mark.parametrize("case", REFUSED)
async def test_a_jwt_that_is_not_valid_is_401(client: httpx.AsyncClient, case: str) -> None:
    response = await client.get("/config/history", headers=bearer(REFUSED[case]()))
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid-token"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_clock_skew_within_the_leeway_is_accepted(client: httpx.AsyncClient) -> None:
    token = RSA.token({"exp": _now() - 30, "nbf": _now() + 30, "roles": ["reader"]})
    response = await client.get("/config/history", headers=bearer(token))
    assert response.status_code == 200, response.text


async def test_a_rotated_key_is_picked_up_without_a_restart(
    client: httpx.AsyncClient, idp: JwksServer
) -> None:
    assert (await client.get("/whoami", headers=bearer(RSA.token({"roles": "reader"})))).is_success
    rotated = SigningKey.make("rsa-2")
    before = await client.get("/whoami", headers=bearer(rotated.token({"roles": "reader"})))
    idp.keys = [rotated]
    after = await client.get("/whoami", headers=bearer(rotated.token({"roles": "reader"})))
    assert (before.status_code, after.status_code) == (401, 200)


async def test_jwks_down_keeps_known_keys_and_refuses_new_kids(
    client: httpx.AsyncClient, idp: JwksServer
) -> None:
    known = await client.get("/whoami", headers=bearer(RSA.token({"roles": "reader"})))
    idp.down = True
    still = await client.get("/whoami", headers=bearer(RSA.token({"roles": "reader"})))
    new = SigningKey.make("rsa-new")
    idp.keys = [*idp.keys, new]
    refused = await client.get("/whoami", headers=bearer(new.token({"roles": "reader"})))
    assert (known.status_code, still.status_code, refused.status_code) == (200, 200, 401)
    assert refused.json()["code"] == "invalid-token"


async def test_jwks_unreachable_from_the_start_is_401_not_500(
    database_url: str, redis_url: str, sequence_key: str
) -> None:
    with jwks_server([RSA]) as idp:
        url = idp.url
    settings = app_settings(
        database_url,
        redis_url,
        sequence_key,
        jwt_jwks=url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    async with app_client(settings) as client:
        response = await client.get("/whoami", headers=bearer(RSA.token({"roles": "admin"})))
    assert response.status_code == 401


async def test_the_jwks_is_fetched_once_while_its_keys_are_known(
    database_url: str, redis_url: str, sequence_key: str, idp: JwksServer
) -> None:
    settings = jwt_settings(
        app_settings(database_url, redis_url, sequence_key), idp, jwt_jwks_refetch_seconds=60.0
    )
    async with app_client(settings) as client:
        tokens = [RSA.token({"roles": "reader"}), EC.token({"roles": "reader"})] * 5
        strangers = [SigningKey.make(f"s{n}", "ES256").token() for n in range(5)]
        answers = await asyncio.gather(
            *(client.get("/whoami", headers=bearer(token)) for token in tokens + strangers)
        )
    assert [answer.status_code for answer in answers] == [200] * 10 + [401] * 5
    # One fetch for the first unknown kid; every later unknown kid waits out the minimum
    # interval instead of fetching again.
    assert idp.fetches == 1


async def test_a_nested_roles_claim_is_named_by_a_dotted_path(
    database_url: str, redis_url: str, sequence_key: str, idp: JwksServer
) -> None:
    settings = jwt_settings(
        app_settings(database_url, redis_url, sequence_key),
        idp,
        jwt_roles_claim="realm_access.roles",
    )
    keycloak = RSA.token({"realm_access": {"roles": ["offline_access", "operator"]}})
    flat = RSA.token({"roles": ["operator"]})
    async with app_client(settings) as client:
        nested = await client.patch("/config", json={"cdn_weight": 3}, headers=bearer(keycloak))
        top = await client.patch("/config", json={"cdn_weight": 3}, headers=bearer(flat))
    assert nested.status_code == 200, nested.text
    assert (top.status_code, top.json()["code"]) == (403, "forbidden-role")


async def test_a_space_separated_scope_claim_carries_roles(
    database_url: str, redis_url: str, sequence_key: str, idp: JwksServer
) -> None:
    settings = jwt_settings(
        app_settings(database_url, redis_url, sequence_key), idp, jwt_roles_claim="scope"
    )
    async with app_client(settings) as client:
        response = await client.get(
            "/whoami", headers=bearer(RSA.token({"scope": "openid profile operator"}))
        )
    assert response.json()["role"] == "operator"


async def test_a_jwks_file_works_offline(
    database_url: str, redis_url: str, sequence_key: str, tmp_path: Any
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(JwksServer([ED]).document())
    settings = app_settings(
        database_url,
        redis_url,
        sequence_key,
        jwt_jwks=str(jwks),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    async with app_client(settings) as client:
        response = await client.get("/whoami", headers=bearer(ED.token({"roles": "reader"})))
    assert response.status_code == 200, response.text


async def test_the_history_records_who_made_each_change_and_from_where(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    operator_jwt = bearer(RSA.token({"sub": "bob", "roles": ["operator"]}))
    deploy_bot = bearer(OPERATOR_TOKEN.rsplit(":", 1)[1])
    rule = {"cdn_weight": 1, "origin_weight": 1}
    writes = [
        await client.patch("/config", json={"cdn_weight": 7}, headers=operator_jwt),
        await client.put("/config/server-rules/s3", json=rule, headers=deploy_bot),
        await client.delete("/config/server-rules/s3", headers=operator_jwt),
        await client.post("/config/rollback/1", headers=deploy_bot),
    ]
    assert [write.status_code for write in writes] == [200] * 4
    history = await client.get("/config/history", params={"limit": 4}, headers=ADMIN)
    jwt_actor = {"name": "bob", "issuer": ISSUER, "address": "127.0.0.1"}
    token_actor = {"name": "deploy-bot", "issuer": None, "address": "127.0.0.1"}
    assert [item["actor"] for item in history.json()["items"]] == [
        token_actor,  # rollback
        jwt_actor,  # rule removed
        token_actor,  # rule set
        jwt_actor,  # PATCH
    ]
    logged = capsys.readouterr().err
    changed = next(line for line in logged.splitlines() if "config_changed" in line)
    assert f"actor=bob@{ISSUER}" in changed
    rolled_back = next(line for line in logged.splitlines() if "config_rolled_back" in line)
    assert "actor=deploy-bot" in rolled_back


async def test_the_limits_api_shows_who_created_replaced_and_deleted_an_override(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    operator_jwt = bearer(ED.token({"sub": "carol", "roles": "operator"}))
    deploy_bot = bearer(OPERATOR_TOKEN.rsplit(":", 1)[1])
    created = await client.post(
        "/limits", json={"client_id": "198.51.100.0/24", **LIMIT}, headers=operator_jwt
    )
    assert created.json()["actor"] == {"name": "carol", "issuer": ISSUER, "address": "127.0.0.1"}
    replaced = await client.put("/limits/198.51.100.0/24", json=created.json(), headers=deploy_bot)
    assert replaced.status_code == 200, replaced.text
    listed = await client.get("/limits", headers=ADMIN)
    (item,) = [one for one in listed.json()["items"] if one["client_id"] == "198.51.100.0/24"]
    assert item["actor"] == {"name": "deploy-bot", "issuer": None, "address": "127.0.0.1"}
    await client.delete("/limits/198.51.100.0/24", headers=operator_jwt)
    deleted = next(line for line in capsys.readouterr().err.splitlines() if "limit_deleted" in line)
    assert f"actor=carol@{ISSUER}" in deleted
    history = await client.get("/limits/history", params={"limit": 3}, headers=ADMIN)
    assert [
        (event["action"], event["client_id"], event["capacity"], event["actor"]["name"])
        for event in history.json()["items"]
    ] == [
        ("deleted", "198.51.100.0/24", None, "carol"),
        ("replaced", "198.51.100.0/24", 10, "deploy-bot"),
        ("created", "198.51.100.0/24", 10, "carol"),
    ]
    assert history.json()["items"][0]["actor"]["issuer"] == ISSUER
