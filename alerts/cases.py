"""Cases: the city's closed loop 发现 → 立案 → 派遣 → 处置 → 核查 → 结案, as a strict state machine.

A case moves one stage forward at a time; verification may send it back to handling (the fix did
not hold), and a detected case may be rejected as not a real problem (which closes it). Every other
move is refused with a message that says which moves are allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import class_row

from cityops.errors import CityopsError

if TYPE_CHECKING:
    from alerts.directory import DeviceDirectory
    from alerts.model import AlertNotice


class CaseError(CityopsError):
    """A case operation is not allowed (e.g. an invalid stage transition)."""


class Stage(StrEnum):
    """Stages of the closed loop."""

    DETECTED = "detected"  # 发现
    FILED = "filed"  # 立案
    DISPATCHED = "dispatched"  # 派遣
    HANDLED = "handled"  # 处置
    VERIFIED = "verified"  # 核查
    CLOSED = "closed"  # 结案

    @property
    def label_zh(self) -> str:
        """The Chinese name used in the city's closed-loop reporting."""
        return _ZH[self]


_ZH = {
    Stage.DETECTED: "发现",
    Stage.FILED: "立案",
    Stage.DISPATCHED: "派遣",
    Stage.HANDLED: "处置",
    Stage.VERIFIED: "核查",
    Stage.CLOSED: "结案",
}

ALLOWED: dict[Stage, tuple[Stage, ...]] = {
    Stage.DETECTED: (Stage.FILED, Stage.CLOSED),  # closed directly = rejected as not a case
    Stage.FILED: (Stage.DISPATCHED,),
    Stage.DISPATCHED: (Stage.HANDLED,),
    Stage.HANDLED: (Stage.VERIFIED,),
    Stage.VERIFIED: (Stage.CLOSED, Stage.HANDLED),  # back to handling when the check fails
    Stage.CLOSED: (),
}


def check_transition(current: Stage, target: Stage) -> None:
    """Raise CaseError unless ``current`` → ``target`` is an allowed move."""
    allowed = ALLOWED[current]
    if target not in allowed:
        if not allowed:
            raise CaseError(f"the case is {current.value} ({current.label_zh}); it cannot move")
        names = ", ".join(f"{s.value} ({s.label_zh})" for s in allowed)
        raise CaseError(
            f"a case cannot move from {current.value} ({current.label_zh}) to {target.value} "
            f"({target.label_zh}); allowed: {names}"
        )


# --- storage ----------------------------------------------------------------------------------

_STAGE_COLUMN = {
    Stage.FILED: "filed_at",
    Stage.DISPATCHED: "dispatched_at",
    Stage.HANDLED: "handled_at",
    Stage.VERIFIED: "verified_at",
    Stage.CLOSED: "closed_at",
}

CATEGORY_KIND = {
    "heating": "heating",
    "streetlight": "streetlight",
    "manhole": "manhole",
    "charging": "charger",
}

_DEFAULT_UNITS = {
    "streetlight": "lighting maintenance team",
    "heating": "heat company",
    "manhole": "well owner",
    "charger": "charging operator",
}


def responsible_unit(kind: str | None, attributes: Mapping[str, Any]) -> str | None:
    """Who a case about a device of ``kind`` is addressed to."""
    if kind == "manhole" and attributes.get("owner_unit"):
        return f"owner: {attributes['owner_unit']}"
    if kind == "heating" and attributes.get("heat_company"):
        return str(attributes["heat_company"])
    if kind == "charger" and attributes.get("site_id"):
        return f"charging operator (site {attributes['site_id']})"
    return _DEFAULT_UNITS.get(kind or "")


INSERT_CASE_SQL = """
INSERT INTO cases (stage, title, source, kind, category, severity, area_code, device_id, lat, lon,
                   responsible_unit, alert_id, detected_at, first_complaint_at)
VALUES ('detected', %(title)s, %(source)s, %(kind)s, %(category)s, %(severity)s, %(area_code)s,
        %(device_id)s, %(lat)s, %(lon)s, %(unit)s, %(alert_id)s, %(detected_at)s,
        %(first_complaint_at)s)
RETURNING id
"""

CASE_EVENT_SQL = """
INSERT INTO case_events (case_id, at, from_stage, to_stage, actor, comment)
VALUES (%s, %s, %s, %s, %s, %s)
"""


