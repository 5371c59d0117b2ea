"""Are the hourly rates beneath a report fresh? Missing or stale hours, and what to do about them.

A report reads ``rates_hourly``. An hour is **stale** when readings (or, for the heating
complaint density, heating complaints) were stored after its rates were computed; it is
**missing** when readings exist but no rate was computed for it, or, for the complaint density,
when an in-season hour has no row at all (the density would be Σcomplaints over too few hours of
heated area: the December report's "150x too high"). The report recomputes such windows first
(setting ``report.stale_rates = recompute``, the default) or marks every figure computed from them
provisional (``provisional``); it never prints them silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from cityops import catalog
from cityops.catalog import Kind
from cityops.schedule import HeatingCalendar
from cityops.settings import Settings
from stream import recompute

STALE_SQL = """
WITH r AS (
    SELECT to_timestamp(floor(extract(epoch FROM ts) / 3600) * 3600) AS hour,
           max(received_at) AS stored
    FROM {table} WHERE ts >= %(start)s AND ts < %(end)s GROUP BY 1
), q AS (
    SELECT hour, min(computed_at) AS computed FROM rates_hourly
    WHERE kind = %(kind)s AND hour >= %(start)s AND hour < %(end)s
      AND area_code = ANY(%(codes)s) GROUP BY 1
)
SELECT coalesce(array_agg(r.hour ORDER BY r.hour) FILTER (WHERE q.hour IS NULL), '{{}}'),
       count(*) FILTER (WHERE q.computed < r.stored)
FROM r LEFT JOIN q ON q.hour = r.hour
"""

HEATING_DATA_SQL = """
SELECT EXISTS (SELECT 1 FROM heating_readings WHERE ts >= %(start)s AND ts < %(end)s)
    OR EXISTS (SELECT 1 FROM complaints WHERE category = 'heating'
               AND received_at >= %(start)s AND received_at < %(end)s)
"""

COMPLAINTS_STALE_SQL = """
WITH c AS (
    SELECT to_timestamp(floor(extract(epoch FROM received_at) / 3600) * 3600) AS hour,
           max(stored_at) AS stored
    FROM complaints
    WHERE category = 'heating' AND received_at >= %(start)s AND received_at < %(end)s
      AND area_code = ANY(%(codes)s)
    GROUP BY 1
), q AS (
    SELECT hour, min(computed_at) AS computed FROM rates_hourly
    WHERE kind = 'heating' AND metric = 'complaint_density' AND hour >= %(start)s
      AND hour < %(end)s AND area_code = ANY(%(codes)s) GROUP BY 1
)
SELECT count(*) FILTER (WHERE q.hour IS NULL), count(*) FILTER (WHERE q.computed < c.stored)
FROM c LEFT JOIN q ON q.hour = c.hour
"""

DENSITY_HOURS_SQL = """
SELECT count(*) FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz
                                     - interval '1 hour', interval '1 hour') AS g(hour)
WHERE NOT EXISTS (
    SELECT 1 FROM rates_hourly
    WHERE kind = 'heating' AND metric = 'complaint_density' AND hour = g.hour
      AND area_code = ANY(%(codes)s))
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """A span of hours a report reads, for one kind (``what`` names it in the report)."""

    what: str
    kind: Kind
    start: datetime
    end: datetime
    density: bool = False  # the heating complaint density's season span


@dataclass(frozen=True, kw_only=True, slots=True)
class Finding:
    """Missing and stale hours found in one window."""

    window: Window
    missing_hours: int
    stale_hours: int

    @property
    def bad(self) -> bool:
        """True when any hour is missing or stale."""
        return self.missing_hours > 0 or self.stale_hours > 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "window": self.window.what,
            "kind": self.window.kind.value,
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "missing_hours": self.missing_hours,
            "stale_hours": self.stale_hours,
        }


def _hour_floor(ts: datetime) -> datetime:
    epoch = int(ts.timestamp()) // 3600 * 3600
    return datetime.fromtimestamp(epoch, UTC)


def has_heating_data(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> bool:
    """True when any heating reading or heating complaint was stored for [start, end)."""
    row = conn.execute(HEATING_DATA_SQL, {"start": start, "end": end}).fetchone()
    return bool(row and row[0])


def check(
    conn: psycopg.Connection[Any],
    window: Window,
    codes: list[str],
    now: datetime,
    calendar: HeatingCalendar | None = None,
) -> Finding:
    """Missing and stale hours of ``window`` (up to the last complete hour before ``now``).

    Heating readings out of season have no rates by design; with ``calendar`` they are not
    counted as missing. A season without any heating data is not checked for missing hours.
    """
    end = min(window.end, _hour_floor(now))
    if end <= window.start:
        return Finding(window=window, missing_hours=0, stale_hours=0)
    params = {"start": window.start, "end": end, "kind": window.kind.value, "codes": codes}
    if window.density:
        if not has_heating_data(conn, window.start, end):
            return Finding(window=window, missing_hours=0, stale_hours=0)
        c_missing, c_stale = conn.execute(COMPLAINTS_STALE_SQL, params).fetchone() or (0, 0)
        row = conn.execute(DENSITY_HOURS_SQL, params).fetchone()
        gaps = int(row[0]) if row else 0
        return Finding(
            window=window, missing_hours=max(gaps, int(c_missing)), stale_hours=int(c_stale)
        )
    query = sql.SQL(STALE_SQL).format(table=sql.Identifier(catalog.KINDS[window.kind].table))
    hours, stale = conn.execute(query, params).fetchone() or ([], 0)
    if window.kind is Kind.HEATING and calendar is not None:
        hours = [h for h in hours if calendar.in_season(h + timedelta(minutes=30))]
    return Finding(window=window, missing_hours=len(hours), stale_hours=int(stale))


def ensure_fresh(
    conn: psycopg.Connection[Any],
    settings: Settings,
    windows: list[Window],
    codes: list[str],
    *,
    policy: str,
    now: datetime,
) -> dict[str, Any]:
    """Check every window; recompute the bad ones (policy ``recompute``) and check again.

    Returns the report's ``freshness`` section: what was found, what was recomputed, and the
    kinds whose figures remain provisional.
    """
    calendar = HeatingCalendar(settings.schedule, settings.timezone)
    found = [check(conn, w, codes, now, calendar) for w in windows]
    recomputed: list[dict[str, Any]] = []
    if policy == "recompute":
        for f in found:
            if not f.bad:
                continue
            end = min(f.window.end, _hour_floor(now))
            rows = recompute.recompute(conn, settings, f.window.start, end, kinds=(f.window.kind,))
            recomputed.append({**f.as_dict(), "rows_written": rows})
        calendar = HeatingCalendar(settings.schedule, settings.timezone)
    found = [check(conn, w, codes, now, calendar) for w in windows]
    provisional = sorted({f.window.kind.value for f in found if f.bad})
    return {
        "policy": policy,
        "checked": [f.as_dict() for f in found],
        "recomputed": recomputed,
        "provisional_kinds": provisional,
        "provisional_windows": sorted({f.window.what for f in found if f.bad}),
        "rule": "an hour is stale when readings (heating complaints, for the complaint density) "
        "were stored after its rates were computed, missing when it has readings but no rates "
        "(or an in-season hour has no complaint-density row); such figures are recomputed "
        "first or marked provisional",
    }
