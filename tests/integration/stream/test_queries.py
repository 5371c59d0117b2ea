"""Rates roll up from hours to days and months, and from areas to the district, as Σnum/Σden."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import psycopg
import pytest

from stream.queries import Grain, Level, rates

pytestmark = pytest.mark.pg

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _fill(conn: psycopg.Connection) -> list[tuple[str, datetime, float, float, int]]:  # type: ignore[type-arg]
    """Random hourly rows for 3 areas over 3 days around a month boundary."""
    rng = np.random.default_rng(1)
    start = datetime(2026, 1, 30, 12, tzinfo=UTC)
    rows = []
    for area in ("CY-JW", "CY-CW", "CY-SJ"):
        for h in range(72):
            den = float(rng.integers(1, 400))
            num = float(rng.uniform(0, den))
            rows.append((area, start + timedelta(hours=h), num, den, int(rng.integers(0, 50))))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, denominator,"
            " samples) VALUES (%s, 'streetlight', 'lighting_rate', %s, %s, %s, %s)",
            rows,
        )
    conn.commit()
    return rows


def test_months_and_district_are_ratios_of_sums(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        rows = _fill(conn)
        start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
        months = rates(
            conn, kind="streetlight", start=start, end=end, grain=Grain.MONTH, level=Level.DISTRICT
        )
        days = rates(conn, kind="streetlight", start=start, end=end, grain=Grain.DAY)
        city = rates(
            conn, kind="streetlight", start=start, end=end, grain=Grain.MONTH, level=Level.CITY
        )
    by_month: dict[int, list[float]] = {}
    for _, hour, num, den, _ in rows:
        m = hour.astimezone(SHANGHAI).month
        acc = by_month.setdefault(m, [0.0, 0.0])
        acc[0] += num
        acc[1] += den
    assert [(v.period.astimezone(SHANGHAI).month, v.scope) for v in months] == [
        (1, "Chaoyang"),
        (2, "Chaoyang"),
    ]
    for v in months:
        num, den = by_month[v.period.astimezone(SHANGHAI).month]
        assert v.numerator == pytest.approx(num)
        assert v.denominator == pytest.approx(den)
        assert v.value == pytest.approx(num / den)
        mean_of_ratios = np.mean(
            [
                n / d
                for _, h, n, d, _ in rows
                if h.astimezone(SHANGHAI).month == v.period.astimezone(SHANGHAI).month
            ]
        )
        assert abs(v.value - mean_of_ratios) > 1e-6  # not an average of percentages
    assert [(c.numerator, c.denominator) for c in city] == [
        (m.numerator, m.denominator) for m in months
    ]
    # Local days: the day of 2026-02-01 (Asia/Shanghai) starts at 2026-01-31 16:00 UTC.
    feb1 = [d for d in days if d.period == datetime(2026, 1, 31, 16, tzinfo=UTC)]
    assert {d.scope for d in feb1} == {"CY-JW", "CY-CW", "CY-SJ"}
    for d in feb1:
        expect = [
            (n, den)
            for a, h, n, den, _ in rows
            if a == d.scope and h.astimezone(SHANGHAI).date().isoformat() == "2026-02-01"
        ]
        assert d.numerator == pytest.approx(sum(e[0] for e in expect))
        assert d.denominator == pytest.approx(sum(e[1] for e in expect))
    assert sum(d.numerator for d in days) == pytest.approx(sum(r[2] for r in rows))
