"""JWTs against a real server process (its own event loop and threads fetch the JWKS), and the
console signed in with a pasted JWT."""

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.browser import chromium, guarded_page
from tests.support.jwks import AUDIENCE, ISSUER, JwksServer, SigningKey, jwks_server
from tests.support.servers import reset_config, running_server

KEY = SigningKey.make("e2e-1", "ES256")


@pytest.fixture(scope="module")
def idp() -> Iterator[JwksServer]:
    with jwks_server([KEY]) as served:
        yield served


@pytest.fixture(scope="module")
def jwt_server(database_url: str, redis_url: str, idp: JwksServer) -> Iterator[ServerProcess]:
    with running_server(
        database_url,
        redis_url,
        workers=1,
        jwt_jwks=idp.url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_roles_claim="realm_access.roles",
    ) as process:
        reset_config(process.url)
        yield process


def operator_jwt() -> str:
    return KEY.token({"sub": "dana", "realm_access": {"roles": ["operator"]}})


def test_a_jwt_changes_the_config_and_the_history_names_it(jwt_server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {operator_jwt()}"}
    changed = httpx.patch(f"{jwt_server.url}/config", json={"cdn_weight": 6}, headers=headers)
    assert changed.status_code == 200, changed.text
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    newest = httpx.get(f"{jwt_server.url}/config/history", params={"limit": 1}, headers=admin)
    assert newest.json()["items"][0]["actor"] == {
        "name": "dana",
        "issuer": ISSUER,
        "address": "127.0.0.1",
    }
    forged = KEY.token({"sub": "dana", "exp": 1})
    refused = httpx.get(f"{jwt_server.url}/whoami", headers={"Authorization": f"Bearer {forged}"})
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid-token")


def test_the_console_signs_in_with_a_pasted_jwt(jwt_server: ServerProcess) -> None:
    with chromium() as browser, guarded_page(browser, jwt_server.url) as console:
        page = console.page
        page.goto(f"{jwt_server.url}/admin")
        page.get_by_label("Admin token or JWT").fill(operator_jwt())
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#who")).to_contain_text(f"Signed in as dana ({ISSUER})")
        expect(page.locator("#who-role")).to_have_text("operator")
        page.get_by_role("navigation").get_by_role("link", name="Change").click()
        expect(page.get_by_role("button", name="Save as a new version")).to_be_visible()
        assert console.blocked == []
        assert console.errors == []
