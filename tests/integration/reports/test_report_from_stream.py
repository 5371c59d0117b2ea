"""The report over rates the stream core computed from stored readings (not hand-made sums)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from cityops.catalog import Kind
from cityops.settings import DatabaseSettings, Settings
from reports import monthly
from stream import recompute
from tests.integration.stream import fleet

pytestmark = pytest.mark.pg


@pytest.mark.slow
def test_report_equals_sums_of_stream_rates(migrated_db: str) -> None:
    settings = Settings(db=DatabaseSettings(dsn=migrated_db))
    rows = fleet.random_rows(seed=5)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        fleet.register(conn)
        for kind in Kind:
            fleet.store(conn, kind, rows[kind])
        conn.commit()
        recompute.recompute(conn, settings, fleet.START, fleet.END)
        conn.commit()
        report: dict[str, Any] = monthly.build(conn, settings, "2026-01")
        # The report recomputed the heating season (its complaint density had no rows before the
        # fleet's day: missing hours, reports/freshness.py); compare with the table it read.
        assert report["freshness"]["recomputed"]
        assert report["freshness"]["provisional_kinds"] == []
        # The fleet spans the end of January 2026 local time; the report's January is
        # [2025-12-31T16:00Z, 2026-01-31T16:00Z).
        expected: dict[tuple[str, str], tuple[float, float]] = {}
        for area, metric, num, den in conn.execute(
            "SELECT area_code, metric, sum(numerator), sum(denominator) FROM rates_hourly"
            " WHERE hour >= '2025-12-31T16:00Z' AND hour < '2026-01-31T16:00Z'"
            " GROUP BY 1, 2"
        ).fetchall():
            expected[(area, metric)] = (num, den)
    assert expected, "the stream wrote no January rows"
    checked = 0
    for r in report["rates"]:
        if r["level"] != "area" or r["scope"] not in fleet.AREAS:
            continue
        if r["metric"].startswith("manhole_alarm"):
            continue  # scaled per 100 covers per month
        num, den = expected.get((r["scope"], r["metric"]), (0.0, 0.0))
        assert r["numerator"] == pytest.approx(num)
        assert r["denominator"] == pytest.approx(den)
        if den:
            assert r["value"] == pytest.approx(num / den)
            checked += 1
    assert checked >= 6
    for metric in ("lighting_rate", "charger_availability"):
        sums = [expected.get((a, metric), (0.0, 0.0)) for a in fleet.AREAS]
        district = next(
            r for r in report["rates"] if r["level"] == "district" and r["metric"] == metric
        )
        assert district["value"] == pytest.approx(sum(n for n, _ in sums) / sum(d for _, d in sums))
    radius = {r["scope"]: r for r in report["radius"]}
    assert radius["CY-JW"]["public_sites"] == 1
    assert radius["CY-JW"]["connectors_in_service"] == 3
    assert radius["Chaoyang"]["public_sites"] == 3
    coverage = {r["kind"]: r for r in report["coverage"]}
    assert coverage["streetlight"]["devices_in_service"] == 11  # one lamp is in maintenance
    assert coverage["streetlight"]["areas_with_devices"] == 3
    assert 0 < coverage["streetlight"]["area_hours_present"] <= 3 * 744
