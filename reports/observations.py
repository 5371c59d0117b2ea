"""Stored indicator data: local indicators and targets, dated observations and forecasts.

Observations come from CSV import, the API or the CLI, each with a source and a note; a value
supplied by another authority may carry that authority's status. Forecasts always carry a reason.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg

from cityops.errors import ValidationError
from reports import catalog as catalog_mod
from reports.catalog import FIELDS, Catalog, Indicator
from reports.evaluation import (
    QUALITATIVE_MEANING,
    STATUS_LABELS,
    Forecast,
    Observation,
    Status,
    allowed_values,
)

OBSERVATION_COLUMNS = ("indicator", "observed_on", "value", "status", "source", "note", "scope")

LOCAL_SQL = f"SELECT {', '.join(FIELDS)} FROM indicator_local ORDER BY key"

UPSERT_LOCAL_SQL = f"""
INSERT INTO indicator_local ({", ".join(FIELDS)}, created_by)
VALUES ({", ".join("%(" + f + ")s" for f in FIELDS)}, %(created_by)s)
ON CONFLICT (key) DO UPDATE SET
{", ".join(f"{f} = EXCLUDED.{f}" for f in FIELDS if f != "key")},
created_by = EXCLUDED.created_by, created_at = now()
"""

UPSERT_OBSERVATION_SQL = """
INSERT INTO indicator_observations
    (indicator, scope, observed_on, value, status, source, note, entered_by)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (indicator, scope, observed_on, source) DO UPDATE
SET value = EXCLUDED.value, status = EXCLUDED.status, note = EXCLUDED.note,
    entered_by = EXCLUDED.entered_by, entered_at = now()
RETURNING id
"""

OBSERVATIONS_SQL = """
SELECT indicator, observed_on, value, status, source, note, scope
FROM indicator_observations
WHERE (%(indicator)s::text IS NULL OR indicator = %(indicator)s)
  AND (%(until)s::date IS NULL OR observed_on <= %(until)s)
  AND (%(scope)s::text IS NULL OR scope = %(scope)s)
ORDER BY indicator, observed_on, source
"""

UPSERT_FORECAST_SQL = """
INSERT INTO indicator_forecasts (indicator, made_on, value, proposed_target, reason, entered_by)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (indicator, made_on) DO UPDATE
SET value = EXCLUDED.value, proposed_target = EXCLUDED.proposed_target,
    reason = EXCLUDED.reason, entered_by = EXCLUDED.entered_by, entered_at = now()
RETURNING id
"""

FORECASTS_SQL = """
SELECT DISTINCT ON (indicator) indicator, made_on, value, reason, proposed_target
FROM indicator_forecasts
WHERE made_on <= %s
ORDER BY indicator, made_on DESC
"""


def load_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    """The shipped catalog merged with the local indicators stored in the database."""
    rows = conn.execute(LOCAL_SQL).fetchall()
    local = [
        catalog_mod.indicator_from_row(
            {
                f: "" if v is None else (repr(v) if isinstance(v, float) else str(v))
                for f, v in zip(FIELDS, row, strict=True)
            },
            local=True,
        )
        for row in rows
    ]
    return catalog_mod.build(local)


def save_local(conn: psycopg.Connection[Any], indicator: Indicator, by: str) -> None:
    """Add a local indicator, or replace a shipped indicator's definition (e.g. a local target)."""
    params: dict[str, Any] = {
        "key": indicator.key,
        "plan": indicator.plan,
        "no": indicator.no,
        "name_zh": indicator.name_zh,
        "name_en": indicator.name_en,
        "category": indicator.category,
        "unit": indicator.unit,
        "direction": indicator.direction.value,
        "kind": indicator.kind.value,
        "baseline_2020": indicator.baseline,
        "baseline_note": indicator.baseline_note,
        "target_2025": indicator.target,
        "target_change": indicator.target_change,
        "target_text": indicator.target_text,
        "attribute": indicator.attribute.value,
        "sensor_metric": indicator.sensor_metric.value if indicator.sensor_metric else None,
        "scope": indicator.scope,
        "reference_value": indicator.reference_value,
        "reference_date": indicator.reference_date,
        "created_by": by,
    }
    conn.execute(UPSERT_LOCAL_SQL, params)


