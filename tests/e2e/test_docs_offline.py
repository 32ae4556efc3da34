"""/docs and /redoc in a real browser that can reach the service and nothing else."""

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from loadtest.support import ServerProcess
from tests.support.app import ADMIN_TOKEN
from tests.support.browser import chromium, guarded_page

METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def operations(server: ServerProcess) -> dict[str, tuple[str, str]]:
    """operationId -> (METHOD, path) for every operation in the service's OpenAPI."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    return {
        operation["operationId"]: (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_swagger_ui_lists_every_operation_when_only_the_service_is_reachable(
    server: ServerProcess, browser: Browser
) -> None:
    expected = set(operations(server).values())
    with guarded_page(browser, server.url) as guarded:
        guarded.page.goto(f"{server.url}/docs")
        blocks = guarded.page.locator(".opblock")
        blocks.nth(len(expected) - 1).wait_for(timeout=15_000)
        shown = {
            (
                block.locator(".opblock-summary-method").inner_text().strip().upper(),
                block.locator(".opblock-summary-path").get_attribute("data-path"),
            )
            for block in blocks.all()
        }
        assert shown == expected
        assert guarded.blocked == []
        assert guarded.errors == []


def test_redoc_lists_every_operation_when_only_the_service_is_reachable(
    server: ServerProcess, browser: Browser
) -> None:
    expected = operations(server)
    with guarded_page(browser, server.url) as guarded:
        guarded.page.goto(f"{server.url}/redoc")
        sections = guarded.page.locator('[data-section-id^="operation/"]')
        sections.nth(len(expected) - 1).wait_for(state="attached", timeout=15_000)
        shown = {
            (section.get_attribute("data-section-id") or "").removeprefix("operation/")
            for section in sections.all()
        }
        assert shown == set(expected)
        assert guarded.blocked == []
        # ReDoc's footer logo points at its CDN; the page's CSP stops it inside the browser,
        # before any request (so `blocked` above stays empty), and says so on the console.
        assert [error for error in guarded.errors if "cdn.redoc.ly" not in error] == []


def test_swagger_authorize_then_try_it_out_changes_the_config_with_the_token(
    server: ServerProcess, browser: Browser
) -> None:
    comment = f"from Swagger UI {uuid.uuid4().hex[:8]}"
    with guarded_page(browser, server.url) as guarded:
        page = guarded.page
        page.goto(f"{server.url}/docs")
        page.locator(".auth-wrapper").get_by_role("button", name="Authorize").click()
        dialog = page.locator(".dialog-ux")
        expect(dialog).to_contain_text("adminToken")
        dialog.get_by_label("Value").fill(ADMIN_TOKEN)
        dialog.get_by_role("button", name="Apply credentials").click()
        dialog.get_by_role("button", name="Close").click()

        operation = page.locator("#operations-config-patch_config_config_patch")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        operation.locator("textarea.body-param__text").fill(
            json.dumps({"cdn_weight": 9, "origin_weight": 1, "comment": comment})
        )
        operation.get_by_role("button", name="Execute").click()
        status = operation.locator(".live-responses-table .response .response-col_status")
        expect(status.first).to_have_text("200", timeout=10_000)
        assert guarded.blocked == []
        assert guarded.errors == []
    newest = httpx.get(
        f"{server.url}/config/history",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()["items"][0]
    assert newest["comment"] == comment


def test_redoc_names_the_admin_token_on_the_operations_that_need_it(
    server: ServerProcess, browser: Browser
) -> None:
    with guarded_page(browser, server.url) as guarded:
        guarded.page.goto(f"{server.url}/redoc")
        patch = guarded.page.locator('[data-section-id="operation/patch_config_config_patch"]')
        public = guarded.page.locator('[data-section-id="operation/get_config_config_get"]')
        expect(patch).to_contain_text(re.compile(r"Authorizations:\s*adminToken"))
        expect(public).to_contain_text("Responses")
        expect(public).not_to_contain_text("Authorizations")
