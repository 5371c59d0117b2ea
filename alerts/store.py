"""Alerts in the database: lifecycle transitions, acknowledgement, assignment, comments, silences.

Every change is a row in ``alert_events`` with who and when. At most one open (pending or
firing) alert exists per fingerprint — a partial unique index enforces it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from alerts.lifecycle import AlertState, Event, Lifecycle, OpenAlert, Transition
from alerts.model import AlertNotice, NoticeState
from alerts.rules import GroupRule, RuleSet, Severity
from cityops.errors import CityopsError


class AlertError(CityopsError):
    """An alert operation is not possible (unknown alert, already resolved, bad matcher...)."""


EVENT_SQL = """
INSERT INTO alert_events (alert_id, at, event, actor, detail)
VALUES (%s, %s, %s, %s, %s)
"""

# A run of transitions of one event is stored by one statement: the alerts' changes and their
# event rows together (data-modifying CTEs over the run's values, unnested from arrays), returning
# (fingerprint, alert id) for each change that applied. An alert storm (a district's devices
# silent after an outage, a city starting) is hundreds of thousands of transitions; stored with
# two round trips each they held the alert engine, and ingest's hand-on behind it, for minutes.
_RUN_VALUES = """
WITH v AS (
    SELECT * FROM unnest(
        %(fingerprint)s::text[], %(rule)s::text[], %(kind)s::text[], %(severity)s::text[],
        %(labels)s::jsonb[], %(summary)s::text[], %(device_id)s::text[], %(area_code)s::text[],
        %(at)s::timestamptz[], %(value)s::text[], %(detail)s::jsonb[]
    ) WITH ORDINALITY AS v(fingerprint, rule, kind, severity, labels, summary, device_id,
                           area_code, at, value, detail, n)
), changed AS ({change}
    RETURNING a.id, a.fingerprint
), events AS (
    INSERT INTO alert_events (alert_id, at, event, actor, detail)
    SELECT c.id, v.at, %(event)s, 'cityops', v.detail
    FROM changed c JOIN v USING (fingerprint) ORDER BY v.n
)
SELECT fingerprint, id FROM changed
"""
_UPDATE_FROM_V = "\n    FROM v WHERE a.fingerprint = v.fingerprint AND a.state <> 'resolved'"
RUN_SQL: dict[Event, str] = {
    Event.PENDING: _RUN_VALUES.format(
        change="""
    INSERT INTO alerts AS a (fingerprint, rule, kind, severity, labels, summary, state, device_id,
                             area_code, started_at, last_seen, last_value)
    SELECT fingerprint, rule, kind, severity, labels, summary, 'pending', device_id, area_code,
           at, at, value
    FROM v ORDER BY n"""
    ),
    Event.FIRING: _RUN_VALUES.format(
        change="""
    UPDATE alerts a SET state = 'firing', fired_at = v.at, last_seen = v.at,
                        last_value = v.value, summary = v.summary"""
        + _UPDATE_FROM_V
    ),
    Event.RESOLVED: _RUN_VALUES.format(
        change="""
    UPDATE alerts a SET state = 'resolved', resolved_at = v.at,
                        last_seen = greatest(a.last_seen, v.at), cancelled = false"""
        + _UPDATE_FROM_V
    ),
    Event.CANCELLED: _RUN_VALUES.format(
        change="""
    UPDATE alerts a SET state = 'resolved', resolved_at = v.at,
                        last_seen = greatest(a.last_seen, v.at), cancelled = true"""
        + _UPDATE_FROM_V
    ),
    Event.FLAPPING: _RUN_VALUES.format(
        change="""
    UPDATE alerts a SET flapping = true"""
        + _UPDATE_FROM_V
    ),
}
_RUN_COLUMNS = (
    "fingerprint", "rule", "kind", "severity", "labels", "summary", "device_id", "area_code", "at",
    "value", "detail",
)  # fmt: skip

OPEN_ALERTS_SQL = """
SELECT fingerprint, rule, labels, state, started_at, fired_at, last_seen, last_value, flapping
FROM alerts WHERE state <> 'resolved'
"""


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def render_summary(
    template: str, labels: Mapping[str, str], value: object, group: str | None = None
) -> str:
    """Fill a rule's summary template from the labels and the value; unknown keys stay as-is.

    ``{value}`` is the observed value; ``{members}``, ``{silent}`` and ``{count}`` are aliases of it
    that read better in group, no-data and complaint-spike summaries; ``{group}`` is the value of
    a group rule's group attribute.
    """
    shown = "" if value is None else _fmt(value)
    values = {**labels, "value": shown, "members": shown, "silent": shown, "count": shown}
    if group is not None:
        values["group"] = group
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def apply_transitions(
    conn: psycopg.Connection[Any], transitions: Iterable[Transition], rules: RuleSet
) -> list[AlertNotice]:
    """Store transitions in the caller's transaction; return the notices for firing/resolved.

    In order, by runs: consecutive transitions of one event, each alert at most once in a run,
    go as one statement (RUN_SQL).
    """
    prepared = [_prepare(t, rules) for t in transitions]
    notices: list[AlertNotice] = []
    with conn.cursor() as cur:
        start = 0
        while start < len(prepared):
            event = prepared[start][0].event
            seen: set[str] = set()
            end = start
            while end < len(prepared):
                t = prepared[end][0]
                if t.event is not event or t.alert.fingerprint in seen:
                    break
                seen.add(t.alert.fingerprint)
                end += 1
            run = prepared[start:end]
            params: dict[str, Any] = {c: [p[c] for _, p, _ in run] for c in _RUN_COLUMNS}
            params["event"] = event.value
            ids = dict(cur.execute(RUN_SQL[event], params).fetchall())
            for t, p, severity in run:
                alert_id = ids.get(t.alert.fingerprint)
                if alert_id is None or t.event not in (Event.FIRING, Event.RESOLVED):
                    continue
                a = t.alert
                notices.append(
                    AlertNotice(
                        alert_id=alert_id,
                        fingerprint=a.fingerprint,
                        rule=a.rule,
                        state=NoticeState.FIRING
                        if t.event is Event.FIRING
                        else NoticeState.RESOLVED,
                        severity=severity,
                        labels={"alertname": a.rule, **a.labels},
                        summary=p["summary"],
                        started_at=a.since,
                        fired_at=a.fired_at,
                        resolved_at=t.at if t.event is Event.RESOLVED else None,
                    )
                )
            start = end
    return notices


def _prepare(t: Transition, rules: RuleSet) -> tuple[Transition, dict[str, Any], Severity]:
    """A transition's statement parameters (and its rule's severity)."""
    a = t.alert
    group = None
    try:
        rule = rules.by_name(a.rule)
        severity, template = rule.severity, rule.summary
        kind = rule.kind.value if rule.kind else a.labels.get("kind")
        if isinstance(rule, GroupRule):
            group = a.labels.get(rule.group_attribute)
    except KeyError:  # rule removed by a reload while its alert is open
        severity, template, kind = Severity.WARNING, "", a.labels.get("kind")
    params = {
        "fingerprint": a.fingerprint,
        "rule": a.rule,
        "kind": kind,
        "severity": severity.value,
        "labels": Jsonb(a.labels),
        "summary": render_summary(template, a.labels, a.last_value, group),
        "device_id": a.labels.get("device_id"),
        "area_code": a.labels.get("area_code"),
        "at": t.at,
        "value": _text(a.last_value),
        "detail": Jsonb({"value": _text(a.last_value)}),
    }
    return t, params, severity


def restore_lifecycle(conn: psycopg.Connection[Any], lifecycle: Lifecycle) -> int:
    """Load open alerts into ``lifecycle`` after a restart; return how many."""
    n = 0
    for fp, rule, labels, state, started, fired, seen, value, flapping in conn.execute(
        OPEN_ALERTS_SQL
    ).fetchall():
        lifecycle.open[fp] = OpenAlert(
            fingerprint=fp,
            rule=rule,
            labels=dict(labels),
            state=AlertState(state),
            since=started,
            fired_at=fired,
            last_seen=seen,
            last_value=value,
            flapping=flapping,
        )
        n += 1
    return n


# --- duty staff actions ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertRow:
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
    fingerprint: str = ""
    # The fingerprint of the firing group alert that covers this member alert, if any.
    inhibited_by: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class AlertEventRow:
    """One entry of an alert's history."""

    at: datetime
    event: str
    actor: str
    detail: dict[str, Any]


