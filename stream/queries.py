"""Rates per area, district or city and per hour, day or month, from ``rates_hourly``.

Every value is Σnumerator ÷ Σdenominator over the hours and areas it covers — never an average of
hourly or per-area percentages. Days and months are local calendar days and months (the
configured zone, Asia/Shanghai by default); hours are UTC hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql


class Grain(StrEnum):
    """Time bucket of a rate query."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


class Level(StrEnum):
    """Spatial level of a rate query."""

    AREA = "area"
    DISTRICT = "district"
    CITY = "city"


@dataclass(frozen=True, kw_only=True, slots=True)
class RateValue:
    """One rate: its period start, scope, sums and their ratio (None when Σden is 0)."""

    period: datetime
    scope: str
    metric: str
    numerator: float
    denominator: float
    samples: int

    @property
    def value(self) -> float | None:
        """Σnumerator ÷ Σdenominator."""
        return self.numerator / self.denominator if self.denominator else None


_SCOPE = {
    Level.AREA: sql.SQL("r.area_code"),
    Level.DISTRICT: sql.SQL("a.district"),
    Level.CITY: sql.SQL("'city'"),
}

RATES_SQL = """
SELECT date_trunc({grain}, r.hour AT TIME ZONE %(tz)s) AT TIME ZONE %(tz)s AS period,
       {scope} AS scope, r.metric,
       sum(r.numerator), sum(r.denominator), sum(r.samples)
FROM rates_hourly r JOIN areas a ON a.code = r.area_code
WHERE r.kind = %(kind)s AND r.hour >= %(start)s AND r.hour < %(end)s
  AND (%(metric)s::text IS NULL OR r.metric = %(metric)s::text)
  AND (%(area)s::text IS NULL OR r.area_code = %(area)s::text)
  AND (%(district)s::text IS NULL OR a.district = %(district)s::text)
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""


def rates(
    conn: psycopg.Connection[Any],
    *,
    kind: str,
    start: datetime,
    end: datetime,
    metric: str | None = None,
    grain: Grain = Grain.HOUR,
    level: Level = Level.AREA,
    area: str | None = None,
    district: str | None = None,
    timezone: str = "Asia/Shanghai",
) -> list[RateValue]:
    """Rates of ``kind`` over hours in [start, end), bucketed by ``grain`` and ``level``."""
    query = sql.SQL(RATES_SQL).format(grain=sql.Literal(grain.value), scope=_SCOPE[level])
    rows = conn.execute(
        query,
        {
            "tz": timezone,
            "kind": kind,
            "start": start,
            "end": end,
            "metric": metric,
            "area": area,
            "district": district,
        },
    ).fetchall()
    return [
        RateValue(
            period=r[0],
            scope=r[1],
            metric=r[2],
            numerator=float(r[3]),
            denominator=float(r[4]),
            samples=int(r[5]),
        )
        for r in rows
    ]
