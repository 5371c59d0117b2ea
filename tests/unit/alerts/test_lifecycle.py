"""Lifecycle edges: for-duration, hysteresis band, dedup, silence keeps alerts, flapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alerts.lifecycle import AlertState, Event, Lifecycle, Observation, fingerprint

T0 = datetime(2026, 11, 21, 12, tzinfo=UTC)
LABELS = {"device_id": "MH-1", "area_code": "CY-JW"}
FOR = timedelta(minutes=10)


def _events(transitions: list) -> list[Event]:  # type: ignore[type-arg]
    return [t.event for t in transitions]


def test_for_duration_fires_exactly_at_the_edge() -> None:
    lc = Lifecycle()
    assert _events(lc.observe("r", LABELS, Observation.BREACH, T0, FOR)) == [Event.PENDING]
    almost = T0 + FOR - timedelta(milliseconds=1)
    assert lc.observe("r", LABELS, Observation.BREACH, almost, FOR) == []
    assert _events(lc.observe("r", LABELS, Observation.BREACH, T0 + FOR, FOR)) == [Event.FIRING]


def test_zero_for_fires_at_once_and_clear_resolves() -> None:
    lc = Lifecycle()
    assert _events(lc.observe("r", LABELS, Observation.BREACH, T0, timedelta(0))) == [
        Event.PENDING,
        Event.FIRING,
    ]
    assert _events(lc.observe("r", LABELS, Observation.CLEAR, T0 + FOR, timedelta(0))) == [
        Event.RESOLVED
    ]
    assert lc.open == {}


def test_pending_that_clears_is_cancelled_and_never_fires() -> None:
    lc = Lifecycle()
    lc.observe("r", LABELS, Observation.BREACH, T0, FOR)
    assert _events(lc.observe("r", LABELS, Observation.CLEAR, T0 + timedelta(minutes=5), FOR)) == [
        Event.CANCELLED
    ]
    assert lc.tick(T0 + timedelta(hours=1), {"r": FOR}) == []


def test_band_changes_nothing() -> None:
    lc = Lifecycle()
    lc.observe("r", LABELS, Observation.BREACH, T0, timedelta(0))
    assert lc.observe("r", LABELS, Observation.BAND, T0 + FOR, timedelta(0)) == []
    assert lc.open[fingerprint("r", LABELS)].state is AlertState.FIRING


def test_a_fault_repeated_a_thousand_times_is_one_alert() -> None:
    lc = Lifecycle()
    events = []
    for i in range(1000):
        events += lc.observe(
            "r", LABELS, Observation.BREACH, T0 + timedelta(seconds=i), timedelta(0), value=float(i)
        )
    assert _events(events) == [Event.PENDING, Event.FIRING]
    assert len(lc.open) == 1
    assert lc.open[fingerprint("r", LABELS)].last_value == 999.0


def test_silence_never_resolves_and_tick_fires_pending() -> None:
    lc = Lifecycle()
    lc.observe("r", LABELS, Observation.BREACH, T0, FOR)
    # No further readings (device went silent): the tick still fires after `for`...
    assert _events(lc.tick(T0 + FOR, {"r": FOR})) == [Event.FIRING]
    # ...and nothing but a clear observation resolves it.
    assert lc.tick(T0 + timedelta(days=3), {"r": FOR}) == []
    assert fingerprint("r", LABELS) in lc.open


def test_labels_make_separate_alerts() -> None:
    lc = Lifecycle()
    lc.observe("r", LABELS, Observation.BREACH, T0, timedelta(0))
    lc.observe("r", {**LABELS, "device_id": "MH-2"}, Observation.BREACH, T0, timedelta(0))
    assert len(lc.open) == 2


def test_flapping_alert_stays_open_until_stable() -> None:
    lc = Lifecycle(flap_count=3, flap_window=timedelta(minutes=30))
    t = T0
    events: list[Event] = []
    for _ in range(3):
        events += _events(lc.observe("r", LABELS, Observation.BREACH, t, timedelta(0)))
        t += timedelta(minutes=2)
        events += _events(lc.observe("r", LABELS, Observation.CLEAR, t, timedelta(0)))
        t += timedelta(minutes=2)
    assert events.count(Event.FIRING) == 3
    assert Event.FLAPPING in events
    # The third clear did not resolve: the alert is held open while flapping.
    assert events[-1] is Event.FLAPPING or events[-1] is Event.FIRING
    fp = fingerprint("r", LABELS)
    assert fp in lc.open
    assert lc.tick(t + timedelta(minutes=10), {"r": timedelta(0)}) == []
    assert _events(lc.tick(t + timedelta(minutes=30), {"r": timedelta(0)})) == [Event.RESOLVED]
