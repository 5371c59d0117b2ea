"""The monthly operations report: gathers rates, rankings, cases, hotline, coverage and evaluation.

Every rate is Σnumerator ÷ Σdenominator over the local calendar month (``stream.queries``); the
district value is the sum over its streets/townships, never an average of their percentages.
The result is a plain JSON-ready mapping; ``reports.render_*`` turn it into files. Apart from
``generated_at`` it depends only on the stored data, the catalog and the settings, so a re-run on
the same data gives the same bytes (``content_hash``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg

from alerts import cases as case_kpis
from cityops import registry as device_registry
from cityops.catalog import Kind
from cityops.errors import ValidationError
from cityops.schedule import HeatingCalendar
from cityops.settings import Settings
from reports import evaluation as ev
from reports import freshness
from reports import observations as obs_store
from reports.catalog import Catalog, SensorMetric
from stream import queries, radius
from stream import registry as stream_registry

SCHEMA = 1
SENSOR_SOURCE = "cityops sensors"

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricDef:
    """How one rate is shown: label, unit, scale, which way is better, its coverage metric."""

    kind: Kind
    metric: str
    name_zh: str
    name_en: str
    unit: str  # "ratio" values are fractions shown as percent
    better: str  # "up" or "down"
    numerator: str
    denominator: str
    per_month_scale: float = 0.0  # >0: value × scale × hours in the month (per-100-covers rates)
    coverage: str | None = None


METRICS: tuple[MetricDef, ...] = (
    MetricDef(
        kind=Kind.STREETLIGHT,
        metric="lighting_rate",
        name_zh="城市道路亮灯率",
        name_en="Lighting rate (time-weighted)",
        unit="ratio",
        better="up",
        numerator="lamp-minutes lit inside the on-window",
        denominator="lamp-minutes scheduled on (in-service lamps)",
        coverage="lighting_coverage",
    ),
    MetricDef(
        kind=Kind.STREETLIGHT,
        metric="lighting_snapshot",
        name_zh="亮灯率(夜查快照)",
        name_en="Lighting rate (nightly snapshot)",
        unit="ratio",
        better="up",
        numerator="lamps lit at the nightly check",
        denominator="lamps due on at the check",
        coverage="lighting_snapshot_coverage",
    ),
    MetricDef(
        kind=Kind.HEATING,
        metric="room_temp_compliance",
        name_zh="室温达标率",
        name_en="Room-temperature compliance",
        unit="ratio",
        better="up",
        numerator="sensor-minutes at or above the standard, in season",
        denominator="sensor-minutes observed in season",
        coverage="room_temp_coverage",
    ),
    MetricDef(
        kind=Kind.HEATING,
        metric="complaint_density",
        name_zh="万平方米供热投诉量",
        name_en="Heating complaints per 10,000 m² (pro-rated to a season)",
        unit="per 10,000 m² per season",
        better="down",
        numerator="heating complaints in season",
        denominator="heated area ÷ 10,000 × share of the season",
    ),
    MetricDef(
        kind=Kind.CHARGER,
        metric="charger_availability",
        name_zh="充电桩可用率",
        name_en="Charger availability",
        unit="ratio",
        better="up",
        numerator="connector-minutes not Faulted/Unavailable/offline",
        denominator="connector-minutes (in service)",
        coverage="charger_online",
    ),
    MetricDef(
        kind=Kind.CHARGER,
        metric="charger_utilization",
        name_zh="充电桩利用率",
        name_en="Charger utilization",
        unit="ratio",
        better="up",
        numerator="connector-minutes Charging",
        denominator="connector-minutes (in service)",
    ),
    MetricDef(
        kind=Kind.MANHOLE,
        metric="manhole_alarm_displacement",
        name_zh="井盖位移报警(每百井盖每月)",
        name_en="Cover displacement alarms per 100 covers per month",
        unit="per 100 covers per month",
        better="down",
        numerator="displacement alarm onsets",
        denominator="cover-hours in service ÷ (100 × hours in the month)",
        per_month_scale=100.0,
    ),
    MetricDef(
        kind=Kind.MANHOLE,
        metric="manhole_alarm_opening",
        name_zh="井盖开启报警(每百井盖每月)",
        name_en="Cover opening alarms per 100 covers per month",
        unit="per 100 covers per month",
        better="down",
        numerator="opening alarm onsets",
        denominator="cover-hours in service ÷ (100 × hours in the month)",
        per_month_scale=100.0,
    ),
    MetricDef(
        kind=Kind.MANHOLE,
        metric="manhole_alarm_overflow",
        name_zh="井盖满溢报警(每百井盖每月)",
        name_en="Overflow alarms per 100 covers per month",
        unit="per 100 covers per month",
        better="down",
        numerator="overflow alarm onsets",
        denominator="cover-hours in service ÷ (100 × hours in the month)",
        per_month_scale=100.0,
    ),
    MetricDef(
        kind=Kind.MANHOLE,
        metric="manhole_online",
        name_zh="井盖传感器在线率",
        name_en="Manhole sensor online rate",
        unit="ratio",
        better="up",
        numerator="cover-minutes with data",
        denominator="in-service covers × minutes",
    ),
)
COVERAGE_METRICS = {
    Kind.STREETLIGHT: "lighting_coverage",
    Kind.HEATING: "room_temp_coverage",
    Kind.CHARGER: "charger_online",
    Kind.MANHOLE: "manhole_online",
}

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Month:
    """A local calendar month and its [start, end) in UTC."""

    year: int
    month: int
    zone: str

    @classmethod
    def parse(cls, text: str, zone: str) -> Month:
        """``YYYY-MM``; ValidationError otherwise."""
        m = _MONTH_RE.match(text.strip())
        if not m or not 1 <= int(m.group(2)) <= 12 or not 2000 <= int(m.group(1)) <= 2200:
            raise ValidationError(f"month: {text!r} is not YYYY-MM (e.g. 2026-10)", "month")
        return cls(year=int(m.group(1)), month=int(m.group(2)), zone=zone)

    def shift(self, months: int) -> Month:
        """The month ``months`` later (negative: earlier)."""
        n = self.year * 12 + self.month - 1 + months
        return Month(year=n // 12, month=n % 12 + 1, zone=self.zone)

    @property
    def label(self) -> str:
        """``YYYY-MM``."""
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        """The month's first local day."""
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        """The month's last local day."""
        return self.shift(1).first_day - timedelta(days=1)

    @property
    def start(self) -> datetime:
        """Local midnight of the first day, in UTC."""
        return _local_midnight(self.first_day, self.zone)

    @property
    def end(self) -> datetime:
        """Local midnight after the last day, in UTC (exclusive)."""
        return _local_midnight(self.shift(1).first_day, self.zone)

    @property
    def hours(self) -> float:
        """Hours in the month (DST-safe)."""
        return (self.end - self.start).total_seconds() / 3600


