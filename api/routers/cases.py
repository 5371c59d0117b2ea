"""Cases of the closed loop (list, detail, stage transitions) and hotline complaints.

Stage moves go through alerts.cases.advance, the state machine `cityops cases advance` uses, so
a move the loop does not allow is refused with the same message (409). Complaints posted here are
checked against the catalog like those arriving over MQTT, stored once per id, and linked to a
case the same way the alert engine links them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query
from psycopg.rows import class_row
from pydantic import BaseModel, ConfigDict, Field

from alerts import cases
from alerts.directory import DeviceDirectory, DeviceInfo
from api.deps import ConnDep, Duty, LimitQuery, SettingsDep, Viewer, page_limit
from api.errors import bad_request, conflict, from_domain, not_found
from api.routers.common import (
    BIGINT_MAX,
    CursorQuery,
    Page,
    check_range,
    check_time,
    int_cursor,
    make_cursor,
    split_cursor,
)
from cityops import catalog
from cityops.complaints import INSERT_COMPLAINT_SQL
from cityops.errors import CityopsError, ValidationError

router = APIRouter(tags=["cases"])

CaseId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


class Case(BaseModel):
    """A case as listed."""

    id: int
    stage: cases.Stage
    stage_zh: str
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


class CaseEvent(BaseModel):
    """One step of a case: who moved it from which stage to which, when."""

    at: datetime
    from_stage: str | None
    to_stage: str
    actor: str
    comment: str


class LinkedComplaint(BaseModel):
    """A hotline complaint linked to a case."""

    complaint_id: str
    received_at: datetime
    category: str
    reason: str


class CaseDetail(Case):
    """A case with its steps and linked complaints."""

    filed_at: datetime | None
    dispatched_at: datetime | None
    handled_at: datetime | None
    verified_at: datetime | None
    events: list[CaseEvent]
    complaints: list[LinkedComplaint]


class TransitionIn(BaseModel):
    """A stage move."""

    model_config = ConfigDict(extra="forbid")

    stage: cases.Stage
    comment: str = Field(default="", max_length=2000)


class Complaint(BaseModel):
    """A stored hotline complaint."""

    complaint_id: str
    received_at: datetime
    category: str
    area_code: str | None
    address: str | None
    lat: float | None
    lon: float | None
    device_id: str | None
    text: str | None
    status: str
    source: str | None
    case_id: int | None


class ComplaintIn(BaseModel):
    """A hotline complaint (fields and limits as in the device catalog, docs/catalog.md)."""

    model_config = ConfigDict(extra="forbid")

    complaint_id: str = Field(min_length=1, max_length=64)
    received_at: datetime
    category: catalog.ComplaintCategory
    area_code: str | None = Field(default=None, max_length=32)
    address: str | None = Field(default=None, max_length=500)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    device_id: str | None = Field(default=None, max_length=64)
    text: str | None = Field(default=None, max_length=4000)
    status: catalog.ComplaintStatus = catalog.ComplaintStatus.RECEIVED


def _case(row: cases.CaseRow) -> dict[str, Any]:
    data = {k: getattr(row, k) for k in cases.CaseRow.__dataclass_fields__}
    data["stage_zh"] = cases.Stage(row.stage).label_zh
    return data


@router.get("/cases", response_model=Page[Case])
def list_cases(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    stage: cases.Stage | None = None,
    open: Annotated[bool, Query(description="Only cases not closed.")] = False,
    area_code: Annotated[str | None, Query(max_length=64)] = None,
    kind: catalog.Kind | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[Case]:
    """Cases newest first, filtered by stage, area and kind."""
    limit = page_limit(settings, limit, hard_max=1000)
    try:
        rows = cases.list_cases(
            conn,
            stage=stage.value if stage else None,
            open_only=open,
            area=area_code,
            kind=kind.value if kind else None,
            before=int_cursor(cursor),
            limit=limit,
        )
    except CityopsError as err:
        raise from_domain(err) from err
    items = [Case(**_case(r)) for r in rows]
    return Page(items=items, next_cursor=str(items[-1].id) if len(items) == limit else None)


def _case_detail(conn: psycopg.Connection[Any], case_id: int) -> CaseDetail:
    with conn.cursor(row_factory=class_row(cases.CaseRow)) as cur:
        row = cur.execute(
            "SELECT id, stage, title, source, kind, severity, area_code, device_id, "
            "responsible_unit, alert_id, detected_at, closed_at, first_complaint_at, rejected "
            "FROM cases WHERE id = %s",
            (case_id,),
        ).fetchone()
    if row is None:
        raise not_found(f"there is no case {case_id}")
    times = conn.execute(
        "SELECT filed_at, dispatched_at, handled_at, verified_at FROM cases WHERE id = %s",
        (case_id,),
    ).fetchone()
    assert times is not None  # the row was just read  # noqa: S101
    events = conn.execute(
        "SELECT at, from_stage, to_stage, actor, comment FROM case_events "
        "WHERE case_id = %s ORDER BY at, id",
        (case_id,),
    ).fetchall()
    linked = conn.execute(
        "SELECT c.complaint_id, c.received_at, c.category, l.reason FROM case_complaints l "
        "JOIN complaints c USING (complaint_id) WHERE l.case_id = %s ORDER BY c.received_at "
        "LIMIT 1000",
        (case_id,),
    ).fetchall()
    return CaseDetail(
        **_case(row),
        filed_at=times[0],
        dispatched_at=times[1],
        handled_at=times[2],
        verified_at=times[3],
        events=[
            CaseEvent(at=e[0], from_stage=e[1], to_stage=e[2], actor=e[3], comment=e[4])
            for e in events
        ],
        complaints=[
            LinkedComplaint(complaint_id=c[0], received_at=c[1], category=c[2], reason=c[3])
            for c in linked
        ],
    )


@router.get("/cases/{case_id}", response_model=CaseDetail)
def get_case(_: Viewer, conn: ConnDep, case_id: CaseId) -> CaseDetail:
    """One case with its steps (who, when) and linked complaints."""
    return _case_detail(conn, case_id)


@router.post("/cases/{case_id}/transitions", response_model=CaseDetail)
def move_case(who: Duty, conn: ConnDep, case_id: CaseId, body: TransitionIn) -> CaseDetail:
    """Move a case to the next stage of the closed loop (409 when the loop does not allow it)."""
    _case_detail(conn, case_id)
    try:
        cases.advance(conn, case_id, body.stage, who.name, _now(), body.comment)
    except CityopsError as err:
        raise conflict(str(err)) from err
    conn.commit()
    return _case_detail(conn, case_id)


def _now() -> datetime:
    from cityops import clock

    return clock.now()


# --- complaints -------------------------------------------------------------------------------

COMPLAINT_COLUMNS = (
    "c.complaint_id, c.received_at, c.category, c.area_code, c.address, c.lat, c.lon, "
    "c.device_id, c.text, c.status, c.source, l.case_id"
)
LIST_COMPLAINTS_SQL = f"""
SELECT {COMPLAINT_COLUMNS}
FROM complaints c LEFT JOIN case_complaints l USING (complaint_id)
WHERE (%(category)s::text IS NULL OR c.category = %(category)s)
  AND (%(area)s::text IS NULL OR c.area_code = %(area)s)
  AND (%(status)s::text IS NULL OR c.status = %(status)s)
  AND (%(start)s::timestamptz IS NULL OR c.received_at >= %(start)s)
  AND (%(end)s::timestamptz IS NULL OR c.received_at < %(end)s)
  AND (%(after_ts)s::timestamptz IS NULL
       OR (c.received_at, c.complaint_id) < (%(after_ts)s, %(after_id)s))
