"""The engine on a real database: each default rule fires and resolves, dedup, hysteresis,
no-data, groups with inhibition, silences, restarts, acknowledgement and cases."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from alerts import cases, store
from alerts.model import NoticeState
from cityops.catalog import Kind
from tests.integration.alerts.conftest import NIGHT, Harness, make_engine, minutes

pytestmark = pytest.mark.pg


def _rules(notices: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(n.rule, n.state.value) for n in notices]


def _lamps(notices: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    """Ticks also raise no-data alerts for the devices that are silent in these tests."""
    return [(n.rule, n.state.value) for n in notices if n.labels.get("kind") == "streetlight"]


def test_cover_open_fires_at_once_resolves_and_opens_a_case(harness: Harness) -> None:
    sent = harness.readings(Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True, "tilt_deg": 2})])
    assert _rules(sent) == [("cover_open", "firing")]
    notice = sent[0]
    assert notice.labels == {
        "alertname": "cover_open",
        "kind": "manhole",
        "area_code": "CY-JW",
        "device_id": "MH-1",
    }
    assert notice.summary == "Cover MH-1 is open"
    sent = harness.readings(
        Kind.MANHOLE, [("MH-1", NIGHT + minutes(5), {"cover_open": False, "tilt_deg": 1})]
    )
    assert _rules(sent) == [("cover_open", "resolved")]
    events = harness.query(
        "SELECT e.event FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
        "WHERE a.rule = 'cover_open' ORDER BY e.id"
    )
    assert [e[0] for e in events] == ["pending", "firing", "resolved"]
    (case,) = harness.query("SELECT stage, responsible_unit, source, device_id FROM cases")
    assert case == ("detected", "owner: telecom", "alert", "MH-1")


def test_a_fault_repeated_a_thousand_times_is_one_alert(harness: Harness) -> None:
    rows = [("MH-1", NIGHT + timedelta(seconds=i), {"cover_open": True}) for i in range(1000)]
    sent = harness.readings(Kind.MANHOLE, rows)
    assert _rules(sent) == [("cover_open", "firing")]
    assert harness.query("SELECT count(*) FROM alerts WHERE rule = 'cover_open'") == [(1,)]
    assert harness.query("SELECT count(*) FROM cases") == [(1,)]


def test_low_battery_hysteresis(harness: Harness) -> None:
    def battery(pct: float, t: int) -> list[tuple[str, str]]:
        return _rules(
            harness.readings(Kind.MANHOLE, [("MH-2", NIGHT + minutes(t), {"battery_pct": pct})])
        )

    assert battery(15.0, 0) == []  # equality is not below 15
    assert battery(14.9, 1) == [("manhole_low_battery", "firing")]
    assert battery(19.9, 2) == []  # inside the band: still firing
    assert harness.query("SELECT state FROM alerts WHERE rule = 'manhole_low_battery'") == [
        ("firing",)
    ]
    assert battery(20.0, 3) == [("manhole_low_battery", "resolved")]


def test_room_below_standard_needs_two_hours(harness: Harness) -> None:
    def room(temp: float, t: float) -> list[tuple[str, str]]:
        return _rules(
            harness.readings(Kind.HEATING, [("HT-1", NIGHT + minutes(t), {"temperature_c": temp})])
        )

    assert room(17.0, 0) == []
    assert room(17.2, 60) == []
    assert room(17.1, 119.9) == []
    assert room(17.0, 120) == [("room_below_standard", "firing")]
    assert room(18.2, 140) == []  # band (clear is 18.5)
    assert room(18.5, 160) == [("room_below_standard", "resolved")]


def test_room_rule_is_quiet_outside_the_heating_season(harness: Harness) -> None:
    summer = NIGHT.replace(month=7)
    for t in range(0, 300, 20):
        sent = harness.readings(
            Kind.HEATING, [("HT-1", summer + minutes(t), {"temperature_c": 15.0})]
        )
        assert sent == []


def test_charger_faulted_and_stuck_finishing(harness: Harness) -> None:
    sent = harness.readings(
        Kind.CHARGER, [("CH-1", NIGHT, {"status": "Faulted", "error_code": "GroundFailure"})]
    )
    assert _rules(sent) == [("charger_faulted", "firing")]
    assert harness.readings(Kind.CHARGER, [("CH-2", NIGHT, {"status": "Finishing"})]) == []
    sent = harness.readings(Kind.CHARGER, [("CH-2", NIGHT + minutes(30), {"status": "Finishing"})])
    assert _rules(sent) == [("charger_stuck_finishing", "firing")]
    sent = harness.readings(Kind.CHARGER, [("CH-1", NIGHT + minutes(31), {"status": "Available"})])
    assert _rules(sent) == [("charger_faulted", "resolved")]


def test_lamp_lit_in_daylight_and_off_while_due(harness: Harness) -> None:
    noon = NIGHT.replace(hour=4)  # 12:00 in Beijing
    assert harness.readings(Kind.STREETLIGHT, [("SL-9", noon, {"power_state": "on"})]) == []
    sent = harness.readings(Kind.STREETLIGHT, [("SL-9", noon + minutes(30), {"power_state": "on"})])
    assert _rules(sent) == [("lamp_on_in_daylight", "firing")]
    sent = harness.readings(
        Kind.STREETLIGHT, [("SL-9", noon + minutes(31), {"power_state": "off"})]
    )
    assert _rules(sent) == [("lamp_on_in_daylight", "resolved")]
    # At night an off lamp becomes pending and fires after 15 minutes (on the tick).
    assert harness.readings(Kind.STREETLIGHT, [("SL-9", NIGHT, {"power_state": "off"})]) == []
    assert _lamps(harness.tick(NIGHT + minutes(14))) == []
    assert _lamps(harness.tick(NIGHT + minutes(15))) == [("lamp_off_while_due", "firing")]


def test_nodata_fires_on_silence_not_on_a_slow_device(harness: Harness) -> None:
    start = harness.engine.started_at
    # HT-1 reports every 50 minutes (slow, but within 3 x 20 min); HT-2 never reports.
    for k in range(4):
        harness.readings(Kind.HEATING, [("HT-1", start + minutes(50 * k), {"temperature_c": 21.0})])
        harness.engine.last_heard["HT-1"] = start + minutes(50 * k)
        sent = harness.tick(start + minutes(50 * k + 49))
        assert ("device_silent", "firing") not in [
            (n.rule, n.state.value) for n in sent if n.labels.get("device_id") == "HT-1"
        ]
    silent = [n for n in harness.sent if n.rule == "device_silent"]
    assert "HT-2" in {n.labels["device_id"] for n in silent}
    assert "HT-1" not in {n.labels["device_id"] for n in silent}


def test_last_will_raises_offline_and_keeps_value_alerts_open(harness: Harness) -> None:
    harness.readings(Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True})])
    sent = harness.status("MH-1", Kind.MANHOLE, False, NIGHT + minutes(1))
    assert _rules(sent) == [("device_silent", "firing")]
    assert harness.query("SELECT state FROM alerts WHERE rule = 'cover_open'") == [("firing",)]
    sent = harness.status("MH-1", Kind.MANHOLE, True, NIGHT + minutes(10))
    assert _rules(sent) == [("device_silent", "resolved")]
    assert harness.query("SELECT state FROM alerts WHERE rule = 'cover_open'") == [("firing",)]


def test_cabinet_outage_sends_one_notification(harness: Harness) -> None:
    lamps = [(f"SL-{i}", NIGHT, {"power_state": "off"}) for i in range(1, 6)]
    assert harness.readings(Kind.STREETLIGHT, lamps) == []
    sent = [n for n in harness.tick(NIGHT + minutes(15)) if n.labels.get("kind") == "streetlight"]
    assert _rules(sent) == [("lamp_group_outage", "firing")]
    assert sent[0].labels["cabinet_id"] == "CAB-1"
    assert sent[0].summary == "Cabinet CAB-1 is dark: 5/5 lamps off while due"
    inhibited = harness.query(
        "SELECT count(*) FROM alerts WHERE rule = 'lamp_off_while_due' "
        "AND state = 'firing' AND inhibited_by IS NOT NULL"
    )
    assert inhibited == [(5,)]
    # Lamps come back: members resolve, then the group clears.
    back = [(f"SL-{i}", NIGHT + minutes(20), {"power_state": "on"}) for i in range(1, 6)]
    sent = harness.readings(Kind.STREETLIGHT, back)
    assert ("lamp_group_outage", "resolved") in _rules(sent)


def test_one_dark_lamp_is_not_a_group_outage(harness: Harness) -> None:
    harness.readings(Kind.STREETLIGHT, [("SL-1", NIGHT, {"power_state": "off"})])
    assert _lamps(harness.tick(NIGHT + minutes(15))) == [("lamp_off_while_due", "firing")]


def _dark_one_by_one(harness: Harness, lamps: dict[str, int], until: int) -> list[tuple[str, str]]:
    """Lamps go dark at their minute and report off every minute; tick each minute.

    Returns the lamp and cabinet notices sent (the silent test devices raise no-data alerts).
    """
    told: list[tuple[str, str]] = []
    for m in range(until + 1):
        at = NIGHT + minutes(m)
        harness.clock.now = at
        dark = [(d, at, {"power_state": "off"}) for d, since in lamps.items() if m >= since]
        told += _lamps(harness.readings(Kind.STREETLIGHT, dark))
        told += _lamps(harness.tick(at))
    return [t for t in told if t[0] != "device_silent"]


def test_lamps_going_dark_one_by_one_are_held_then_inhibited(harness: Harness) -> None:
    # The cabinet loses power but its lamps report off over 8 minutes, so their alerts fire
    # one by one from minute 15; the cabinet alert forms at minute 21, when 4 of 5 (80 %) fire.
    # The first lamps are held meanwhile and then inhibited: one notification, not five.
    lamps = {f"SL-{i}": 2 * (i - 1) for i in range(1, 6)}
    told = _dark_one_by_one(harness, lamps, 35)
    assert told == [("lamp_group_outage", "firing")]
    assert harness.query(
        "SELECT count(*), count(inhibited_by), min(fired_at), max(fired_at) FROM alerts "
        "WHERE rule = 'lamp_off_while_due' AND state = 'firing'"
    ) == [(5, 5, NIGHT + minutes(15), NIGHT + minutes(23))]
    # Only the cabinet opened a case; the lamps' resolutions are marked inhibited, so the
    # notifier (which never told anyone they fired) drops them.
    assert harness.query(
        "SELECT a.rule FROM cases c JOIN alerts a ON a.id = c.alert_id WHERE a.rule LIKE 'lamp%%'"
    ) == [("lamp_group_outage",)]
    back = [(f"SL-{i}", NIGHT + minutes(36), {"power_state": "on"}) for i in range(1, 6)]
    sent = harness.readings(Kind.STREETLIGHT, back)
    lamps_back = [n for n in sent if n.rule == "lamp_off_while_due"]
    assert len(lamps_back) == 5
    assert all(n.inhibited for n in lamps_back)
    assert [n for n in sent if not n.inhibited and n.labels.get("kind") == "streetlight"] == [
        n for n in sent if n.rule == "lamp_group_outage"
    ]


def test_held_lamps_are_notified_when_no_group_forms(harness: Harness) -> None:
    # Three dark lamps of five (60 %) are no cabinet outage (it takes 80 %): held for 15
    # minutes, then notified (with their cases) as lamps; one that comes back meanwhile is
    # never notified at all.
    told = _dark_one_by_one(harness, {"SL-1": 0, "SL-2": 1, "SL-3": 2}, 20)
    assert told == []
    harness.readings(Kind.STREETLIGHT, [("SL-3", NIGHT + minutes(21), {"power_state": "on"})])
    # (the silent test lamps' no-data alerts, after 4 intervals of 5 minutes, are not the point)
    assert [t for t in _lamps(harness.tick(NIGHT + minutes(29))) if t[0] != "device_silent"] == []
    sent = [n for n in harness.tick(NIGHT + minutes(30)) if n.rule == "lamp_off_while_due"]
    assert [n.labels["device_id"] for n in sent] == ["SL-1"]
    sent = [n for n in harness.tick(NIGHT + minutes(31)) if n.rule == "lamp_off_while_due"]
    assert [n.labels["device_id"] for n in sent] == ["SL-2"]
    assert harness.query(
        "SELECT c.device_id FROM cases c JOIN alerts a ON a.id = c.alert_id "
        "WHERE a.rule = 'lamp_off_while_due' ORDER BY 1"
    ) == [("SL-1",), ("SL-2",)]
    assert harness.query(
        "SELECT state, inhibited_by FROM alerts WHERE device_id = 'SL-3' "
        "AND rule = 'lamp_off_while_due'"
    ) == [("resolved", None)]


def test_silence_suppresses_matching_alerts_only(harness: Harness) -> None:
    with psycopg.connect(harness.dsn) as conn:
        store.create_silence(
            conn,
            [store.Matcher.parse("device_id=MH-1")],
            NIGHT - minutes(1),
            NIGHT + timedelta(hours=1),
            "duty-1",
            "maintenance",
        )
    sent = harness.readings(
        Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True}), ("MH-2", NIGHT, {"cover_open": True})]
    )
    assert [n.labels["device_id"] for n in sent] == ["MH-2"]
    assert harness.query(
        "SELECT device_id, silenced_by IS NOT NULL FROM alerts ORDER BY device_id"
    ) == [("MH-1", True), ("MH-2", False)]


def test_restart_restores_open_alerts(harness: Harness) -> None:
    harness.readings(Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True})])
    sent: list = []  # type: ignore[type-arg]
    again = make_engine(harness.dsn, harness.engine.pool, harness.clock, sent)
    harness.engine = again
    assert (
        harness.readings(Kind.MANHOLE, [("MH-1", NIGHT + minutes(1), {"cover_open": True})]) == []
    )
    assert harness.query("SELECT count(*) FROM alerts") == [(1,)]
    assert _rules(
        harness.readings(Kind.MANHOLE, [("MH-1", NIGHT + minutes(2), {"cover_open": False})])
    ) == [("cover_open", "resolved")]


def test_acknowledge_assign_comment(harness: Harness) -> None:
    (notice,) = harness.readings(Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True})])
    with psycopg.connect(harness.dsn) as conn:
        assert not store.is_acknowledged(conn, notice.alert_id)
        store.acknowledge(conn, notice.alert_id, "duty-1", NIGHT + minutes(1), "on my way")
        with pytest.raises(store.AlertError, match="already acknowledged"):
            store.acknowledge(conn, notice.alert_id, "duty-2", NIGHT + minutes(2))
        store.assign(conn, notice.alert_id, "duty-1", "team-telecom", NIGHT + minutes(2))
        store.comment(conn, notice.alert_id, "duty-1", "cover replaced", NIGHT + minutes(3))
        assert store.is_acknowledged(conn, notice.alert_id)
        row, events = store.get_alert(conn, notice.alert_id)
        assert (row.acked_by, row.assigned_to) == ("duty-1", "team-telecom")
        assert [(e.event, e.actor) for e in events] == [
            ("pending", "cityops"),
            ("firing", "cityops"),
            ("acknowledged", "duty-1"),
            ("assigned", "duty-1"),
            ("comment", "duty-1"),
        ]
        with pytest.raises(store.AlertError, match="no alert 999"):
            store.acknowledge(conn, 999, "duty-1", NIGHT)
    harness.readings(Kind.MANHOLE, [("MH-1", NIGHT + minutes(9), {"cover_open": False})])
    with (
        psycopg.connect(harness.dsn) as conn,
        pytest.raises(store.AlertError, match="already resolved"),
    ):
        store.acknowledge(conn, notice.alert_id, "duty-2", NIGHT + minutes(10))


def test_case_loop_complaint_linking_and_proactive_share(harness: Harness) -> None:
    harness.readings(Kind.MANHOLE, [("MH-1", NIGHT, {"cover_open": True})])
    with psycopg.connect(harness.dsn) as conn:
        conn.execute(
            "INSERT INTO complaints (complaint_id, received_at, category, area_code, lat, lon, "
            "text) VALUES ('C-1', %s, 'manhole', 'CY-JW', 39.9071, 116.4531, '井盖没了'), "
            "('C-2', %s, 'heating', 'CY-SJ', NULL, NULL, '暖气不热')",
            (NIGHT + minutes(30), NIGHT + minutes(40)),
        )
        conn.commit()
    harness.complaints(
        {
            "complaint_id": "C-1",
            "received_at": NIGHT + minutes(30),
            "category": "manhole",
            "area_code": "CY-JW",
            "lat": 39.9071,
            "lon": 116.4531,
        },
        {
            "complaint_id": "C-2",
            "received_at": NIGHT + minutes(40),
            "category": "heating",
            "area_code": "CY-SJ",
        },
    )
    links = harness.query(
        "SELECT cc.complaint_id, c.source, cc.reason FROM case_complaints cc "
        "JOIN cases c ON c.id = cc.case_id ORDER BY 1"
    )
    assert links[0][:2] == ("C-1", "alert")
    assert links[0][2].startswith("nearby")
    assert links[1][:2] == ("C-2", "complaint")
    with psycopg.connect(harness.dsn) as conn:
        (alert_case,) = [c for c in cases.list_cases(conn) if c.source == "alert"]
        for stage in ("filed", "dispatched", "handled", "verified", "closed"):
            cases.advance(conn, alert_case.id, stage, "duty-1", NIGHT + timedelta(hours=2))
        with pytest.raises(cases.CaseError, match="cannot move"):
            cases.advance(conn, alert_case.id, "filed", "duty-1", NIGHT + timedelta(hours=3))
        k = cases.kpis(conn, NIGHT - timedelta(days=1), NIGHT + timedelta(days=1))
        assert (k.cases, k.closed, k.proactive) == (2, 1, 1)
        assert k.proactive_share == 0.5
        events = conn.execute(
            "SELECT from_stage, to_stage FROM case_events WHERE case_id = %s ORDER BY id",
            (alert_case.id,),
        ).fetchall()
        assert events[0] == (None, "detected")
        assert events[-1] == ("verified", "closed")


def test_complaint_spike_and_area_lighting_rate(harness: Harness) -> None:
    with psycopg.connect(harness.dsn) as conn:
        for i in range(5):
            conn.execute(
                "INSERT INTO complaints (complaint_id, received_at, category, area_code) "
                "VALUES (%s, %s, 'other', 'CY-HJL')",
                (f"S-{i}", NIGHT - minutes(i)),
            )
        last_hour = NIGHT.replace(minute=0) - timedelta(hours=1)
        conn.execute(
            "INSERT INTO rates_hourly VALUES ('CY-JW', 'streetlight', 'lighting_rate', "
            "%s, 900, 1000, 10)",
            (last_hour,),
        )
        conn.execute(
            "INSERT INTO rates_hourly VALUES ('CY-CW', 'streetlight', 'lighting_rate', "
            "%s, 995, 1000, 10)",
            (last_hour,),
        )
        # The hour in progress counts its whole scheduled denominator but only the minutes so
        # far: a low partial rate there is not an outage and must not fire.
        conn.execute(
            "INSERT INTO rates_hourly VALUES ('CY-CW', 'streetlight', 'lighting_rate', "
            "%s, 30, 1000, 10)",
            (NIGHT.replace(minute=0),),
        )
        conn.commit()
    sent = harness.tick(NIGHT + minutes(1))
    fired = {(n.rule, n.labels.get("area_code")) for n in sent if n.state is NoticeState.FIRING}
    assert ("complaint_spike", "CY-HJL") in fired
    assert ("area_lighting_rate_low", "CY-JW") in fired
    assert ("area_lighting_rate_low", "CY-CW") not in fired


def test_lamps_notified_before_their_cabinet_alert_are_then_marked_inhibited(
    harness: Harness,
) -> None:
    # Three lamps go dark: no cabinet outage yet (60 %), so after the hold they are notified.
    # Then two more go dark and the cabinet alert fires: the notifier is told the three are
    # now inhibited (so it stops reminding and escalating them); the two new ones never fire
    # on their own.
    told = _dark_one_by_one(harness, {"SL-1": 0, "SL-2": 0, "SL-3": 0, "SL-4": 31, "SL-5": 31}, 45)
    assert told == [("lamp_off_while_due", "firing")] * 3
    sent = [n for n in harness.tick(NIGHT + minutes(46)) if n.labels.get("kind") == "streetlight"]
    sent += [
        n
        for n in harness.readings(
            Kind.STREETLIGHT,
            [(f"SL-{i}", NIGHT + minutes(46), {"power_state": "off"}) for i in range(1, 6)],
        )
        if n.labels.get("kind") == "streetlight"
    ]
    group = [n for n in sent if n.rule == "lamp_group_outage"]
    assert [(n.state.value, n.inhibited) for n in group] == [("firing", False)]
    members = sorted(
        (n.labels["device_id"], n.state.value, n.inhibited)
        for n in sent
        if n.rule == "lamp_off_while_due"
    )
    assert members == [
        ("SL-1", "firing", True),
        ("SL-2", "firing", True),
        ("SL-3", "firing", True),
    ]
    assert harness.query(
        "SELECT device_id FROM alerts WHERE rule = 'lamp_off_while_due' "
        "AND inhibited_by IS NOT NULL ORDER BY 1"
    ) == [("SL-4",), ("SL-5",)]


def test_a_registry_reload_brings_new_devices_under_the_nodata_rule(harness: Harness) -> None:
    engine = harness.engine
    start = engine.started_at
    harness.tick(start + minutes(1))  # the no-data watch exists from the first tick
    assert engine.registry_reloads == 0
    engine.reload_registry()  # nothing changed: the registry is not read again
    assert engine.registry_reloads == 0
    with psycopg.connect(harness.dsn) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) VALUES ('HT-NEW', 'heating', 'CY-SJ')"
        )
    engine.reload_registry()
    assert engine.registry_reloads == 1
    assert engine.directory.get("HT-NEW") is not None
    # every device silent since the start, the new one too: 4 heating intervals later it is
    # found silent like the others, without a scan of the registry
    sent = harness.tick(start + timedelta(hours=6))
    silent = {n.labels.get("device_id") for n in sent if n.rule == "device_silent"}
    assert {"HT-1", "HT-2", "HT-NEW"} <= silent
