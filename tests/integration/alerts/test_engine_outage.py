"""The alert engine survives a database outage (issue 16): transitions kept, stored after it.

The outage cuts this test's own database only (``ALLOW_CONNECTIONS false`` and its backends
terminated); the shared server is never stopped.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from alerts.model import NoticeState
from cityops import heartbeat
from cityops.catalog import Kind
from tests.integration.alerts.conftest import NIGHT, Harness, minutes
from tests.integration.outage import set_connections

pytestmark = pytest.mark.pg


def test_transitions_during_an_outage_are_stored_and_notified_after_it(
    harness: Harness, pg_admin_dsn: str
) -> None:
    engine = harness.engine
    engine.consumer = "alerts/0of1"
    engine.max_lag_s = 0.0  # any wait counts as lag: readiness follows the outage at once
    engine.db_timeout_s = 1.0
    dbname = psycopg.conninfo.conninfo_to_dict(harness.dsn)["dbname"]
    assert isinstance(dbname, str)
    harness.tick(NIGHT)
    assert engine.readiness()["ok"] is True
    set_connections(pg_admin_dsn, dbname, allow=False)
    try:
        # a cover opens and closes while the database is away: nothing raises, nothing is lost
        sent = harness.readings(Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True})])
        assert sent == []
        assert engine.db_ok is False
        assert engine.db_failures >= 1
        engine.backoff.succeeded()  # (do not wait for the back-off in the test)
        harness.readings(Kind.MANHOLE, [("MH-1", NIGHT + minutes(5), {"cover_open": False})])
        assert len(engine._unstored) >= 2
        state = engine.readiness()
        assert state["ok"] is False
        assert state["database"] is False
        assert state["unstored_transitions"] >= 2
        assert engine.lag_s() > 0
    finally:
        set_connections(pg_admin_dsn, dbname, allow=True)
    sent = []
    deadline = time.monotonic() + 60  # the pool reconnects with its own back-off
    while (engine._unstored or not engine.db_ok) and time.monotonic() < deadline:
        engine.backoff.succeeded()
        sent += harness.tick(NIGHT + minutes(6))
        time.sleep(0.2)
    # stored in their order, and notified once the database has them
    assert [(n.rule, n.state) for n in sent if n.rule == "cover_open"] == [
        ("cover_open", NoticeState.FIRING),
        ("cover_open", NoticeState.RESOLVED),
    ]
    assert harness.query("SELECT state FROM alerts WHERE rule = 'cover_open'") == [("resolved",)]
    events = harness.query(
        "SELECT e.event FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
        "WHERE a.rule = 'cover_open' ORDER BY e.id"
    )
    assert [e for (e,) in events] == ["pending", "firing", "resolved"]  # as without an outage
    assert engine._unstored == []
    assert engine.lag_s() == 0.0
    assert engine.readiness()["ok"] is True
    with psycopg.connect(harness.dsn) as conn:
        beats = {b.consumer: b for b in heartbeat.read(conn)}
    assert beats["alerts/0of1"].lag_s == 0.0
    engine.stop()
    with psycopg.connect(harness.dsn) as conn:
        assert {b.consumer: b for b in heartbeat.read(conn)}["alerts/0of1"].stopped_at is not None
