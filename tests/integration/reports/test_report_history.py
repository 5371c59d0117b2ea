"""Reports as of their month: registry history, stale rates, sensor vs entered (issue 14)."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from cityops import registry
from cityops.catalog import Kind
from cityops.registry import DeviceEvent
from cityops.settings import DatabaseSettings, Settings
from reports import monthly
from stream import recompute
from tests.integration.stream import fleet

pytestmark = pytest.mark.pg

JAN_FIRST, JAN_LAST = date(2026, 1, 1), date(2026, 1, 31)


def _setup(dsn: str) -> Settings:
    settings = Settings(db=DatabaseSettings(dsn=dsn))
    rows = fleet.random_rows(seed=7)
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        fleet.register(conn)
        for kind in Kind:
            fleet.store(conn, kind, rows[kind])
        conn.commit()
    return settings


def _event(conn: psycopg.Connection[Any], device: str, event: str, on: date, **kw: Any) -> None:
    registry.record_event(conn, DeviceEvent(device_id=device, event=event, on=on, **kw))


def _rate(report: dict[str, Any], scope: str, metric: str) -> dict[str, Any]:
    return next(r for r in report["rates"] if r["scope"] == scope and r["metric"] == metric)


def test_timeline_rules() -> None:
    t = registry.Timeline(
        device_id="d",
        area="B",
        status="in_service",
        install_date=date(2026, 1, 10),
        events=(
            DeviceEvent(device_id="d", event="decommission", on=date(2026, 3, 1)),
            DeviceEvent(
                device_id="d", event="move", on=date(2026, 2, 1), from_area="A", to_area="B"
            ),
        ),
    )
    assert not t.in_service_on(date(2026, 1, 9))
    assert t.in_service_on(date(2026, 1, 10))
    assert t.in_service_on(date(2026, 2, 28))
    assert not t.in_service_on(date(2026, 3, 1))  # the decommission day no longer counts
    assert t.in_service_during(date(2025, 12, 1), date(2026, 1, 10))
    assert not t.in_service_during(date(2025, 12, 1), date(2026, 1, 9))
    assert (t.area_on(date(2026, 1, 31)), t.area_on(date(2026, 2, 1))) == ("A", "B")
    never = registry.Timeline(
        device_id="r", area="A", status="retired", install_date=None, events=()
    )
    assert not never.in_service_on(date(2020, 1, 1))  # retired without a date: never counted


@pytest.mark.slow
def test_past_month_counts_the_devices_registered_then(migrated_db: str) -> None:
    settings = _setup(migrated_db)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        # SITE-1 (CY-CW) decommissioned before January; SITE-2 (CY-SJ) installed after it;
        # CH-0-0 moved from CY-JW to CY-CW after January (its current area is CY-CW).
        for i in range(3):
            _event(conn, f"CH-1-{i}", "decommission", date(2025, 12, 15))
            _event(conn, f"CH-2-{i}", "install", date(2026, 2, 10))
        _event(conn, "CH-0-0", "move", date(2026, 2, 15), from_area="CY-JW", to_area="CY-CW")
        _event(conn, "SL-1-0", "commission", date(2026, 2, 5))
        conn.commit()
        area = conn.execute("SELECT area_code FROM devices WHERE device_id = 'CH-0-0'").fetchone()
        assert area == ("CY-CW",)
        assert registry.devices_during(conn, "charger", JAN_FIRST, JAN_LAST) == {
            "CH-0-0": "CY-JW",
            "CH-0-1": "CY-JW",
            "CH-0-2": "CY-JW",
        }
        recompute.recompute(conn, settings, fleet.START, fleet.END)
        conn.commit()
        report = monthly.build(conn, settings, "2026-01")
        february = monthly.build(conn, settings, "2026-02")
    radius = {r["scope"]: r for r in report["radius"]}
    assert radius["Chaoyang"]["public_sites"] == 1
    assert radius["CY-JW"]["connectors_in_service"] == 3  # CH-0-0 was still in CY-JW
    assert radius["CY-CW"]["connectors_in_service"] == 0
    assert radius["CY-SJ"]["connectors_in_service"] == 0
    coverage = {r["kind"]: r for r in report["coverage"]}
    assert coverage["charger"]["devices_in_service"] == 3
    assert coverage["streetlight"]["devices_in_service"] == 10  # 12 − maintenance − SL-1-0
    # The hourly rates count the chargers that existed in each hour.
    assert _rate(report, "CY-JW", "charger_availability")["denominator"] > 0
    assert _rate(report, "CY-CW", "charger_availability")["denominator"] == 0
    assert _rate(report, "CY-SJ", "charger_availability")["denominator"] == 0
    # February (the fleet's first local hours of it): CH-0-0 still in CY-JW until the 15th, SITE-1
    # decommissioned, SITE-2 not yet installed on 1 February.
    feb = {r["scope"]: r for r in february["radius"]}
    assert feb["CY-JW"]["connectors_in_service"] == 2  # CH-0-0 counts in CY-CW by 28 February
    assert feb["CY-CW"]["connectors_in_service"] == 1
    assert feb["CY-SJ"]["connectors_in_service"] == 3  # installed on 10 February


@pytest.mark.slow
def test_stale_rates_are_recomputed_or_marked_provisional(migrated_db: str) -> None:
    settings = _setup(migrated_db)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        recompute.recompute(conn, settings, monthly.Month.parse("2025-11", "UTC").start, fleet.END)
        conn.commit()
        fresh = monthly.build(conn, settings, "2026-01", stale_rates="provisional")
        assert not fresh["provisional"], fresh["freshness"]
        # A late lamp reading arrives after the rates of its hour were computed.
        conn.execute(
            "INSERT INTO streetlight_readings (device_id, ts, power_state) "
            "VALUES ('SL-0-0', '2026-01-31T13:30:00Z', 'off')"
        )
        conn.commit()
        marked = monthly.build(conn, settings, "2026-01", stale_rates="provisional")
        assert marked["provisional"]
        assert marked["freshness"]["provisional_kinds"] == ["streetlight"]
        month_check = next(
            c for c in marked["freshness"]["checked"] if c["window"] == "month streetlight"
        )
        assert month_check["stale_hours"] == 1
        assert all(r["provisional"] == (r["kind"] == "streetlight") for r in marked["rates"])
        lighting = next(r for r in marked["evaluation"]["rows"] if r["key"] == "cy-gov-05")
        assert lighting["provisional"]
        assert lighting["current_source"] == monthly.SENSOR_SOURCE
        # Default: recompute first, then nothing is provisional.
        fixed = monthly.build(conn, settings, "2026-01")
        assert not fixed["provisional"]
        assert [r["window"] for r in fixed["freshness"]["recomputed"]] == ["month streetlight"]
        again = monthly.build(conn, settings, "2026-01", stale_rates="provisional")
        assert not again["provisional"]


@pytest.mark.slow
def test_entered_observation_takes_precedence_and_disagreement_is_flagged(
    migrated_db: str,
) -> None:
    settings = _setup(migrated_db)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        first = monthly.build(conn, settings, "2026-01")
        sensed = next(r for r in first["evaluation"]["rows"] if r["key"] == "cy-gov-05")
        assert sensed["sensor_check"]["used"] == "sensor"
        lighting = sensed["sensor_check"]["sensor_value"]
        radius = next(r for r in first["evaluation"]["rows"] if r["key"] == "cy-gov-15")
        conn.execute(
            "INSERT INTO indicator_observations (indicator, observed_on, value, source) VALUES "
            "('cy-gov-05', '2026-01-31', %s, '区城管委'), "
            "('cy-gov-15', '2026-01-31', 3.5, '区发改委')",
            (round(lighting + 0.9, 6),),
        )
        conn.commit()
        report = monthly.build(conn, settings, "2026-01")
        stored = monthly.evaluate_stored(conn, date(2026, 1, 31))
    rows = {r["key"]: r for r in report["evaluation"]["rows"]}
    close = rows["cy-gov-05"]["sensor_check"]
    assert close["used"] == "entered"
    assert close["tolerance_unit"] == "percentage points"
    assert not close["disagrees"]  # 0.9 pp apart, tolerance 1 pp
    far = rows["cy-gov-15"]["sensor_check"]
    assert far["used"] == "entered"
    assert far["sensor_value"] == radius["current"]
    assert far["disagrees"]
    assert rows["cy-gov-15"]["current"] == 3.5
    assert rows["cy-gov-15"]["current_source"] == "区发改委"
    # The report and `indicators evaluate` agree for the same date.
    evaluated = {r["key"]: r for r in stored["rows"]}
    for key in ("cy-gov-05", "cy-gov-15"):
        assert evaluated[key]["status"] == rows[key]["status"]
        assert evaluated[key]["current"] == rows[key]["current"]


def test_history_import_stores_good_rows_and_names_bad_lines(migrated_db: str) -> None:
    _setup(migrated_db)
    text = (
        "device_id,event,on_date,to_area,note\n"
        "CH-0-0,move,2026-02-15,CY-CW,re-sited\n"
        "CH-0-1,retire,2026-02-15,,\n"
        "CH-0-2,move,2026-02-15,,\n"
        "NOPE,install,2026-01-01,,\n"
        "CH-1-0,decommission,2025-12-15,,\n"
    )
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        report = registry.import_events(conn, list(registry.parse_records(text, "csv")), "t")
        conn.commit()
        history = registry.load_history(conn, "charger")
    assert report.stored == 2
    assert [(e.location, e.message.split(":")[0]) for e in report.errors] == [
        ("line 3", "event"),
        ("line 4", "to_area"),
        ("line 5", "device_id"),
    ]
    moved = history["CH-0-0"]
    assert (moved.area, moved.area_on(date(2026, 2, 14))) == ("CY-CW", "CY-JW")
    assert not history["CH-1-0"].in_service_on(date(2026, 1, 1))
