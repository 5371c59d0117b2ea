"""Alerts (list, detail with history, acknowledge, assign, comment) and silences.

Every change goes through alerts.store, the functions the `cityops alerts` commands use; the
actor recorded in the history is the API key's name.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from alerts import store
from alerts.lifecycle import AlertState
from alerts.rules import Severity
from api.deps import ConnDep, Duty, LimitQuery, SettingsDep, Viewer, page_limit
from api.errors import bad_request, conflict, from_domain, not_found
from api.routers.common import BIGINT_MAX, CursorQuery, Page, check_time, int_cursor
from cityops.errors import CityopsError

router = APIRouter(tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
SilenceId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


class Alert(BaseModel):
    """An alert as listed."""

    id: int
    rule: str
    severity: str
    state: str
    kind: str | None
    area_code: str | None
    device_id: str | None
    summary: str
    labels: dict[str, str]
    started_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None
    acked_by: str | None
    acked_at: datetime | None
    assigned_to: str | None
    flapping: bool
    case_id: int | None
    fingerprint: str = Field(default="", description="Identity of the alert (rule and labels).")
    inhibited_by: str | None = Field(
        default=None,
        description="Fingerprint of the firing group alert (e.g. a dark cabinet) that covers "
        "this member alert: it is not notified on its own.",
    )


class AlertEvent(BaseModel):
    """One entry of an alert's history."""

    at: datetime
    event: str
    actor: str
    detail: dict[str, Any]


class AlertDetail(Alert):
    """An alert with its history, oldest first."""

    history: list[AlertEvent]


class AckIn(BaseModel):
    """An acknowledgement."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field(default="", max_length=2000)


class AssignIn(BaseModel):
    """An assignment to a person or team."""

    model_config = ConfigDict(extra="forbid")

    assignee: str = Field(min_length=1, max_length=200)


class CommentIn(BaseModel):
    """A comment for the alert's history."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000)


class Silence(BaseModel):
    """A silence or maintenance window: matching alerts are not notified in [starts_at, ends_at)."""

    id: int
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_at: datetime | None
    active: bool


class SilenceIn(BaseModel):
    """A new silence; give ``ends_at`` or ``duration_s``."""

    model_config = ConfigDict(extra="forbid")

    matchers: list[str] = Field(
        min_length=1,
        max_length=50,
        description="Label matchers: name=value, name!=value, name=~regex (full match).",
    )
    starts_at: datetime | None = Field(default=None, description="Default: now.")
    ends_at: datetime | None = None
    duration_s: int | None = Field(default=None, ge=60, le=366 * 86_400)
    comment: str = Field(default="", max_length=2000)


def _alert(conn: Any, alert_id: int) -> AlertDetail:
    try:
        row, events = store.get_alert(conn, alert_id)
    except CityopsError as err:
        raise from_domain(err) from err
    return AlertDetail(
        **Alert.model_validate(row, from_attributes=True).model_dump(),
        history=[AlertEvent.model_validate(e, from_attributes=True) for e in events],
    )


