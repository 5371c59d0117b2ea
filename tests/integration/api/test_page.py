"""The operations page in headless Chromium over a real app and database: it loads, shows the
areas, takes live updates over SSE, and an acknowledgement clicked on the page reaches the
database."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import IN_CI
from tests.integration.api.conftest import Keys, seed_alert, seed_devices
from tests.integration.api.test_live import LiveServer, settings_for, start_server, stop_server

pytestmark = [pytest.mark.pg, pytest.mark.slow]

# Bounds on waiting for the page (snapshots are recomputed every few seconds), not speed claims.
WAIT_MS = 30_000


def _chromium() -> str:
    path = (
        os.environ.get("CITYOPS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    )
    if not Path(path).exists():
        message = "chromium not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + " (CI=true: the browser test is required)")
        pytest.skip(message)
    return path


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--headless=new"]
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def served(migrated_db: str, keys: Keys) -> Iterator[LiveServer]:
    """The app over the test database with six devices and one firing alert."""
    seed_devices(migrated_db)
    live = start_server(settings_for(migrated_db))
    try:
        yield live
    finally:
        stop_server(live)


def _open(browser: Browser, url: str, key: str) -> Page:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    # Without a key the page says how to get one.
    assert "API key" in page.inner_text("#message")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector('#feed[data-state="open"]', timeout=WAIT_MS)
    assert not errors, errors
    return page


def test_page_shows_areas_live_updates_and_acknowledges(
    browser: Browser, served: LiveServer, migrated_db: str, keys: Keys
) -> None:
    alert_id = seed_alert(migrated_db, area="CY-JW", device="SL-1", severity="critical")
    page = _open(browser, served.url + "/", keys.duty)

    # Areas: a row per area with devices, filled from the snapshots of the live feed.
    row = page.wait_for_selector('#areas tbody tr[data-area="CY-JW"]', timeout=WAIT_MS)
    assert row is not None
    assert "CY-JW" in row.inner_text()
    assert page.inner_text('#areas tr[data-area="CY-JW"] td[data-metric="devices"]') == "0 / 2"
    assert page.is_visible('#areas tr[data-area="CY-WJ"]')
    # An area without devices is hidden until asked for.
    assert not page.is_visible('#areas tr[data-area="CY-DF"]')

    # The schematic: one dot per positioned device, the one with a firing alert in red.
    # (expect() polls without evaluating strings, which the page's CSP forbids.)
    expect(page.locator("#map circle")).to_have_count(6, timeout=WAIT_MS)
    assert page.get_attribute('#map circle[data-device="SL-1"]', "class") == "st-alarm"

    # Live update of a rate: a new hourly row reaches the table through the next snapshot.
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, denominator, "
            "samples) VALUES ('CY-JW', 'streetlight', 'lighting_rate', %s, 57, 60, 2)",
            (hour,),
        )
    lighting = page.locator('#areas tr[data-area="CY-JW"] td[data-metric="lighting_rate"]')
    expect(lighting).to_have_text("95.0 %", timeout=WAIT_MS)
    # With its data coverage below full, the rate is shown greyed with the coverage beside it:
    # a lamp with no data counts as not lit, so the operator must see how much data there was.
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, denominator, "
            "samples) VALUES ('CY-JW', 'streetlight', 'lighting_coverage', %s, 30, 60, 2)",
            (hour,),
        )
    expect(lighting).to_have_text("95.0 % · data 50 %", timeout=WAIT_MS)
    assert "lowcov" in (lighting.get_attribute("class") or "")

    # Live update of the alert list: an alert fired after the page loaded appears.
    assert page.is_visible(f'#alerts li[data-alert-id="{alert_id}"]')
    later = seed_alert(migrated_db, area="CY-CW", device="SL-3", severity="warning")
    page.wait_for_selector(f'#alerts li[data-alert-id="{later}"]', timeout=WAIT_MS)
    assert int(page.inner_text("#event-count")) > 0

    # Follow one device: its new readings arrive over the feed.
    page.click('#map circle[data-device="HT-1"]')
    expect(page.locator("#device-title")).to_contain_text("HT-1", timeout=WAIT_MS)
    expect(page.locator("#device-state")).to_contain_text("following", timeout=WAIT_MS)
    served.wait_for_reading_poll()
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO heating_readings (device_id, ts, temperature_c) "
            "VALUES ('HT-1', now(), 21.25)"
        )
    expect(page.locator("#device-readings li").first).to_contain_text(
        "temperature_c=21.25", timeout=WAIT_MS
    )

    # Acknowledge on the page: the database records it under the key's name.
    page.click(f'#alerts li[data-alert-id="{alert_id}"] button.ack')
    page.wait_for_selector(
        f'#alerts li[data-alert-id="{alert_id}"][data-acked="yes"]', timeout=WAIT_MS
    )
    with psycopg.connect(migrated_db) as conn:
        acked = conn.execute(
            "SELECT acked_by, acked_at IS NOT NULL FROM alerts WHERE id = %s", (alert_id,)
        ).fetchone()
        events = conn.execute(
            "SELECT event, actor FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,)
        ).fetchall()
    assert acked == ("test-duty", True)
    assert events[-1][1] == "test-duty"
    page.close()


def test_viewer_key_cannot_acknowledge(
    browser: Browser, served: LiveServer, migrated_db: str, keys: Keys
) -> None:
    alert_id = seed_alert(migrated_db, area="CY-JW", device="SL-1")
    page = _open(browser, served.url + "/", keys.viewer)
    page.click(f'#alerts li[data-alert-id="{alert_id}"] button.ack')
    expect(page.locator("#message")).to_contain_text("needs a duty key", timeout=WAIT_MS)
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute("SELECT acked_by FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    assert row == (None,)
    page.close()


def test_page_and_assets_are_served_without_cdn(served: LiveServer) -> None:
    html = httpx.get(served.url + "/")
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in html.headers["content-security-policy"]
    assert "https://" not in html.text
    for asset, media in (("ops.js", "text/javascript"), ("ops.css", "text/css")):
        response = httpx.get(f"{served.url}/static/{asset}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert "https://" not in response.text
    for bad in ("nope.js", "..%2Fpage.py", "index.py", ".hidden.css"):
        response = httpx.get(f"{served.url}/static/{bad}")
        assert response.status_code == 404, bad