def open_for_alert(
    conn: psycopg.Connection[Any], notice: AlertNotice, directory: DeviceDirectory, now: datetime
) -> int:
    """The open case for a firing alert: the device's (or the alert's) open case, or a new one."""
    device_id = notice.labels.get("device_id")
    if device_id:
        row = conn.execute(
            "SELECT id FROM cases WHERE device_id = %s AND stage <> 'closed' "
            "ORDER BY detected_at LIMIT 1",
            (device_id,),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT c.id FROM cases c JOIN alerts a ON a.id = c.alert_id "
            "WHERE a.fingerprint = %s AND c.stage <> 'closed' LIMIT 1",
            (notice.fingerprint,),
        ).fetchone()
    if row is not None:
        case_id = int(row[0])
    else:
        info = directory.get(device_id) if device_id else None
        attrs = info.attributes if info else {}
        kind = notice.labels.get("kind")
        created = conn.execute(
            INSERT_CASE_SQL,
            {
                "title": notice.summary or notice.rule,
                "source": "alert",
                "kind": kind,
                "category": None,
                "severity": notice.severity.value,
                "area_code": notice.labels.get("area_code"),
                "device_id": device_id,
                "lat": info.lat if info else None,
                "lon": info.lon if info else None,
                "unit": responsible_unit(kind, attrs),
                "alert_id": notice.alert_id,
                "detected_at": notice.fired_at or now,
                "first_complaint_at": None,
            },
        ).fetchone()
        if created is None:
            raise CaseError("the case was not stored")
        case_id = int(created[0])
        conn.execute(
            CASE_EVENT_SQL,
            (
                case_id,
                notice.fired_at or now,
                None,
                "detected",
                "cityops",
                f"opened by alert {notice.alert_id}",
            ),
        )
    conn.execute("UPDATE alerts SET case_id = %s WHERE id = %s", (case_id, notice.alert_id))
    return case_id


