"""/docs (Swagger UI) and /redoc render in Chromium with no network beyond this machine: their
scripts and styles come from the package, not a CDN (issue 19)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.integration.api.test_live import LiveServer, settings_for, start_server, stop_server
from tests.integration.api.test_page import browser  # noqa: F401 -- the Chromium fixture

pytestmark = [pytest.mark.pg, pytest.mark.slow]

WAIT_MS = 30_000  # a bound on waiting for the page, not a speed claim


@pytest.fixture
def served(migrated_db: str) -> Iterator[LiveServer]:
    """The app over the test database."""
    live = start_server(settings_for(migrated_db))
    try:
        yield live
    finally:
        stop_server(live)


def _offline_page(browser: Browser, url: str) -> tuple[Page, list[str], list[str]]:  # noqa: F811
    """A page whose every request off this machine is aborted (and recorded)."""
    context = browser.new_context()
    blocked: list[str] = []
    errors: list[str] = []

    def only_local(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1") or route.request.url.startswith("data:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    return page, blocked, errors


def test_swagger_ui_renders_offline(browser: Browser, served: LiveServer) -> None:  # noqa: F811
    page, blocked, errors = _offline_page(browser, served.url + "/docs")
    title = page.locator(".swagger-ui .info .title")
    expect(title).to_contain_text("cityops API", timeout=WAIT_MS)
    # The operations are listed, e.g. the alerts endpoints.
    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=WAIT_MS)
    assert page.locator(".opblock").count() > 10
    assert blocked == []
    assert errors == []


def test_redoc_renders_offline(browser: Browser, served: LiveServer) -> None:  # noqa: F811
    page, blocked, errors = _offline_page(browser, served.url + "/redoc")
    heading = page.locator(".api-info h1")
    expect(heading).to_contain_text("cityops API", timeout=WAIT_MS)
    expect(page.locator(".menu-content li").first).to_be_visible(timeout=WAIT_MS)
    # The only request off the machine is the "powered by" logo in ReDoc's bundle: decoration.
    assert all(u.endswith("/logo-mini.svg") for u in blocked), blocked
    assert errors == []


def test_docs_assets_are_served_from_the_package(served: LiveServer) -> None:
    import httpx2 as httpx

    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = httpx.get(f"{served.url}/docs-assets/{name}", timeout=30)
        assert r.status_code == 200, name
        assert len(r.content) > 10_000
    html = httpx.get(served.url + "/docs", timeout=30).text
    assert "/docs-assets/swagger-ui-bundle.js" in html
    assert "cdn." not in html
