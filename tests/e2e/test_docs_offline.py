"""/docs and /redoc in a real browser that can reach the service and nothing else."""

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser

from loadtest.support import ServerProcess
from tests.e2e.browser import chromium, guarded_page

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
