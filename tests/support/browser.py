"""Debian's Chromium driven by Playwright, with every request to another host refused."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright

from tests.support.tools import require_tool

CSP_SPY = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def _find_chromium() -> str | None:
    candidates = ("chromium", "chromium-browser", "/usr/bin/chromium")
    return next(filter(None, (shutil.which(candidate) for candidate in candidates)), None)


def chromium_path() -> str:
    """The system Chromium (`apt-get install chromium`); Playwright downloads no browser here.

    Missing, the browser tests skip on a developer's machine and fail in CI (CI=true).
    """
    return require_tool("chromium", install="apt-get install chromium", locate=_find_chromium)


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class GuardedPage:
    """A page that may reach `origin` only. Every other request is aborted and recorded."""

    page: Page
    origin: str
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def _route(self, route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def csp_violations(self) -> list[str]:
        violations: list[str] = self.page.evaluate("window.__cspViolations || []")
        return violations


@contextmanager
def guarded_page(
    browser: Browser, origin: str, *, width: int = 1280, height: int = 900, mobile: bool = False
) -> Iterator[GuardedPage]:
    context = browser.new_context(
        viewport={"width": width, "height": height},
        is_mobile=mobile,
        has_touch=mobile,
        device_scale_factor=2 if mobile else 1,
    )
    try:
        page = context.new_page()
        guarded = GuardedPage(page, origin)
        context.route("**/*", guarded._route)
        page.add_init_script(CSP_SPY)
        page.on("console", guarded._console)
        page.on("pageerror", lambda error: guarded.errors.append(str(error)))
        yield guarded
    finally:
        context.close()