@router.get("/alerts", response_model=Page[Alert])
def list_alerts(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    state: AlertState | None = None,
    open: Annotated[bool, Query(description="Only pending or firing alerts.")] = False,
    severity: Severity | None = None,
    area_code: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    rule: Annotated[str | None, Query(max_length=200)] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[Alert]:
    """Alerts newest first, filtered by state, severity, area, kind and rule."""
    limit = page_limit(settings, limit, hard_max=1000)
    try:
        rows = store.list_alerts(
            conn,
            state=state.value if state else None,
            open_only=open,
            severity=severity.value if severity else None,
            area=area_code,
            kind=kind,
            rule=rule,
            before=int_cursor(cursor),
            limit=limit,
        )
    except CityopsError as err:
        raise from_domain(err) from err
    items = [Alert.model_validate(r, from_attributes=True) for r in rows]
    return Page(items=items, next_cursor=str(items[-1].id) if len(items) == limit else None)


@router.get("/alerts/{alert_id}", response_model=AlertDetail)
def get_alert(_: Viewer, conn: ConnDep, alert_id: AlertId) -> AlertDetail:
    """One alert with its history."""
    return _alert(conn, alert_id)


def _now() -> datetime:
    from cityops import clock

    return clock.now()


@router.post("/alerts/{alert_id}/ack", response_model=AlertDetail)
def acknowledge(who: Duty, conn: ConnDep, alert_id: AlertId, body: AckIn) -> AlertDetail:
    """Acknowledge an open alert: reminders and escalation stop (409 if resolved or acked)."""
    try:
        store.acknowledge(conn, alert_id, who.name, _now(), body.comment)
    except CityopsError as err:
        raise from_domain(err) from err
    conn.commit()
    return _alert(conn, alert_id)


@router.post("/alerts/{alert_id}/assign", response_model=AlertDetail)
def assign(who: Duty, conn: ConnDep, alert_id: AlertId, body: AssignIn) -> AlertDetail:
    """Assign an alert to a person or team."""
    if not body.assignee.strip():
        raise bad_request("assignee: must not be blank", "assignee")
    try:
        store.assign(conn, alert_id, who.name, body.assignee, _now())
    except CityopsError as err:
        raise from_domain(err) from err
    conn.commit()
    return _alert(conn, alert_id)


@router.post("/alerts/{alert_id}/comments", response_model=AlertDetail)
def add_comment(who: Duty, conn: ConnDep, alert_id: AlertId, body: CommentIn) -> AlertDetail:
    """Add a comment to an alert's history."""
    if not body.text.strip():
        raise bad_request("text: must not be blank", "text")
    try:
        store.comment(conn, alert_id, who.name, body.text, _now())
    except CityopsError as err:
        raise from_domain(err) from err
    conn.commit()
    return _alert(conn, alert_id)


# --- silences -------------------------------------------------------------------------------

SILENCE_SQL = """
SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at, expired_at,
       starts_at <= now() AND ends_at > now() AS active
FROM silences
WHERE (%(id)s::bigint IS NULL OR id = %(id)s)
  AND (%(active)s::boolean IS NULL OR (starts_at <= now() AND ends_at > now()) = %(active)s)
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
ORDER BY id DESC
LIMIT %(limit)s
"""


def _matcher_text(m: dict[str, str]) -> str:
    return f"{m['name']}{m['op']}{m['value']}"


def _silences(conn: Any, **params: Any) -> list[Silence]:
    rows = conn.execute(
        SILENCE_SQL, {"id": None, "active": None, "before": None, "limit": 1, **params}
    ).fetchall()
    return [
        Silence(
            id=r[0],
            matchers=[_matcher_text(m) for m in r[1]],
            starts_at=r[2],
            ends_at=r[3],
            created_by=r[4],
            comment=r[5],
            created_at=r[6],
            expired_at=r[7],
            active=r[8],
        )
        for r in rows
    ]


def _silence(conn: Any, silence_id: int) -> Silence:
    found = _silences(conn, id=silence_id)
    if not found:
        raise not_found(f"there is no silence {silence_id}")
    return found[0]


@router.get("/silences", response_model=Page[Silence])
def list_silences(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    active: Annotated[bool | None, Query(description="Only silences in force (or not).")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[Silence]:
    """Silences newest first."""
    limit = page_limit(settings, limit)
    items = _silences(conn, active=active, before=int_cursor(cursor), limit=limit)
    return Page(items=items, next_cursor=str(items[-1].id) if len(items) == limit else None)


@router.get("/silences/{silence_id}", response_model=Silence)
def get_silence(_: Viewer, conn: ConnDep, silence_id: SilenceId) -> Silence:
    """One silence."""
    return _silence(conn, silence_id)


@router.post("/silences", response_model=Silence, status_code=201)
def create_silence(who: Duty, conn: ConnDep, body: SilenceIn) -> Silence:
    """Create a silence (duty): matching alerts are not notified while it is in force."""
    starts = check_time(body.starts_at, "starts_at") if body.starts_at else _now()
    if (body.ends_at is None) == (body.duration_s is None):
        raise bad_request("give exactly one of ends_at and duration_s", "ends_at")
    ends = (
        check_time(body.ends_at, "ends_at")
        if body.ends_at
        else starts + timedelta(seconds=body.duration_s or 0)
    )
    if ends <= starts:
        raise bad_request("ends_at: must be after starts_at", "ends_at")
    if ends - starts > timedelta(days=366):
        raise bad_request("ends_at: a silence lasts at most 366 days", "ends_at")
    try:
        matchers = [store.Matcher.parse(m) for m in body.matchers]
    except CityopsError as err:
        raise bad_request(f"matchers: {err}", "matchers") from err
    try:
        silence_id = store.create_silence(conn, matchers, starts, ends, who.name, body.comment)
    except CityopsError as err:
        raise from_domain(err) from err
    return _silence(conn, silence_id)


@router.delete("/silences/{silence_id}", response_model=Silence)
def expire_silence(_: Duty, conn: ConnDep, silence_id: SilenceId) -> Silence:
    """End a silence now (it stays listed, expired)."""
    if _silence(conn, silence_id).expired_at is not None:
        raise conflict(f"silence {silence_id} has already been expired")
    try:
        store.expire_silence(conn, silence_id, _now())
    except CityopsError as err:
        raise from_domain(err) from err
    return _silence(conn, silence_id)