def _as_datetime(value: Any, default: datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return default
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return default


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = 6_371_000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def link_complaint(
    conn: psycopg.Connection[Any],
    complaint: Mapping[str, Any],
    directory: DeviceDirectory,
    now: datetime,
    *,
    radius_m: float = 300.0,
    window: timedelta = timedelta(hours=48),
) -> int:
    """Link a complaint to a case about the same device, or nearby and recent; else open one.

    Returns the case id. A complaint already linked keeps its case.
    """
    complaint_id = str(complaint["complaint_id"])
    linked = conn.execute(
        "SELECT case_id FROM case_complaints WHERE complaint_id = %s", (complaint_id,)
    ).fetchone()
    if linked is not None:
        return int(linked[0])
    received = _as_datetime(complaint.get("received_at"), now)
    kind = CATEGORY_KIND.get(str(complaint.get("category")))
    device_id = complaint.get("device_id")
    info = directory.get(str(device_id)) if device_id else None
    lat = complaint.get("lat") if complaint.get("lat") is not None else (info.lat if info else None)
    lon = complaint.get("lon") if complaint.get("lon") is not None else (info.lon if info else None)
    area = complaint.get("area_code") or (info.area_code if info else None)
    case_id: int | None = None
    reason = ""
    if device_id:
        row = conn.execute(
            "SELECT id FROM cases WHERE device_id = %s AND (stage <> 'closed' OR closed_at > %s) "
            "ORDER BY detected_at DESC LIMIT 1",
            (device_id, received - window),
        ).fetchone()
        if row is not None:
            case_id, reason = int(row[0]), "same device"
    if case_id is None and kind is not None:
        candidates = conn.execute(
            "SELECT id, lat, lon, area_code FROM cases WHERE kind = %s "
            "AND detected_at BETWEEN %s AND %s AND (stage <> 'closed' OR closed_at > %s) "
            "ORDER BY detected_at DESC LIMIT 500",
            (kind, received - window, received + window, received - window),
        ).fetchall()
        best: tuple[float, int] | None = None
        for cid, clat, clon, carea in candidates:
            if lat is not None and lon is not None and clat is not None and clon is not None:
                d = _distance_m(float(lat), float(lon), float(clat), float(clon))
                if d <= radius_m and (best is None or d < best[0]):
                    best = (d, int(cid))
            elif (lat is None or lon is None) and area is not None and carea == area:
                best = best or (math.inf, int(cid))
        if best is not None:
            case_id = best[1]
            reason = (
                f"nearby ({best[0]:.0f} m)"
                if math.isfinite(best[0])
                else "same area, no coordinates"
            )
    if case_id is None:
        created = conn.execute(
            INSERT_CASE_SQL,
            {
                "title": str(complaint.get("text") or f"hotline complaint {complaint_id}")[:200],
                "source": "complaint",
                "kind": kind,
                "category": complaint.get("category"),
                "severity": None,
                "area_code": area,
                "device_id": device_id,
                "lat": lat,
                "lon": lon,
                "unit": responsible_unit(kind, info.attributes if info else {}),
                "alert_id": None,
                "detected_at": received,
                "first_complaint_at": received,
            },
        ).fetchone()
        if created is None:
            raise CaseError("the case was not stored")
        case_id = int(created[0])
        reason = "new case from the complaint"
        conn.execute(
            CASE_EVENT_SQL,
            (case_id, received, None, "detected", "hotline", f"complaint {complaint_id}"),
        )
    conn.execute(
        "UPDATE cases SET first_complaint_at = least(coalesce(first_complaint_at, %s), %s) "
        "WHERE id = %s",
        (received, received, case_id),
    )
    conn.execute(
        "INSERT INTO case_complaints (complaint_id, case_id, reason) VALUES (%s, %s, %s) "
        "ON CONFLICT (complaint_id) DO NOTHING",
        (complaint_id, case_id, reason),
    )
    return case_id


def advance(
    conn: psycopg.Connection[Any],
    case_id: int,
    target: Stage | str,
    actor: str,
    at: datetime,
    comment: str = "",
) -> Stage:
    """Move a case to ``target`` if the closed loop allows it; return the new stage."""
    try:
        target = Stage(target)
    except ValueError:
        allowed = ", ".join(s.value for s in Stage)
        raise CaseError(f"stage: {target!r} is not one of {allowed}") from None
    if not actor.strip():
        raise CaseError("actor: must not be empty")
    with conn.transaction():
        row = conn.execute(
            "SELECT stage FROM cases WHERE id = %s FOR UPDATE", (case_id,)
        ).fetchone()
        if row is None:
            raise CaseError(f"there is no case {case_id}")
        current = Stage(row[0])
        check_transition(current, target)
        rejected = current is Stage.DETECTED and target is Stage.CLOSED
        conn.execute(
            f"UPDATE cases SET stage = %s, {_STAGE_COLUMN[target]} = %s, "
            "rejected = rejected OR %s WHERE id = %s",
            (target.value, at, rejected, case_id),
        )
        conn.execute(CASE_EVENT_SQL, (case_id, at, current.value, target.value, actor, comment))
    return target


@dataclass(frozen=True, kw_only=True, slots=True)
class CaseRow:
    """A case as listed."""

    id: int
    stage: str
    title: str
    source: str
    kind: str | None
    severity: str | None
    area_code: str | None
    device_id: str | None
    responsible_unit: str | None
    alert_id: int | None
    detected_at: datetime
    closed_at: datetime | None
    first_complaint_at: datetime | None
    rejected: bool


LIST_CASES_SQL = """
SELECT id, stage, title, source, kind, severity, area_code, device_id, responsible_unit, alert_id,
       detected_at, closed_at, first_complaint_at, rejected
FROM cases
WHERE (%(stage)s::text IS NULL OR stage = %(stage)s)
  AND (%(open)s IS FALSE OR stage <> 'closed')
  AND (%(area)s::text IS NULL OR area_code = %(area)s)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC
LIMIT %(limit)s
"""


def list_cases(
    conn: psycopg.Connection[Any],
    *,
    stage: str | None = None,
    open_only: bool = False,
    area: str | None = None,
    kind: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[CaseRow]:
    """Cases newest first, filtered; page with ``before``."""
    if stage is not None and stage not in {s.value for s in Stage}:
        raise CaseError(f"stage: {stage!r} is not one of {', '.join(s.value for s in Stage)}")
    if not 1 <= limit <= 1000:
        raise CaseError("limit: must be between 1 and 1000")
    with conn.cursor(row_factory=class_row(CaseRow)) as cur:
        return cur.execute(
            LIST_CASES_SQL,
            {
                "stage": stage,
                "open": open_only,
                "area": area,
                "kind": kind,
                "before": before,
                "limit": limit,
            },
        ).fetchall()


KPI_SQL = """
SELECT count(*) FILTER (WHERE NOT rejected),
       count(*) FILTER (WHERE stage = 'closed' AND NOT rejected),
       count(*) FILTER (WHERE NOT rejected AND source = 'alert'
                        AND (first_complaint_at IS NULL OR detected_at < first_complaint_at)),
       avg(extract(epoch FROM closed_at - detected_at)) FILTER (WHERE stage = 'closed'
                                                                 AND NOT rejected),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM closed_at - detected_at))
           FILTER (WHERE stage = 'closed' AND NOT rejected),
       avg(extract(epoch FROM dispatched_at - detected_at)) FILTER (WHERE dispatched_at IS NOT NULL)
FROM cases
WHERE detected_at >= %(start)s AND detected_at < %(end)s
  AND (%(area)s::text IS NULL OR area_code = %(area)s)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class CaseKpis:
    """Case timings and proactive discovery over a period (numerators and denominators kept)."""

    cases: int
    closed: int
    proactive: int
    mean_closure_s: float | None
    median_closure_s: float | None
    mean_dispatch_s: float | None

    @property
    def proactive_share(self) -> float | None:
        """Share of cases sensors detected before any complaint (未诉先办)."""
        return self.proactive / self.cases if self.cases else None

    @property
    def closure_rate(self) -> float | None:
        """Share of cases closed."""
        return self.closed / self.cases if self.cases else None


def kpis(
    conn: psycopg.Connection[Any],
    start: datetime,
    end: datetime,
    *,
    area: str | None = None,
    kind: str | None = None,
) -> CaseKpis:
    """Case KPIs for cases detected in [start, end)."""
    row = conn.execute(KPI_SQL, {"start": start, "end": end, "area": area, "kind": kind}).fetchone()
    if row is None:
        raise CaseError("no KPI row")
    cases_n, closed, proactive, mean_c, median_c, mean_d = row
    return CaseKpis(
        cases=int(cases_n),
        closed=int(closed),
        proactive=int(proactive),
        mean_closure_s=None if mean_c is None else float(mean_c),
        median_closure_s=None if median_c is None else float(median_c),
        mean_dispatch_s=None if mean_d is None else float(mean_d),
    )
