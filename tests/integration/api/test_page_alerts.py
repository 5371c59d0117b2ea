"""The operations page's alert list in Chromium: the true firing count beyond the API's 1000 a
page, paging through them, and a cabinet's inhibited lamp alerts listed under the cabinet alert,
collapsed and marked (issue 19)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from playwright.sync_api import Browser, expect

from tests.integration.api.conftest import T0, Keys, seed_alert, seed_devices
from tests.integration.api.test_live import LiveServer, settings_for, start_server, stop_server
from tests.integration.api.test_page import (
    WAIT_MS,
    _open,
    browser,  # noqa: F401 -- the Chromium fixture
)

pytestmark = [pytest.mark.pg, pytest.mark.slow]

MANY = 1204  # more than one API page (1000) of firing alerts


@pytest.fixture
def served(migrated_db: str, keys: Keys) -> Iterator[LiveServer]:
    """The app over a database with MANY firing alerts and a dark cabinet with three lamps."""
    seed_devices(migrated_db)
    with psycopg.connect(migrated_db) as conn:
        conn.execute(
            "INSERT INTO alerts (fingerprint, rule, kind, severity, labels, summary, state, "
            "device_id, area_code, started_at, fired_at, last_seen) "
            "SELECT 'fp-' || i, 'device_silent', 'charger', 'warning', '{}'::jsonb, "
            "'silent', 'firing', 'CH-' || i, 'CY-CW', %s, %s, %s FROM generate_series(1, %s) i",
            (T0, T0, T0, MANY - 4),
        )
        conn.execute(
            "INSERT INTO alerts (fingerprint, rule, kind, severity, labels, summary, state, "
            "area_code, started_at, fired_at, last_seen) VALUES ('cab-7', 'lamp_group_outage', "
            "'streetlight', 'critical', '{}'::jsonb, 'Cabinet CAB-7 is dark', 'firing', 'CY-JW', "
            "%s, now(), %s)",
            (T0, T0),
        )
    lamps = [
        seed_alert(migrated_db, device=f"SL-{i}", rule="lamp_off_while_due") for i in (1, 2, 3)
    ]
    with psycopg.connect(migrated_db) as conn:
        conn.execute("UPDATE alerts SET inhibited_by = 'cab-7' WHERE id = ANY(%s)", (lamps,))
    live = start_server(settings_for(migrated_db))
    try:
        yield live
    finally:
        stop_server(live)


def test_alert_list_counts_pages_and_nests_inhibited_members(
    browser: Browser,  # noqa: F811
    served: LiveServer,
    keys: Keys,
) -> None:
    page = _open(browser, served.url + "/", keys.duty)
    count = page.locator("#alert-count")
    expect(count).to_have_text(
        f"{MANY} firing (3 inhibited under their group alert)", timeout=WAIT_MS
    )
    # Top level: every alert but the three members, 100 a page.
    expect(page.locator("#alert-page")).to_have_text("page 1 of 13")
    assert page.locator("#alerts > li").count() == 100
    # The cabinet alert (fired last, so first) carries its lamps, collapsed and marked.
    cabinet = page.locator("#alerts > li").first
    expect(cabinet).to_contain_text("lamp_group_outage")
    members = cabinet.locator("details.members")
    expect(members.locator("summary")).to_have_text("3 inhibited member alerts")
    assert not page.is_visible('#alerts li[data-inhibited="yes"]')
    members.locator("summary").click()
    expect(cabinet.locator('li[data-inhibited="yes"]')).to_have_count(3)
    expect(cabinet.locator("li .tag.inhibited").first).to_be_visible()
    # No member is listed beside its parent.
    expect(page.locator('#alerts > li[data-inhibited="yes"]')).to_have_count(0)
    # Paging reaches the oldest.
    for _ in range(12):
        page.click("#alert-next")
    expect(page.locator("#alert-page")).to_have_text("page 13 of 13")
    assert page.locator("#alerts > li").count() == (MANY - 3) - 1200
    assert page.is_disabled("#alert-next")
    page.click("#alert-prev")
    expect(page.locator("#alert-page")).to_have_text("page 12 of 13")
    assert page.is_visible("#alert-pager")


def test_one_page_of_alerts_has_no_pager(
    browser: Browser,  # noqa: F811
    migrated_db: str,
    keys: Keys,
) -> None:
    seed_devices(migrated_db)
    seed_alert(migrated_db)
    live = start_server(settings_for(migrated_db))
    try:
        page = _open(browser, live.url + "/", keys.duty)
        expect(page.locator("#alert-count")).to_have_text("1 firing", timeout=WAIT_MS)
        assert not page.is_visible("#alert-pager")
    finally:
        stop_server(live)
