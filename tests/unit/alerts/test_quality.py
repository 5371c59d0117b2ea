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
