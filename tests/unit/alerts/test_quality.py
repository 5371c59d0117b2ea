"""Scoring alerts against ground truth: matches by device or group, within the fault's span."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts.quality import FiredAlert, TruthFault, score

T0 = datetime(2026, 12, 1, 14, tzinfo=UTC)
H = timedelta(hours=1)


def test_precision_recall_and_delay() -> None:
    faults = [
        TruthFault(
            fault_id="f1",
            fault_type="cover_open",
            device_ids=frozenset({"MH-1"}),
            group_id=None,
            start=T0,
            end=T0 + H,
        ),
        TruthFault(
            fault_id="f2",
            fault_type="cover_open",
            device_ids=frozenset({"MH-2"}),
            group_id=None,
            start=T0,
            end=T0 + H,
        ),
        TruthFault(
            fault_id="f3",
            fault_type="cabinet_outage",
            device_ids=frozenset({"SL-1", "SL-2"}),
            group_id="CAB-1",
            start=T0,
            end=T0 + H,
        ),
    ]
    alerts = [
        FiredAlert(
            rule="cover_open", device_id="MH-1", group=None, fired_at=T0 + timedelta(seconds=2)
        ),
        FiredAlert(rule="cover_open", device_id="MH-9", group=None, fired_at=T0),  # false
        FiredAlert(
            rule="cover_open", device_id="MH-2", group=None, fired_at=T0 + 3 * H
        ),  # too late: outside end + grace
        FiredAlert(
            rule="lamp_group_outage",
            device_id=None,
            group="CAB-1",
            fired_at=T0 + timedelta(minutes=16),
        ),
        FiredAlert(rule="charger_faulted", device_id="CH-1", group=None, fired_at=T0),
    ]
    s = score(faults, alerts)
    assert (s["cover_open"].faults, s["cover_open"].detected) == (2, 1)
    assert s["cover_open"].recall == 0.5
    assert s["cover_open"].precision == 1 / 3
    assert s["cover_open"].delay_p50_s == 2.0
    assert s["cabinet_outage"].recall == 1.0
    assert s["cabinet_outage"].precision == 1.0
    assert s["cabinet_outage"].delay_p50_s == 960.0
    # A charger alert with no charger fault in the truth is a false positive of its type.
    assert s["faulted"].faults == 0
    assert s["faulted"].recall is None
    assert s["faulted"].precision == 0.0


def _fault(fault_id: str, fault_type: str, device: str, *, detectable: bool = True) -> TruthFault:
    return TruthFault(
        fault_id=fault_id,
        fault_type=fault_type,
        device_ids=frozenset({device}),
        group_id=None,
        start=T0,
        end=T0 + H,
        detectable=detectable,
    )


def test_alert_on_a_device_with_another_fault_is_explained_not_false() -> None:
    faults = [_fault("f1", "cover_open", "MH-1"), _fault("f2", "displaced", "MH-2")]
    alerts = [
        FiredAlert(rule="cover_displaced", device_id="MH-1", group=None, fired_at=T0),  # explained
        FiredAlert(rule="cover_displaced", device_id="MH-2", group=None, fired_at=T0),  # true
        FiredAlert(rule="cover_displaced", device_id="MH-3", group=None, fired_at=T0),  # false
        FiredAlert(
            rule="cover_displaced", device_id="MH-1", group=None, fired_at=T0 + 2 * H
        ),  # after the other fault ended: false
    ]
    s = score(faults, alerts)["displaced"]
    assert (s.alerts, s.true_alerts, s.explained) == (4, 1, 1)
    assert s.precision == 1 / 3


def test_undetectable_faults_are_left_out_of_recall_only() -> None:
    faults = [
        _fault("f1", "cold_room", "HT-1"),
        _fault("f2", "cold_room", "HT-2", detectable=False),
        _fault("f3", "cold_room", "HT-3"),
    ]
    alerts = [
        FiredAlert(rule="room_below_standard", device_id="HT-1", group=None, fired_at=T0),
        FiredAlert(rule="room_below_standard", device_id="HT-2", group=None, fired_at=T0),
    ]
    s = score(faults, alerts)["cold_room"]
    assert (s.faults, s.undetectable, s.detected) == (3, 1, 1)
    assert s.recall == 0.5
    assert s.precision == 1.0  # the alert on the undetectable fault's room is still true


def test_an_alert_while_the_effect_lasts_matches_the_fault() -> None:
    # A room repaired at T0 + 10 h is still cold until T0 + 20 h (its recorded effect end): an
    # alert at T0 + 15 h is the fault's, not a false alarm; without the record it would be. One
    # at T0 + 21 h is past the effect end and the 30 min grace: false either way.
    def room(effect_end: datetime | None) -> TruthFault:
        return TruthFault(
            fault_id="f1",
            fault_type="cold_room",
            device_ids=frozenset({"HT-1"}),
            group_id=None,
            start=T0,
            end=T0 + 10 * H,
            effect_end=effect_end,
        )

    alerts = [
        FiredAlert(rule="room_below_standard", device_id="HT-1", group=None, fired_at=T0 + 15 * H),
        FiredAlert(rule="room_below_standard", device_id="HT-1", group=None, fired_at=T0 + 21 * H),
    ]
    recorded = score([room(T0 + 20 * H)], alerts)["cold_room"]
    assert (recorded.detected, recorded.true_alerts, recorded.precision) == (1, 1, 0.5)
    assert recorded.delay_p50_s == 15 * 3600
    plain = score([room(None)], alerts)["cold_room"]
    assert (plain.detected, plain.true_alerts, plain.precision) == (0, 0, 0.0)
    # An effect end before the end (not recorded by the simulators) never shortens the span.
    assert room(T0).span_end == T0 + 10 * H
