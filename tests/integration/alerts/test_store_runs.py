"""Transitions stored by runs (one statement per run) give the rows and notices, in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from alerts import store
from alerts.lifecycle import AlertState, Event, OpenAlert, Transition
from alerts.model import NoticeState
from alerts.rules import RuleHolder

pytestmark = pytest.mark.pg

T0 = datetime(2026, 12, 1, 8, tzinfo=UTC)


def _alert(i: int) -> OpenAlert:
    return OpenAlert(
        fingerprint=f"fp-{i}",
        rule="device_silent",
        labels={"device_id": f"HT-{i}", "kind": "heating", "area_code": "CY-JW"},
        state=AlertState.PENDING,
        since=T0,
        last_seen=T0,
        last_value=f"silent {i} s",
    )


def test_runs_store_each_transition_in_order(migrated_db: str) -> None:
    a = [_alert(i) for i in range(6)]
    m = timedelta(minutes=1)
    transitions = [
        *(Transition(event=Event.PENDING, alert=x, at=T0) for x in a),  # one run of six
        Transition(event=Event.FIRING, alert=a[0], at=T0 + m),
        Transition(event=Event.FIRING, alert=a[1], at=T0 + m),
        Transition(event=Event.CANCELLED, alert=a[2], at=T0 + m),
        Transition(event=Event.FLAPPING, alert=a[0], at=T0 + 2 * m),
        Transition(event=Event.RESOLVED, alert=a[0], at=T0 + 3 * m),
        Transition(event=Event.RESOLVED, alert=a[1], at=T0 + 3 * m),
        # one alert twice in a row of one event: the run is split, both are stored
        Transition(event=Event.FLAPPING, alert=a[5], at=T0 + 3 * m),
        Transition(event=Event.FLAPPING, alert=a[5], at=T0 + 3 * m),
        # a new episode of a[0] after its resolve
        Transition(event=Event.PENDING, alert=a[0], at=T0 + 4 * m),
        Transition(event=Event.FIRING, alert=a[0], at=T0 + 5 * m),
        # a change that applies to nothing (no open alert) stores nothing and tells nobody
        Transition(event=Event.FIRING, alert=_alert(99), at=T0 + 5 * m),
    ]
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        notices = store.apply_transitions(conn, transitions, RuleHolder().rules)
        conn.commit()
        alerts = conn.execute(
            "SELECT fingerprint, state, cancelled, flapping, started_at, fired_at, resolved_at,"
            " last_value, summary FROM alerts ORDER BY id"
        ).fetchall()
        events = conn.execute(
            "SELECT a.fingerprint, e.event, e.at, e.detail FROM alert_events e"
            " JOIN alerts a ON a.id = e.alert_id ORDER BY a.id, e.at, e.id"
        ).fetchall()
    states = [(r[0], r[1], r[2], r[3]) for r in alerts]
    assert states == [
        ("fp-0", "resolved", False, True),
        ("fp-1", "resolved", False, False),
        ("fp-2", "resolved", True, False),
        ("fp-3", "pending", False, False),
        ("fp-4", "pending", False, False),
        ("fp-5", "pending", False, True),
        ("fp-0", "firing", False, False),  # the second episode
    ]
    assert alerts[0][4:7] == (T0, T0 + m, T0 + 3 * m)
    assert alerts[6][4:6] == (T0 + 4 * m, T0 + 5 * m)
    assert alerts[3][7] == "silent 3 s"
    assert "HT-3" in alerts[3][8]  # the rule's summary template, filled
    assert [(e[0], e[1]) for e in events[:4]] == [
        ("fp-0", "pending"),
        ("fp-0", "firing"),
        ("fp-0", "flapping"),
        ("fp-0", "resolved"),
    ]
    assert len(events) == 6 + 2 + 1 + 1 + 2 + 2 + 2
    assert all(e[3] == {"value": e[0].replace("fp-", "silent ") + " s"} for e in events)
    told = [(n.fingerprint, n.state) for n in notices]
    assert told == [
        ("fp-0", NoticeState.FIRING),
        ("fp-1", NoticeState.FIRING),
        ("fp-0", NoticeState.RESOLVED),
        ("fp-1", NoticeState.RESOLVED),
        ("fp-0", NoticeState.FIRING),
    ]
    ids = {n.alert_id for n in notices}
    assert len(ids) == 3  # fp-0's two episodes are two alerts


def test_a_storm_is_stored_in_one_statement_per_run(migrated_db: str) -> None:
    a = [_alert(i) for i in range(3_000)]
    transitions = [Transition(event=Event.PENDING, alert=x, at=T0) for x in a]
    later = T0 + timedelta(minutes=5)
    transitions += [Transition(event=Event.FIRING, alert=x, at=later) for x in a]
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        notices = store.apply_transitions(conn, transitions, RuleHolder().rules)
        conn.commit()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM alerts WHERE state = 'firing'),"
            " (SELECT count(*) FROM alert_events)"
        ).fetchone()
    assert counts == (3_000, 6_000)
    assert len(notices) == 3_000