LIST_SQL = """
SELECT id, rule, severity, state, kind, area_code, device_id, summary, labels, started_at,
       fired_at, resolved_at, acked_by, acked_at, assigned_to, flapping, case_id,
       fingerprint, inhibited_by
FROM alerts
WHERE (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(open)s IS FALSE OR state <> 'resolved')
  AND (%(severity)s::text IS NULL OR severity = %(severity)s)
  AND (%(area)s::text IS NULL OR area_code = %(area)s)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(rule)s::text IS NULL OR rule = %(rule)s)
  AND (%(before)s::bigint IS NULL OR id < %(before)s)
  AND cancelled IS FALSE
ORDER BY id DESC
LIMIT %(limit)s
"""


def list_alerts(
    conn: psycopg.Connection[Any],
    *,
    state: str | None = None,
    open_only: bool = False,
    severity: str | None = None,
    area: str | None = None,
    kind: str | None = None,
    rule: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AlertRow]:
    """Alerts newest first, filtered; page with ``before`` (the last id seen)."""
    if state is not None and state not in {s.value for s in AlertState}:
        raise AlertError(f"state: {state!r} is not one of pending, firing, resolved")
    if severity is not None and severity not in {s.value for s in Severity}:
        raise AlertError(f"severity: {severity!r} is not one of info, warning, critical")
    if not 1 <= limit <= 1000:
        raise AlertError("limit: must be between 1 and 1000")
    with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        return cur.execute(
            LIST_SQL,
            {
                "state": state,
                "open": open_only,
                "severity": severity,
                "area": area,
                "kind": kind,
                "rule": rule,
                "before": before,
                "limit": limit,
            },
        ).fetchall()