ORDER BY c.received_at DESC, c.complaint_id DESC
LIMIT %(limit)s
"""

_COMPLAINT_NAMES = [c.split(".", 1)[1] for c in COMPLAINT_COLUMNS.split(", ")]


def _complaint(row: tuple[Any, ...]) -> Complaint:
    return Complaint(**dict(zip(_COMPLAINT_NAMES, row, strict=True)))


@router.get("/complaints", response_model=Page[Complaint])
def list_complaints(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    category: catalog.ComplaintCategory | None = None,
    area_code: Annotated[str | None, Query(max_length=64)] = None,
    status: catalog.ComplaintStatus | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[Complaint]:
    """Hotline complaints newest first, filtered by category, area, status and time."""
    limit = page_limit(settings, limit)
    lo = check_time(start, "start") if start else None
    hi = check_time(end, "end") if end else None
    if lo and hi:
        check_range(lo, hi)
    after = split_cursor(cursor)
    rows = conn.execute(
        LIST_COMPLAINTS_SQL,
        {
            "category": category.value if category else None,
            "area": area_code,
            "status": status.value if status else None,
            "start": lo,
            "end": hi,
            "after_ts": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    ).fetchall()
    items = [_complaint(r) for r in rows]
    last = items[-1] if len(items) == limit else None
    return Page(
        items=items, next_cursor=make_cursor(last.received_at, last.complaint_id) if last else None
    )


@router.get("/complaints/{complaint_id}", response_model=Complaint)
def get_complaint(
    _: Viewer, conn: ConnDep, complaint_id: Annotated[str, Path(pattern=r"^[^\x00-\x1f/]{1,64}$")]
) -> Complaint:
    """One complaint and the case it is linked to."""
    row = conn.execute(
        f"SELECT {COMPLAINT_COLUMNS} FROM complaints c LEFT JOIN case_complaints l "
        "USING (complaint_id) WHERE c.complaint_id = %s",
        (complaint_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"there is no complaint {complaint_id!r}")
    return _complaint(row)


def _directory_for(conn: psycopg.Connection[Any], device_id: str | None) -> DeviceDirectory:
    """A directory holding only the complaint's device: all case linking needs to look up."""
    if device_id is None:
        return DeviceDirectory()
    row = conn.execute(
        "SELECT device_id, kind, area_code, status, lat, lon, attributes FROM devices "
        "WHERE device_id = %s",
        (device_id,),
    ).fetchone()
    if row is None:
        return DeviceDirectory()
    return DeviceDirectory(
        [
            DeviceInfo(
                device_id=row[0],
                kind=catalog.Kind(row[1]),
                area_code=row[2],
                in_service=row[3] == "in_service",
                lat=row[4],
                lon=row[5],
                attributes=row[6] or {},
            )
        ]
    )


