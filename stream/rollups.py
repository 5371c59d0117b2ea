"""Writing hourly numerators and denominators to ``rates_hourly``.

Live mode upserts the hours it touched; recomputation replaces every row of a kind in a range of
hours (and optionally one area) in one transaction, so running it twice gives the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from stream.rates import RateRow

UPSERT_SQL = """
INSERT INTO rates_hourly (area_code, kind, metric, hour, numerator, denominator, samples,
                          computed_at)
SELECT area_code, kind, metric, hour, numerator, denominator, samples, now()
FROM rates_stage
ON CONFLICT (area_code, kind, metric, hour) DO UPDATE
SET numerator = EXCLUDED.numerator, denominator = EXCLUDED.denominator,
    samples = EXCLUDED.samples, computed_at = EXCLUDED.computed_at
"""

STAGE_SQL = """
CREATE TEMP TABLE IF NOT EXISTS rates_stage (
    area_code text, kind text, metric text, hour timestamptz,
    numerator double precision, denominator double precision, samples bigint
) ON COMMIT DELETE ROWS
"""

DELETE_RANGE_SQL = """
DELETE FROM rates_hourly
WHERE kind = %(kind)s AND hour >= %(start)s AND hour < %(end)s
  AND (%(area)s::text IS NULL OR area_code = %(area)s::text)
"""

DELETE_HOURS_SQL = """
DELETE FROM rates_hourly WHERE kind = %(kind)s AND hour = ANY(%(hours)s)
"""


def _hour(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _copy_rows(conn: psycopg.Connection[Any], rows: Sequence[RateRow]) -> None:
    conn.execute(STAGE_SQL)
    # Inside a caller's open transaction this runs in a savepoint: clear what an earlier call left.
    conn.execute("TRUNCATE rates_stage")
    with conn.cursor().copy(
        "COPY rates_stage (area_code, kind, metric, hour, numerator, denominator, samples)"
        " FROM STDIN"
    ) as copy:
        for r in rows:
            copy.write_row(
                (
                    r.area_code,
                    r.kind,
                    r.metric,
                    _hour(r.hour_ms),
                    r.numerator,
                    r.denominator,
                    r.samples,
                )
            )
    conn.execute(UPSERT_SQL)


def upsert(conn: psycopg.Connection[Any], rows: Sequence[RateRow]) -> int:
    """Insert or update ``rows`` in one transaction; returns the number written."""
    if not rows:
        return 0
    with conn.transaction():
        _copy_rows(conn, rows)
    return len(rows)


def replace_hours(
    conn: psycopg.Connection[Any], kind: str, hours_ms: Sequence[int], rows: Sequence[RateRow]
) -> int:
    """Make ``rows`` the only rows of ``kind`` in the given hours (all areas)."""
    with conn.transaction():
        conn.execute(DELETE_HOURS_SQL, {"kind": kind, "hours": [_hour(h) for h in hours_ms]})
        if rows:
            _copy_rows(conn, rows)
    return len(rows)


def replace_range(
    conn: psycopg.Connection[Any],
    kind: str,
    start_ms: int,
    end_ms: int,
    rows: Sequence[RateRow],
    area: str | None = None,
) -> int:
    """Make ``rows`` the only rows of ``kind`` in [start, end) (and ``area`` when given)."""
    with conn.transaction():
        conn.execute(
            DELETE_RANGE_SQL,
            {"kind": kind, "start": _hour(start_ms), "end": _hour(end_ms), "area": area},
        )
        if rows:
            _copy_rows(conn, rows)
    return len(rows)