def get_alert(conn: psycopg.Connection[Any], alert_id: int) -> tuple[AlertRow, list[AlertEventRow]]:
    """One alert with its history; AlertError if there is no such alert."""
    with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        row = cur.execute(
            LIST_SQL.replace("WHERE (", "WHERE id = %(id)s AND (", 1),
            {
                "id": alert_id,
                "state": None,
                "open": False,
                "severity": None,
                "area": None,
                "kind": None,
                "rule": None,
                "before": None,
                "limit": 1,
            },
        ).fetchone()
    if row is None:
        raise AlertError(f"there is no alert {alert_id}")
    with conn.cursor(row_factory=class_row(AlertEventRow)) as cur:
        events = cur.execute(
            "SELECT at, event, actor, detail FROM alert_events WHERE alert_id = %s ORDER BY at, id",
            (alert_id,),
        ).fetchall()
    return row, events


def _lock_open(conn: psycopg.Connection[Any], alert_id: int) -> str:
    row = conn.execute("SELECT state FROM alerts WHERE id = %s FOR UPDATE", (alert_id,)).fetchone()
    if row is None:
        raise AlertError(f"there is no alert {alert_id}")
    return str(row[0])


def acknowledge(
    conn: psycopg.Connection[Any], alert_id: int, actor: str, at: datetime, comment: str = ""
) -> None:
    """Acknowledge an open alert: reminders and escalation stop for it."""
    with conn.transaction():
        state = _lock_open(conn, alert_id)
        if state == AlertState.RESOLVED:
            raise AlertError(f"alert {alert_id} is already resolved")
        updated = conn.execute(
            "UPDATE alerts SET acked_by = %s, acked_at = %s WHERE id = %s AND acked_at IS NULL",
            (actor, at, alert_id),
        ).rowcount
        if updated == 0:
            raise AlertError(f"alert {alert_id} is already acknowledged")
        conn.execute(EVENT_SQL, (alert_id, at, "acknowledged", actor, Jsonb({"comment": comment})))