@router.post("/complaints", response_model=Complaint, status_code=201)
def submit_complaint(
    who: Duty, conn: ConnDep, settings: SettingsDep, body: ComplaintIn
) -> Complaint:
    """Submit a hotline complaint (for hotline systems posting over HTTP instead of MQTT).

    Stored once per ``complaint_id`` (409 for a repeat) and linked to a case about the same
    device or place, or a new case.
    """
    received = check_time(body.received_at, "received_at")
    values = body.model_dump(mode="python")
    try:
        for spec in catalog.COMPLAINT_FIELDS:
            if spec.name != "received_at":
                raw = values[spec.name]
                spec.check(raw.value if hasattr(raw, "value") else raw)
    except ValidationError as err:
        raise bad_request(str(err), err.field) from err
    record = {
        **values,
        "category": body.category.value,
        "status": body.status.value,
        "received_at": received,
        "source": f"api:{who.name}",
    }
    if body.area_code is not None and (
        conn.execute("SELECT 1 FROM areas WHERE code = %s", (body.area_code,)).fetchone() is None
    ):
        raise bad_request(f"area_code: {body.area_code!r} is not a registered area", "area_code")
    if conn.execute(INSERT_COMPLAINT_SQL, record).fetchone() is None:
        raise conflict(f"complaint {body.complaint_id!r} is already stored")
    cases.link_complaint(
        conn,
        record,
        _directory_for(conn, body.device_id),
        _now(),
        radius_m=settings.alerts.link_radius_m,
        window=timedelta(hours=settings.alerts.link_window_h),
    )
    conn.commit()
    return get_complaint(who, conn, body.complaint_id)