def parse_status(text: str | None) -> Status | None:
    """A status by value (``on_track``) or by either label (可以完成, on track); None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    for status in Status:
        zh, en = STATUS_LABELS[status]
        if text in (status.value, zh, en) or (status is Status.ADJUST and text == "完成存在困难"):
            return status
    allowed = ", ".join(s.value for s in Status)
    raise ValidationError(f"status {text!r} is not one of {allowed} (or their labels)", "status")


def _parse_date(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as err:
        raise ValidationError(f"{field}: {text!r} is not a date (YYYY-MM-DD)", field) from err


def _parse_value(text: str | None, field: str = "value") -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise ValidationError(f"{field}: {text!r} is not a number", field) from err
    if not math.isfinite(value):
        raise ValidationError(f"{field}: must be a finite number", field)
    return value


def make_observation(
    cat: Catalog,
    *,
    indicator: str,
    observed_on: date,
    value: float | None,
    source: str,
    status: Status | None = None,
    note: str = "",
    scope: str = "district",
) -> Observation:
    """A validated observation: known indicator, a source, a finite value or a status.

    A yes/no (qualitative) indicator accepts only its allowed values (0 or 1) besides a status.
    """
    ind = cat.get(indicator)
    if not source.strip():
        raise ValidationError("source: say where the value comes from (e.g. 区统计局)", "source")
    if value is None and status is None:
        raise ValidationError("give a value, a status, or both", "value")
    if value is not None and not math.isfinite(value):
        raise ValidationError("value: must be a finite number", "value")
    allowed = allowed_values(ind)
    if value is not None and allowed is not None and value not in allowed:
        raise ValidationError(
            f"value: {value:g} is not allowed for {indicator} ({ind.name_zh or ind.name_en}, "
            f"a yes/no indicator); allowed values: {QUALITATIVE_MEANING}",
            "value",
        )
    if not scope.strip():
        raise ValidationError("scope: must not be empty", "scope")
    return Observation(
        indicator=indicator,
        on=observed_on,
        value=value,
        source=source.strip(),
        status=status,
        note=note.strip(),
        scope=scope.strip(),
    )


def save_observation(conn: psycopg.Connection[Any], obs: Observation, by: str) -> int:
    """Store an observation (a second one for the same indicator, day, scope and source replaces
    the first); return its id."""
    row = conn.execute(
        UPSERT_OBSERVATION_SQL,
        (
            obs.indicator,
            obs.scope,
            obs.on,
            obs.value,
            obs.status.value if obs.status else None,
            obs.source,
            obs.note,
            by,
        ),
    ).fetchone()
    assert row is not None  # noqa: S101 - RETURNING always yields the row
    return int(row[0])


@dataclass(frozen=True, kw_only=True, slots=True)
class ImportResult:
    """What a CSV import stored."""

    stored: int
    indicators: int


def parse_observations_csv(cat: Catalog, text: str) -> list[Observation]:
    """Validate every row of an observations CSV; ValidationError listing the bad lines."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = set(reader.fieldnames or [])
    missing = {"indicator", "observed_on", "source"} - header
    if missing:
        raise ValidationError(
            f"observations CSV: missing columns {', '.join(sorted(missing))}; expected "
            + ",".join(OBSERVATION_COLUMNS)
        )
    out: list[Observation] = []
    errors: list[str] = []
    for line, row in enumerate(reader, start=2):
        try:
            out.append(
                make_observation(
                    cat,
                    indicator=(row.get("indicator") or "").strip(),
                    observed_on=_parse_date(row.get("observed_on") or "", "observed_on"),
                    value=_parse_value(row.get("value")),
                    status=parse_status(row.get("status")),
                    source=row.get("source") or "",
                    note=row.get("note") or "",
                    scope=(row.get("scope") or "").strip() or "district",
                )
            )
        except ValidationError as err:
            errors.append(f"line {line}: {err}")
    if errors:
        shown = "; ".join(errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise ValidationError(
            f"observations CSV has {len(errors)} bad rows, none stored: {shown}{more}"
        )
    if not out:
        raise ValidationError("observations CSV has no rows")
    return out


def import_observations(
    conn: psycopg.Connection[Any], cat: Catalog, text: str, by: str
) -> ImportResult:
    """Validate then store all rows of an observations CSV in one transaction (all or none)."""
    rows = parse_observations_csv(cat, text)
    with conn.transaction():
        for obs in rows:
            save_observation(conn, obs, by)
    return ImportResult(stored=len(rows), indicators=len({o.indicator for o in rows}))


def list_observations(
    conn: psycopg.Connection[Any],
    *,
    indicator: str | None = None,
    until: date | None = None,
    scope: str | None = None,
) -> list[Observation]:
    """Stored observations, by indicator and date."""
    rows = conn.execute(
        OBSERVATIONS_SQL, {"indicator": indicator, "until": until, "scope": scope}
    ).fetchall()
    return [
        Observation(
            indicator=r[0],
            on=r[1],
            value=r[2],
            status=Status(r[3]) if r[3] else None,
            source=r[4],
            note=r[5],
            scope=r[6],
        )
        for r in rows
    ]


def save_forecast(conn: psycopg.Connection[Any], cat: Catalog, fc: Forecast, by: str) -> int:
    """Store a forecast (one per indicator and day); the reason is required."""
    cat.get(fc.indicator)
    if not fc.reason.strip():
        raise ValidationError("reason: a forecast needs a reason", "reason")
    for name, v in (("value", fc.value), ("proposed_target", fc.proposed_target)):
        if v is not None and not math.isfinite(v):
            raise ValidationError(f"{name}: must be a finite number", name)
    row = conn.execute(
        UPSERT_FORECAST_SQL,
        (fc.indicator, fc.made_on, fc.value, fc.proposed_target, fc.reason.strip(), by),
    ).fetchone()
    assert row is not None  # noqa: S101 - RETURNING always yields the row
    return int(row[0])


def latest_forecasts(conn: psycopg.Connection[Any], as_of: date) -> dict[str, Forecast]:
    """Each indicator's most recent forecast made on or before ``as_of``."""
    return {
        r[0]: Forecast(indicator=r[0], made_on=r[1], value=r[2], reason=r[3], proposed_target=r[4])
        for r in conn.execute(FORECASTS_SQL, (as_of,)).fetchall()
    }