def _local_midnight(day: date, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def _r(value: float | None, digits: int = 9) -> float | None:
    """Round so that summation order in the database cannot change the printed bytes."""
    return None if value is None else round(value, digits)


AREAS_SQL = """
SELECT code, name_zh, coalesce(name_en, ''), type, district, land_area_km2, heated_area_m2
FROM areas ORDER BY code
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class AreaInfo:
    """An area row the report needs."""

    code: str
    name_zh: str
    name_en: str
    type: str
    district: str


def _areas(conn: psycopg.Connection[Any], district: str | None) -> tuple[str, list[AreaInfo]]:
    rows = [
        AreaInfo(code=r[0], name_zh=r[1], name_en=r[2], type=r[3], district=r[4])
        for r in conn.execute(AREAS_SQL).fetchall()
    ]
    districts = sorted({a.district for a in rows})
    if not districts:
        raise ValidationError("the registry has no areas: import them with `cityops areas import`")
    if district is None:
        if len(districts) > 1:
            raise ValidationError(
                f"several districts are registered ({', '.join(districts)}): name one", "district"
            )
        district = districts[0]
    if district not in districts:
        raise ValidationError(
            f"district {district!r} is not registered ({', '.join(districts)})", "district"
        )
    return district, [a for a in rows if a.district == district]


# -- rates -----------------------------------------------------------------------------------


Sums = dict[tuple[str, str], tuple[float, float, int]]  # (area, metric) -> (Σnum, Σden, Σsamples)


def _sums(
    conn: psycopg.Connection[Any], settings: Settings, district: str, start: datetime, end: datetime
) -> Sums:
    """Per-area Σnum/Σden of every metric in [start, end) (a whole number of local months)."""
    out: Sums = {}
    for kind in Kind:
        for rv in queries.rates(
            conn,
            kind=kind.value,
            start=start,
            end=end,
            grain=queries.Grain.MONTH,
            level=queries.Level.AREA,
            district=district,
            timezone=settings.timezone,
        ):
            num, den, n = out.get((rv.scope, rv.metric), (0.0, 0.0, 0))
            out[(rv.scope, rv.metric)] = (num + rv.numerator, den + rv.denominator, n + rv.samples)
    return out


def _value(m: MetricDef, num: float, den: float, hours: float) -> float | None:
    if not den:
        return None
    ratio = num / den
    return ratio * m.per_month_scale * hours if m.per_month_scale else ratio


def _rollup(sums: Sums, codes: Iterable[str], metric: str) -> tuple[float, float, int]:
    num = den = 0.0
    n = 0
    for code in codes:
        a, b, c = sums.get((code, metric), (0.0, 0.0, 0))
        num, den, n = num + a, den + b, n + c
    return num, den, n


def _ranks(values: dict[str, float | None], better: str) -> dict[str, int]:
    """Competition ranking (1, 2, 2, 4): best first; areas without a value are not ranked."""
    present = [(c, v) for c, v in values.items() if v is not None]
    sign = -1.0 if better == "up" else 1.0
    ordered = sorted(present, key=lambda cv: (sign * cv[1], cv[0]))
    ranks: dict[str, int] = {}
    for i, (code, v) in enumerate(ordered):
        prev = ordered[i - 1] if i else None
        ranks[code] = ranks[prev[0]] if prev is not None and _r(prev[1]) == _r(v) else i + 1
    return ranks


def _rate_rows(
    settings: Settings,
    month: Month,
    district: str,
    areas: list[AreaInfo],
    cur: Sums,
    prev: Sums,
    yoy: Sums,
    equipped: dict[str, set[str]] | None = None,
) -> list[dict[str, Any]]:
    """Rate rows; ``equipped`` (kind -> areas with devices of that kind in the month) limits
    the rankings to areas that had devices: an area without any is not ranked (not "first")."""
    codes = [a.code for a in areas]
    hours = {"cur": month.hours, "prev": month.shift(-1).hours, "yoy": month.shift(-12).hours}
    rows: list[dict[str, Any]] = []
    for m in METRICS:
        area_values = {c: _value(m, *_rollup(cur, [c], m.metric)[:2], hours["cur"]) for c in codes}
        with_devices = None if equipped is None else equipped.get(m.kind.value, set())
        ranks = _ranks(
            {c: v for c, v in area_values.items() if with_devices is None or c in with_devices},
            m.better,
        )
        ranked = len(ranks)
        rank_counts: dict[int, int] = {}
        for r in ranks.values():
            rank_counts[r] = rank_counts.get(r, 0) + 1
        scopes: list[tuple[str, list[str], str]] = [(district, codes, "district")]
        scopes += [(c, [c], "area") for c in codes]
        for scope, members, level in scopes:
            num, den, samples = _rollup(cur, members, m.metric)
            value = _value(m, num, den, hours["cur"])
            pnum, pden, _ = _rollup(prev, members, m.metric)
            ynum, yden, _ = _rollup(yoy, members, m.metric)
            pv = _value(m, pnum, pden, hours["prev"])
            yv = _value(m, ynum, yden, hours["yoy"])
            cov_num = cov_den = 0.0
            if m.coverage:
                cov_num, cov_den, _ = _rollup(cur, members, m.coverage)
            row: dict[str, Any] = {
                "metric": m.metric,
                "kind": m.kind.value,
                "scope": scope,
                "level": level,
                "numerator": _r(num),
                "denominator": _r(den),
                "samples": samples,
                "value": _r(value),
                "prev_month": _r(pv),
                "mom_change": _r(value - pv) if value is not None and pv is not None else None,
                "prev_year": _r(yv),
                "yoy_change": _r(value - yv) if value is not None and yv is not None else None,
                "coverage": _r(cov_num / cov_den) if cov_den else None,
                "rank": ranks.get(scope) if level == "area" else None,
                "ranked": ranked,
                "tied": level == "area" and rank_counts.get(ranks.get(scope, -1), 0) > 1,
                "has_devices": level == "district" or with_devices is None or scope in with_devices,
            }
            if m.metric == "complaint_density":
                base = settings.report.heating_baseline_2020
                row["vs_2020"] = _r(value / base - 1) if value is not None else None
            rows.append(row)
    return rows


# -- other sections --------------------------------------------------------------------------


def _radius(
    conn: psycopg.Connection[Any],
    settings: Settings,
    month: Month,
    district: str,
    codes: set[str],
) -> list[dict[str, Any]]:
    area_index = stream_registry.load_areas(conn)
    # The chargers registered during the month (install, commission, decommission, moves).
    present = device_registry.devices_during(
        conn, Kind.CHARGER.value, month.first_day, month.last_day
    )
    devices = stream_registry.as_of(
        stream_registry.load_devices(conn, Kind.CHARGER, area_index), area_index, present
    )
    available = radius.available_connectors(conn, devices, month.start, month.end)
    connectors: dict[str, int] = {}
    for code in present.values():
        connectors[code] = connectors.get(code, 0) + 1
    out = []
    cell_km = settings.report.radius_cell_km
    for r in radius.service_radius(area_index, devices, available, cell_km=cell_km):
        if r.scope != district and r.scope not in codes:
            continue
        n_conn = (
            sum(connectors.get(c, 0) for c in codes)
            if r.scope == district
            else connectors.get(r.scope, 0)
        )
        out.append(
            {
                "scope": r.scope,
                "level": "district" if r.scope == district else "area",
                "public_sites": r.sites,
                "connectors_in_service": n_conn,
                "equivalent_radius_km": _r(r.equivalent_km, 6),
                "effective_radius_km": _r(r.effective_km, 6),
                "grid_cells": r.cells,
            }
        )
    out.sort(key=lambda d: (d["level"] != "district", d["scope"]))
    return out


def _cases(
    conn: psycopg.Connection[Any], month: Month, district: str, codes: list[str]
) -> list[dict[str, Any]]:
    rows = []
    per = {c: case_kpis.kpis(conn, month.start, month.end, area=c) for c in codes}
    totals = case_kpis.CaseKpis(
        cases=sum(k.cases for k in per.values()),
        closed=sum(k.closed for k in per.values()),
        proactive=sum(k.proactive for k in per.values()),
        # Means roll up weighted by their counts; a median does not roll up and is left out.
        mean_closure_s=_weighted(
            [(k.mean_closure_s, k.closed) for k in per.values()],
        ),
        median_closure_s=None,
        mean_dispatch_s=None,
    )
    for scope, k, level in [(district, totals, "district")] + [(c, per[c], "area") for c in codes]:
        rows.append(
            {
                "scope": scope,
                "level": level,
                "cases": k.cases,
                "closed": k.closed,
                "closure_rate": _r(k.closure_rate),
                "proactive": k.proactive,
                "proactive_share": _r(k.proactive_share),
                "mean_closure_h": _r(k.mean_closure_s / 3600, 6) if k.mean_closure_s else None,
                "median_closure_h": (
                    _r(k.median_closure_s / 3600, 6) if k.median_closure_s else None
                ),
                "mean_dispatch_h": _r(k.mean_dispatch_s / 3600, 6) if k.mean_dispatch_s else None,
            }
        )
    return rows


def _weighted(pairs: Sequence[tuple[float | None, int]]) -> float | None:
    total = sum(n for v, n in pairs if v is not None)
    if not total:
        return None
    return sum(v * n for v, n in pairs if v is not None) / total


HOTLINE_SQL = """
SELECT c.area_code, c.category, count(*),
       count(cc.case_id),
       count(*) FILTER (WHERE k.stage = 'closed' AND NOT k.rejected)
FROM complaints c
LEFT JOIN case_complaints cc ON cc.complaint_id = c.complaint_id
LEFT JOIN cases k ON k.id = cc.case_id
WHERE c.received_at >= %s AND c.received_at < %s AND c.area_code = ANY(%s)
GROUP BY 1, 2
"""


def _hotline(
    conn: psycopg.Connection[Any], month: Month, district: str, codes: list[str]
) -> list[dict[str, Any]]:
    counts: dict[str, dict[str, list[int]]] = {}
    for area, category, n, linked, resolved in conn.execute(
        HOTLINE_SQL, (month.start, month.end, codes)
    ).fetchall():
        counts.setdefault(area, {})[category] = [int(n), int(linked), int(resolved)]
    rows = []
    for scope, members, level in [(district, codes, "district")] + [
        (c, [c], "area") for c in codes
    ]:
        by_cat: dict[str, int] = {}
        total = linked = resolved = 0
        for c in members:
            for cat, (n, lk, rs) in counts.get(c, {}).items():
                by_cat[cat] = by_cat.get(cat, 0) + n
                total, linked, resolved = total + n, linked + lk, resolved + rs
        rows.append(
            {
                "scope": scope,
                "level": level,
                "complaints": total,
                "by_category": dict(sorted(by_cat.items())),
                "responded": linked,
                "response_rate": _r(linked / total) if total else None,
                "resolved": resolved,
                "resolution_rate": _r(resolved / total) if total else None,
            }
        )
    return rows


MANHOLE_ALARMS_SQL = """
SELECT a.area_code, count(*),
       count(*) FILTER (WHERE a.acked_at IS NOT NULL),
       avg(extract(epoch FROM a.acked_at - coalesce(a.fired_at, a.started_at)))
           FILTER (WHERE a.acked_at IS NOT NULL),
       count(*) FILTER (WHERE EXISTS (
           SELECT 1 FROM alerts p
           WHERE p.kind = 'manhole' AND p.device_id = a.device_id AND p.id <> a.id
             AND p.started_at < a.started_at
             AND p.started_at >= a.started_at - interval '7 days')),
       count(k.id), count(k.id) FILTER (WHERE k.stage = 'closed'
             AND k.closed_at - k.detected_at <= make_interval(secs => %(sla)s))
FROM alerts a LEFT JOIN cases k ON k.id = a.case_id
WHERE a.kind = 'manhole' AND NOT a.cancelled AND a.fired_at IS NOT NULL
  AND a.started_at >= %(start)s AND a.started_at < %(end)s AND a.area_code = ANY(%(codes)s)
GROUP BY 1
"""


def _manhole(
    conn: psycopg.Connection[Any],
    settings: Settings,
    month: Month,
    district: str,
    codes: list[str],
) -> list[dict[str, Any]]:
    per: dict[str, tuple[int, int, float | None, int, int, int]] = {}
    for area, n, acked, ack_s, repeat, with_case, in_sla in conn.execute(
        MANHOLE_ALARMS_SQL,
        {
            "sla": settings.report.manhole_sla_h * 3600,
            "start": month.start,
            "end": month.end,
            "codes": codes,
        },
    ).fetchall():
        per[area] = (
            int(n),
            int(acked),
            None if ack_s is None else float(ack_s),
            int(repeat),
            int(with_case),
            int(in_sla),
        )
    rows = []
    for scope, members, level in [(district, codes, "district")] + [
        (c, [c], "area") for c in codes
    ]:
        parts = [per[c] for c in members if c in per]
        alarms = sum(p[0] for p in parts)
        acked = sum(p[1] for p in parts)
        with_case = sum(p[4] for p in parts)
        in_sla = sum(p[5] for p in parts)
        mean_ack = _weighted([(p[2], p[1]) for p in parts])
        rows.append(
            {
                "scope": scope,
                "level": level,
                "alarms": alarms,
                "acknowledged": acked,
                "mean_ack_min": _r(mean_ack / 60, 6) if mean_ack is not None else None,
                "repeat_within_7d": sum(p[3] for p in parts),
                "with_case": with_case,
                "closed_within_sla": in_sla,
                "sla_share": _r(in_sla / with_case) if with_case else None,
            }
        )
    return rows


PRESENT_SQL = """
SELECT kind, count(DISTINCT (area_code, hour)) FROM rates_hourly
WHERE hour >= %s AND hour < %s AND area_code = ANY(%s) AND metric = ANY(%s) GROUP BY 1
"""


def _devices_by_kind(
    conn: psycopg.Connection[Any], month: Month, codes: list[str]
) -> dict[str, dict[str, int]]:
    """kind -> area -> devices in service during the month (registry history)."""
    devices: dict[str, dict[str, int]] = {}
    wanted = set(codes)
    for kind in COVERAGE_METRICS:
        during = device_registry.devices_during(conn, kind.value, month.first_day, month.last_day)
        for area in during.values():
            if area in wanted:
                per = devices.setdefault(kind.value, {})
                per[area] = per.get(area, 0) + 1
    return devices


def _coverage(
    conn: psycopg.Connection[Any],
    month: Month,
    codes: list[str],
    cur: Sums,
    devices: dict[str, dict[str, int]],
) -> list[dict[str, Any]]:
    """Per kind: in-service devices, area-hours with rates present vs expected, data coverage."""
    present = {
        k: int(n)
        for k, n in conn.execute(
            PRESENT_SQL, (month.start, month.end, codes, list(COVERAGE_METRICS.values()))
        ).fetchall()
    }
    rows = []
    for kind, metric in COVERAGE_METRICS.items():
        areas_with = len(devices.get(kind.value, {}))
        expected = areas_with * round(month.hours)
        num, den, _ = _rollup(cur, codes, metric)
        rows.append(
            {
                "kind": kind.value,
                "devices_in_service": sum(devices.get(kind.value, {}).values()),
                "areas_with_devices": areas_with,
                "area_hours_expected": expected,
                "area_hours_present": present.get(kind.value, 0),
                "area_hours_share": _r(present.get(kind.value, 0) / expected) if expected else None,
                "coverage_metric": metric,
                "data_coverage": _r(num / den) if den else None,
            }
        )
    return rows


def _trends(
    conn: psycopg.Connection[Any], settings: Settings, month: Month, district: str
) -> dict[str, list[dict[str, Any]]]:
    """District monthly values of the indicator-linked rates over the last 13 months."""
    first = month.shift(-12)
    wanted = {
        "lighting_rate": Kind.STREETLIGHT,
        "complaint_density": Kind.HEATING,
        "charger_availability": Kind.CHARGER,
        "room_temp_compliance": Kind.HEATING,
    }
    zone = ZoneInfo(settings.timezone)
    out: dict[str, list[dict[str, Any]]] = {}
    for metric, kind in wanted.items():
        got = {
            rv.period.astimezone(zone).strftime("%Y-%m"): rv.value
            for rv in queries.rates(
                conn,
                kind=kind.value,
                start=first.start,
                end=month.end,
                metric=metric,
                grain=queries.Grain.MONTH,
                level=queries.Level.DISTRICT,
                district=district,
                timezone=settings.timezone,
            )
        }
        out[metric] = [
            {"month": m.label, "value": _r(got.get(m.label))}
            for m in (first.shift(i) for i in range(13))
        ]
    return out


RATES_PRESENT_SQL = """
SELECT count(*) FROM rates_hourly
WHERE hour >= %s AND hour < %s AND area_code = ANY(%s) AND denominator > 0
"""


def _data_presence(
    conn: psycopg.Connection[Any],
    month: Month,
    codes: list[str],
    hotline_rows: list[dict[str, Any]],
    case_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """Whether the month has any data at all; a month without says so instead of showing zeros."""
    row = conn.execute(RATES_PRESENT_SQL, (month.start, month.end, codes)).fetchone()
    rate_rows = int(row[0]) if row else 0
    complaints = sum(r["complaints"] for r in hotline_rows if r["level"] == "district")
    cases = sum(r["cases"] for r in case_rows if r["level"] == "district")
    empty = rate_rows == 0 and complaints == 0 and cases == 0
    return {
        "rate_rows": rate_rows,
        "complaints": complaints,
        "cases": cases,
        "no_data": empty,
        "no_data_note": (
            f"no data for {month.label}: no hourly rates, complaints or cases were stored for "
            "this month (check the month, or load/ingest its data and run `cityops rates "
            "recompute`)"
            if empty
            else None
        ),
    }


# -- evaluation ------------------------------------------------------------------------------


def _season_span(settings: Settings, day: date) -> tuple[datetime, datetime]:
    """The heating season containing ``day``, or the last one before it (to ``day``'s end)."""
    cal = HeatingCalendar(settings.schedule, settings.timezone)
    probe = day
    for _ in range(400):
        noon = datetime(probe.year, probe.month, probe.day, 12, tzinfo=ZoneInfo(settings.timezone))
        span = cal.season_of(noon)
        if span is not None:
            end = min(span[1], _local_midnight(day + timedelta(days=1), settings.timezone))
            return span[0], end
        probe -= timedelta(days=1)
    raise ValidationError("no heating season configured within a year")  # pragma: no cover


def sensor_observations(
    conn: psycopg.Connection[Any],
    settings: Settings,
    cat: Catalog,
    month: Month,
    district: str,
    sums: Sums,
    codes: list[str],
    radius_rows: list[dict[str, Any]],
    day: date | None = None,
) -> list[ev.Observation]:
    """The month's values of sensor-linked district indicators, as observations dated ``day``
    (the month's last day; for a month in progress, its last complete day)."""
    out: list[ev.Observation] = []
    day = month.last_day if day is None else day
    for ind in cat.indicators:
        if ind.sensor_metric is None or ind.scope != "district":
            continue
        value: float | None = None
        note = ""
        if ind.sensor_metric is SensorMetric.LIGHTING_RATE:
            num, den, _ = _rollup(sums, codes, "lighting_rate")
            value = num / den * 100 if den else None
            note = f"time-weighted lighting rate, {month.label}"
        elif ind.sensor_metric is SensorMetric.HEATING_COMPLAINT_DENSITY:
            start, end = _season_span(settings, day)
            vals = queries.rates(
                conn,
                kind=Kind.HEATING.value,
                start=start,
                end=end,
                metric="complaint_density",
                grain=queries.Grain.HOUR,
                level=queries.Level.DISTRICT,
                district=district,
                timezone=settings.timezone,
            )
            num = sum(v.numerator for v in vals)
            den = sum(v.denominator for v in vals)
            # Without any heating data in the season, 0 complaints would be a guess, not a value.
            has_data = freshness.has_heating_data(conn, start, end)
            value = num / den if den and has_data else None
            note = f"season to date from {start.date()}, pro-rated to a season"
        elif ind.sensor_metric is SensorMetric.CHARGER_SERVICE_RADIUS:
            d = next((r for r in radius_rows if r["level"] == "district"), None)
            value = d["equivalent_radius_km"] if d else None
            note = "area-equivalent radius √(A ÷ (π·N sites))"
        elif ind.sensor_metric is SensorMetric.CHARGER_COUNT:
            d = next((r for r in radius_rows if r["level"] == "district"), None)
            value = d["connectors_in_service"] / 10_000 if d else None
            note = "in-service connectors ÷ 10,000"
        if value is not None:
            out.append(
                ev.Observation(
                    indicator=ind.key,
                    on=day,
                    value=round(value, 9),
                    source=SENSOR_SOURCE,
                    note=note,
                )
            )
    return out


PRECEDENCE = (
    "an observation entered for the same indicator and month takes precedence over the value "
    "cityops derives from its sensors (the entered figure is the one the district reports); both "
    "are shown, and they are flagged when they differ by more than the tolerance "
    "(report.sensor_tolerance_pp percentage points for rates, report.sensor_tolerance_rel of the "
    "entered value for amounts)"
)
# Which rates a sensor-derived indicator value is computed from (for provisional marking).
SENSOR_KINDS: dict[SensorMetric, Kind | None] = {
    SensorMetric.LIGHTING_RATE: Kind.STREETLIGHT,
    SensorMetric.HEATING_COMPLAINT_DENSITY: Kind.HEATING,
    SensorMetric.CHARGER_SERVICE_RADIUS: None,  # from the registry and readings, not rates
    SensorMetric.CHARGER_COUNT: None,
}


def rules_from(settings: Settings) -> ev.Rules:
    """The judgement parameters in effect (settings ``report.*``)."""
    r = settings.report
    return ev.Rules(
        gap_tolerance_pp=r.level_gap_tolerance_pp,
        gap_tolerance_rel=r.level_gap_tolerance_rel,
        trend_points=r.level_trend_points,
    )


def sensor_precedence(
    cat: Catalog,
    settings: Settings,
    month: Month,
    stored: Sequence[ev.Observation],
    sensed: Sequence[ev.Observation],
) -> tuple[list[ev.Observation], dict[str, dict[str, Any]]]:
    """Apply the precedence rule: the observations to evaluate and a check per sensor indicator.

    For each sensor-derived value, the latest entered observation of the same indicator dated
    within the month (if any) is used instead; the two are compared against the tolerance.
    """
    used: list[ev.Observation] = []
    checks: dict[str, dict[str, Any]] = {}
    for s in sensed:
        entered = [
            o
            for o in stored
            if o.indicator == s.indicator
            and o.value is not None
            and month.first_day <= o.on <= month.last_day
        ]
        ind = cat.get(s.indicator)
        check: dict[str, Any] = {
            "sensor_value": s.value,
            "sensor_on": s.on.isoformat(),
            "sensor_note": s.note,
            "entered_value": None,
            "entered_on": None,
            "entered_source": None,
            "used": "sensor",
            "difference": None,
            "tolerance": None,
            "tolerance_unit": None,
            "disagrees": False,
        }
        if not entered:
            used.append(s)
            checks[s.indicator] = check
            continue
        e = max(entered, key=lambda o: (o.on, o.source))
        assert e.value is not None  # noqa: S101 - filtered above
        assert s.value is not None  # noqa: S101 - sensor values are never None
        if ev.unit_kind(ind.unit) == "rate":
            diff = abs(s.value - e.value)
            tol, unit = settings.report.sensor_tolerance_pp, "percentage points"
        else:
            diff = abs(s.value - e.value) / abs(e.value) if e.value else abs(s.value)
            tol, unit = settings.report.sensor_tolerance_rel, "share of the entered value"
        check.update(
            {
                "entered_value": e.value,
                "entered_on": e.on.isoformat(),
                "entered_source": e.source,
                "used": "entered",
                "difference": _r(diff),
                "tolerance": tol,
                "tolerance_unit": unit,
                "disagrees": diff > tol + 1e-9,
            }
        )
        checks[s.indicator] = check
    return used, checks


def evaluation_section(
    cat: Catalog,
    observations: Sequence[ev.Observation],
    forecasts: dict[str, ev.Forecast],
    as_of: date,
    plan: str | None = None,
    *,
    rules: ev.Rules = ev.DEFAULT_RULES,
    checks: dict[str, dict[str, Any]] | None = None,
    provisional: set[str] | None = None,
) -> dict[str, Any]:
    """The plan-evaluation table and the counts per attribute, JSON-ready.

    Every row names the rule that judged it (``rule``, ``rule_text``) and its ``inputs``, so an
    evaluator can redo it by hand (docs/indicators.md).
    """
    indicators = cat.by_plan(plan)
    results = [ev.evaluate(i, observations, as_of, forecasts.get(i.key), rules) for i in indicators]
    rows = []
    for ind, e in zip(indicators, results, strict=True):
        rows.append(
            {
                "key": ind.key,
                "plan": ind.plan,
                "no": ind.no,
                "name_zh": ind.name_zh,
                "name_en": ind.name_en,
                "unit": ind.unit,
                "direction": ind.direction.value,
                "kind": ind.kind.value,
                "attribute": ind.attribute.value,
                "sensor_metric": ind.sensor_metric.value if ind.sensor_metric else None,
                "target_text": ind.target_text,
                "baseline": e.baseline,
                "target": e.target,
                "no_target": e.no_target,
                "current": e.current,
                "current_on": e.current_on.isoformat() if e.current_on else None,
                "current_source": e.current_source,
                "task_share": e.task_share,
                "time_share": e.time_share,
                "forecast": e.forecast,
                "forecast_source": e.forecast_source,
                "proposed_target": e.proposed_target,
                "status": e.status.value,
                "status_source": e.status_source,
                "pace": e.pace.value,
                "at_risk": e.at_risk,
                "authority_status": e.authority_status,
                "reason": e.reason,
                "rule": e.rule.value,
                "rule_text": ev.RULE_TEXT[e.rule],
                "inputs": e.inputs,
                "sensor_check": (checks or {}).get(ind.key),
                "provisional": ind.key in (provisional or set()),
                **e.labels(),
            }
        )
    t = ev.tally(indicators, results)
    return {
        "as_of": as_of.isoformat(),
        "time_share": round(ev.time_share(as_of), 6),
        "rules": {
            "parameters": rules.as_dict(),
            "texts": {r.value: text for r, text in ev.RULE_TEXT.items()},
            "sensor_precedence": PRECEDENCE,
        },
        "rows": rows,
        "counts": t.by_attribute,
        "pace_counts": t.pace_by_attribute,
    }


def evaluate_stored(
    conn: psycopg.Connection[Any],
    as_of: date,
    plan: str | None = None,
    rules: ev.Rules | None = None,
) -> dict[str, Any]:
    """Evaluate every indicator from stored observations and forecasts (no sensor values)."""
    cat = obs_store.load_catalog(conn)
    observations = obs_store.list_observations(conn, until=as_of, scope="district")
    section = evaluation_section(
        cat,
        observations,
        obs_store.latest_forecasts(conn, as_of),
        as_of,
        plan,
        rules=ev.DEFAULT_RULES if rules is None else rules,
    )
    section["catalog_version"] = cat.version
    return section


# -- the report ------------------------------------------------------------------------------


def _freshness_windows(settings: Settings, month: Month, as_of: date) -> list[freshness.Window]:
    """The spans of hours a report reads: the month, the previous month and the same month a
    year earlier per kind, and the heating season to ``as_of`` (the complaint density)."""
    windows = [
        freshness.Window(what=f"{label} {kind.value}", kind=kind, start=m.start, end=m.end)
        for label, m in (
            ("month", month),
            ("previous month", month.shift(-1)),
            ("same month last year", month.shift(-12)),
        )
        for kind in Kind
    ]
    season_start, season_end = _season_span(settings, as_of)
    windows.append(
        freshness.Window(
            what="heating season to date (complaint density)",
            kind=Kind.HEATING,
            start=season_start,
            end=season_end,
            density=True,
        )
    )
    return windows


def build(
    conn: psycopg.Connection[Any],
    settings: Settings,
    month_text: str,
    *,
    area: str | None = None,
    district: str | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    stale_rates: str | None = None,
) -> dict[str, Any]:
    """Gather the monthly operations report for a district, or for one street/township.

    ``stale_rates`` (default: setting ``report.stale_rates``) says what to do with hourly rates
    that are missing or older than their readings: ``recompute`` them first, or mark the
    figures computed from them ``provisional`` (reports/freshness.py).
    """
    step = progress or (lambda _name: None)
    policy = stale_rates or settings.report.stale_rates
    if policy not in ("recompute", "provisional"):
        raise ValidationError(
            f"stale_rates: {policy!r} is not one of recompute, provisional", "stale_rates"
        )
    month = Month.parse(month_text, settings.timezone)
    if month.end > datetime.now(UTC) + timedelta(days=31):
        raise ValidationError(f"month {month.label} is in the future", "month")
    if area is not None:
        row = conn.execute("SELECT district FROM areas WHERE code = %s", (area,)).fetchone()
        if row is None:
            raise ValidationError(
                f"area {area!r} is not registered; `cityops areas list` shows the codes", "area"
            )
        district = row[0]
    district, areas = _areas(conn, district)
    codes = [a.code for a in areas]
    step("freshness of the hourly rates")
    clock = (now or datetime.now(UTC)).astimezone(UTC)
    # A month in progress is evaluated as of its last complete local day, and says so.
    today = clock.astimezone(ZoneInfo(settings.timezone)).date()
    partial = month.end > clock
    as_of = min(month.last_day, today - timedelta(days=1)) if partial else month.last_day
    windows = _freshness_windows(settings, month, as_of)
    fresh = freshness.ensure_fresh(conn, settings, windows, codes, policy=policy, now=clock)
    provisional_kinds = set(fresh["provisional_kinds"])
    step("rates")
    cur = _sums(conn, settings, district, month.start, month.end)
    prev = _sums(conn, settings, district, month.shift(-1).start, month.shift(-1).end)
    yoy = _sums(conn, settings, district, month.shift(-12).start, month.shift(-12).end)
    devices_by_kind = _devices_by_kind(conn, month, codes)
    equipped = {k: set(v) for k, v in devices_by_kind.items()}
    rate_rows = _rate_rows(settings, month, district, areas, cur, prev, yoy, equipped)
    step("charging radius")
    radius_rows = _radius(conn, settings, month, district, set(codes))
    step("cases and hotline")
    case_rows = _cases(conn, month, district, codes)
    hotline_rows = _hotline(conn, month, district, codes)
    manhole_rows = _manhole(conn, settings, month, district, codes)
    step("coverage and trends")
    coverage_rows = _coverage(conn, month, codes, cur, devices_by_kind)
    trends = _trends(conn, settings, month, district)
    step("plan evaluation")
    cat = obs_store.load_catalog(conn)
    stored = obs_store.list_observations(conn, until=as_of, scope="district")
    sensed = sensor_observations(
        conn, settings, cat, month, district, cur, codes, radius_rows, as_of
    )
    data = _data_presence(conn, month, codes, hotline_rows, case_rows)
    used, checks = sensor_precedence(cat, settings, month, stored, sensed)
    provisional_keys = {
        o.indicator
        for o in used
        if (metric := cat.get(o.indicator).sensor_metric) is not None
        and (k := SENSOR_KINDS.get(metric)) is not None
        and k.value in provisional_kinds
    }
    evaluation = evaluation_section(
        cat,
        [*stored, *used],
        obs_store.latest_forecasts(conn, as_of),
        as_of,
        rules=rules_from(settings),
        checks=checks,
        provisional=provisional_keys,
    )
    for row in rate_rows:
        row["provisional"] = row["kind"] in provisional_kinds

    def keep(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # An area report shows its own rows and the district's for context; ranks stay
        # district-wide so the area sees where it stands.
        return [r for r in rows if area is None or r["scope"] in (area, district)]

    generated = clock
    return {
        "report": "monthly_operations",
        "schema": SCHEMA,
        "month": month.label,
        "scope": {
            "level": "area" if area else "district",
            "code": area or district,
            "district": district,
            "areas": [
                {"code": a.code, "name_zh": a.name_zh, "name_en": a.name_en, "type": a.type}
                for a in areas
                if area is None or a.code == area
            ],
        },
        "period": {
            "start": month.start.isoformat(),
            "end": month.end.isoformat(),
            "timezone": settings.timezone,
            "hours": month.hours,
        },
        "catalog_version": cat.version,
        "definitions": {
            m.metric: {
                "kind": m.kind.value,
                "name_zh": m.name_zh,
                "name_en": m.name_en,
                "unit": m.unit,
                "better": m.better,
                "numerator": m.numerator,
                "denominator": m.denominator,
                "coverage_metric": m.coverage,
            }
            for m in METRICS
        },
        "parameters": {
            "schedule": settings.schedule.model_dump(mode="json"),
            "stream": settings.stream.model_dump(mode="json"),
            "report": {
                "heating_baseline_2020": settings.report.heating_baseline_2020,
                "manhole_sla_hours": settings.report.manhole_sla_h,
                "radius_cell_km": settings.report.radius_cell_km,
                "rollup": "Σnumerator ÷ Σdenominator over local-month hours and areas",
                "ranking": "competition ranking over the district's streets/townships",
                "level_gap_tolerance_pp": settings.report.level_gap_tolerance_pp,
                "level_gap_tolerance_rel": settings.report.level_gap_tolerance_rel,
                "level_trend_points": settings.report.level_trend_points,
                "sensor_tolerance_pp": settings.report.sensor_tolerance_pp,
                "sensor_tolerance_rel": settings.report.sensor_tolerance_rel,
                "stale_rates": policy,
                "registry": "devices counted as registered during the month (install, commission, "
                "decommission dates and moves between areas)",
            },
        },
        "inputs": {"month": month.label, "area": area, "district": district},
        "rates": keep(rate_rows),
        "radius": keep(radius_rows),
        "cases": keep(case_rows),
        "hotline": keep(hotline_rows),
        "manhole_alarms": keep(manhole_rows),
        "coverage": coverage_rows,
        "trends": trends,
        "evaluation": evaluation,
        "completeness": {
            "partial": partial,
            "as_of": as_of.isoformat(),
            "time_share": round(ev.time_share(as_of), 6) if as_of >= ev.PLAN_START else None,
            "note": (
                f"partial: {month.label} is in progress; figures cover the data up to now and the "
                f"evaluation is as of its last complete day, {as_of.isoformat()}"
                if partial
                else f"complete month; evaluation as of {as_of.isoformat()}"
            ),
            **data,
        },
        "freshness": fresh,
        "provisional": bool(provisional_kinds),
        "generated_at": generated.isoformat(),
    }


def content_hash(report: dict[str, Any]) -> str:
    """SHA-256 of the report's canonical JSON without ``generated_at`` (same data, same hash)."""
    body = {k: v for k, v in report.items() if k != "generated_at"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


RECORD_SQL = """
INSERT INTO report_runs (month, area_code, catalog_version, content_sha256, formats, generated_by)
VALUES (%s, %s, %s, %s, %s, %s)
"""


def record_run(
    conn: psycopg.Connection[Any], report: dict[str, Any], formats: Sequence[str], by: str
) -> str:
    """Remember that a report was produced (inputs, catalog version, content hash)."""
    digest = content_hash(report)
    conn.execute(
        RECORD_SQL,
        (
            date.fromisoformat(report["month"] + "-01"),
            report["inputs"]["area"],
            report["catalog_version"],
            digest,
            list(formats),
            by,
        ),
    )
    return digest