def assign(
    conn: psycopg.Connection[Any], alert_id: int, actor: str, assignee: str, at: datetime
) -> None:
    """Assign an alert to a person or team."""
    if not assignee.strip():
        raise AlertError("assignee: must not be empty")
    with conn.transaction():
        _lock_open(conn, alert_id)
        conn.execute("UPDATE alerts SET assigned_to = %s WHERE id = %s", (assignee, alert_id))
        conn.execute(EVENT_SQL, (alert_id, at, "assigned", actor, Jsonb({"to": assignee})))


def comment(
    conn: psycopg.Connection[Any], alert_id: int, actor: str, text: str, at: datetime
) -> None:
    """Add a comment to an alert's history."""
    if not text.strip():
        raise AlertError("comment: must not be empty")
    with conn.transaction():
        _lock_open(conn, alert_id)
        conn.execute(EVENT_SQL, (alert_id, at, "comment", actor, Jsonb({"text": text})))


def is_acknowledged(conn: psycopg.Connection[Any], alert_id: int) -> bool:
    """Whether duty staff acknowledged the alert (or it is gone)."""
    row = conn.execute(
        "SELECT acked_at IS NOT NULL OR state = 'resolved' FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    return True if row is None else bool(row[0])


# --- silences -------------------------------------------------------------------------------

_MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Matcher:
    """A label matcher: ``name=value``, ``name!=value`` or ``name=~regex`` (full match)."""

    name: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value`` / ``name!=value`` / ``name=~regex``."""
        m = _MATCHER_RE.match(text)
        if m is None:
            raise AlertError(f"matcher {text!r}: use name=value, name!=value or name=~regex")
        name, op, value = m.groups()
        if op == "=~":
            try:
                re.compile(value)
            except re.error as err:
                raise AlertError(f"matcher {text!r}: bad regular expression: {err}") from err
        return cls(name=name, op=op, value=value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy this matcher (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        return re.fullmatch(self.value, actual) is not None

    def as_json(self) -> dict[str, str]:
        """JSON form stored in ``silences.matchers``."""
        return {"name": self.name, "op": self.op, "value": self.value}


@dataclass(frozen=True, kw_only=True, slots=True)
class Silence:
    """A silence or maintenance window: matching alerts are not notified in [starts, ends)."""

    id: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str

    def active(self, at: datetime) -> bool:
        """Whether the silence is in force at ``at``."""
        return self.starts_at <= at < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher matches."""
        return all(m.matches(labels) for m in self.matchers)


def create_silence(
    conn: psycopg.Connection[Any],
    matchers: Sequence[Matcher],
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str = "",
) -> int:
    """Store a silence; return its id."""
    if not matchers:
        raise AlertError("a silence needs at least one matcher")
    if ends_at <= starts_at:
        raise AlertError("a silence must end after it starts")
    row = conn.execute(
        "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (Jsonb([m.as_json() for m in matchers]), starts_at, ends_at, created_by, comment),
    ).fetchone()
    conn.commit()
    if row is None:
        raise AlertError("the silence was not stored")
    return int(row[0])


def expire_silence(conn: psycopg.Connection[Any], silence_id: int, at: datetime) -> None:
    """End a silence now."""
    updated = conn.execute(
        "UPDATE silences SET ends_at = least(ends_at, %s), expired_at = %s "
        "WHERE id = %s AND expired_at IS NULL",
        (at, at, silence_id),
    ).rowcount
    conn.commit()
    if updated == 0:
        raise AlertError(f"there is no active silence {silence_id}")


def active_silences(conn: psycopg.Connection[Any], at: datetime) -> list[Silence]:
    """Silences in force at ``at``."""
    rows = conn.execute(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences "
        "WHERE starts_at <= %s AND ends_at > %s ORDER BY id",
        (at, at),
    ).fetchall()
    return [
        Silence(
            id=r[0],
            matchers=tuple(Matcher(**m) for m in r[1]),
            starts_at=r[2],
            ends_at=r[3],
            created_by=r[4],
            comment=r[5],
        )
        for r in rows
    ]
