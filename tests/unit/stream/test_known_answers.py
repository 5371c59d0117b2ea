"""Hand-built nights and rooms whose rates are worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest

from cityops.batch import KindBatch
from cityops.catalog import Kind, ScheduleClass
from cityops.schedule import LightingSchedule
from cityops.settings import Settings
from stream.engine import HOUR_MS, Folder
from stream.rates import kind_rates
from stream.registry import AreaIndex, DeviceIndex

MIN = 60_000


def _sums(kind: Kind, index: DeviceIndex, rows: list, start_ms: int, end_ms: int):  # type: ignore[no-untyped-def,type-arg]
    settings = Settings()
    areas = AreaIndex.build(["A"], heated_area_m2=[1e6])
    rates = kind_rates(kind, settings)
    folder = Folder(rates, index, areas)
    kb = KindBatch.from_rows(kind, rows)
    h0 = start_ms // HOUR_MS
    n = (end_ms - start_ms) // HOUR_MS
    folded = folder.fold(index.lookup(kb.device_ids), kb.ts_ms, kb.columns, h0=h0, n_hours=n)
    out: dict[str, list[float]] = {}
    for r in rates.rows(folded.acc, index, areas, folder.schedule(start_ms, end_ms), h0):
        s = out.setdefault(r.metric, [0.0, 0.0])
        s[0] += r.numerator
        s[1] += r.denominator
    return out


def test_a_night_of_ten_lamps_with_known_outages() -> None:
    """10 mains lamps; one failed all night, one dark from 2 h after switch-on, one silent."""
    w = LightingSchedule(Settings().schedule).window(date(2026, 1, 15), ScheduleClass.MAINS)
    on, off = int(w.on.timestamp() * 1000), int(w.off.timestamp() * 1000)
    window_min = (off - on) / MIN
    ids = [f"L{i}" for i in range(10)]
    index = DeviceIndex.build(Kind.STREETLIGHT, ids, [0] * 10)
    rows = []
    for i, lamp in enumerate(ids):
        if i == 2:
            continue  # no data all night: counts as not lit
        t = on - 10 * MIN
        while t <= off + 10 * MIN:
            if i == 0:
                values = {"power_state": "off", "fault": "lamp_failure"}
            elif i == 1 and t >= on + 2 * HOUR_MS - 5 * MIN:
                values = {"power_state": "off", "fault": "none"}
            else:
                values = {"power_state": "on", "fault": "none"}
            rows.append((lamp, t, t, values))
            t += 10 * MIN
    start = on // HOUR_MS * HOUR_MS - HOUR_MS
    end = (off // HOUR_MS + 2) * HOUR_MS
    sums = _sums(Kind.STREETLIGHT, index, rows, start, end)
    num, den = sums["lighting_rate"]
    assert den == pytest.approx(10 * window_min)
    # Lamp 1's last "on" reading is at on + 1h50, its first "off" one at on + 2h: lit 2 h.
    lamp1_lit = 120.0
    assert num == pytest.approx(7 * window_min + lamp1_lit)
    assert num / den == pytest.approx((7 + lamp1_lit / window_min) / 10)
    cov_num, cov_den = sums["lighting_coverage"]
    assert cov_num / cov_den == pytest.approx(0.9)
    snap_num, snap_den = sums["lighting_snapshot"]
    assert (snap_num, snap_den) == (8, 10)  # at on + 60': 7 lamps plus lamp 1 lit, 10 due
    assert sums["lamp_faults"][0] == 1  # lamp 0's fault starts once and is held all night
    # Daylight: 8 lamps lit 10' before switch-on; after switch-off the 7 healthy lamps stay
    # lit until their last reading (at most 10' after switch-off) plus its 20' hold.
    last = on - 10 * MIN + (off + 10 * MIN - (on - 10 * MIN)) // (10 * MIN) * 10 * MIN
    after = (last + 20 * MIN - off) / MIN
    assert sums["lit_in_daylight"][0] == pytest.approx(8 * 10 + 7 * after)


def test_a_cold_room_gives_one_episode_and_known_compliance() -> None:
    """One sensor: 10 h at 20 °C then 8 h at 16 °C, a reading every 30 min, in season."""
    start = int(datetime(2026, 1, 10, tzinfo=UTC).timestamp() * 1000)
    index = DeviceIndex.build(Kind.HEATING, ["R"], [0])
    rows = []
    for k in range(36):
        t = start + k * 30 * MIN
        temp = 20.0 if k < 20 else 16.0
        rows.append(("R", t, t, {"temperature_c": temp}))
    sums = _sums(Kind.HEATING, index, rows, start, start + 24 * HOUR_MS)
    num, den = sums["room_temp_compliance"]
    # Observed: 35 intervals of 30' plus the last reading's 60' hold = 18.5 h; 10 h warm.
    assert den == pytest.approx(18.5 * 60)
    assert num == pytest.approx(10 * 60)
    # Cold from 10:00; the 6 h mark is reached by the reading at 16:00.
    assert sums["cold_episodes"][0] == 1
    assert sums["room_temp_coverage"][1] == pytest.approx(24 * 60)


def test_charger_minutes_by_status() -> None:
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    index = DeviceIndex.build(Kind.CHARGER, ["C1", "C2"], [0, 0])
    rows = []
    for k in range(6):  # C1: Available 0-30', Charging 30'-60' (every 10')
        t = start + k * 10 * MIN
        rows.append(("C1", t, t, {"status": "Available" if k < 3 else "Charging"}))
    rows.append(("C2", start, start, {"status": "Faulted"}))  # held 15', then offline
    sums = _sums(Kind.CHARGER, index, rows, start, start + HOUR_MS)
    assert sums["charger_availability"] == [pytest.approx(60.0), pytest.approx(120.0)]
    assert sums["charger_utilization"][0] == pytest.approx(30.0)
    assert sums["charger_online"][0] == pytest.approx(75.0)


def test_manhole_alarm_onsets_by_type() -> None:
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    index = DeviceIndex.build(Kind.MANHOLE, ["M"], [0])
    events = ["heartbeat", "open", "open", "heartbeat", "overflow", "heartbeat", "open"]
    rows = [
        ("M", start + k * 5 * MIN, start + k * 5 * MIN, {"event": e}) for k, e in enumerate(events)
    ]
    rows.append(("M", start + 6 * HOUR_MS, start + 6 * HOUR_MS, {"displacement_mm": 25.0}))
    sums = _sums(Kind.MANHOLE, index, rows, start, start + 8 * HOUR_MS)
    assert sums["manhole_alarm_opening"][0] == 2  # open, open (same episode), ..., open again
    assert sums["manhole_alarm_overflow"][0] == 1
    assert sums["manhole_alarm_displacement"][0] == 1
    assert sums["manhole_alarm_opening"][1] == 8  # cover-hours


def test_sensor_state_flags_flatline_and_offline() -> None:
    from stream.state import SensorState

    state = SensorState(Kind.HEATING, 2, Settings().stream)
    t0 = 1_700_000_000_000
    ts = np.array([t0 + k * 20 * MIN for k in range(30)], dtype=np.int64)
    state.update(np.zeros(30, np.int64), ts, np.full(30, 19.0))
    state.update(np.array([1]), np.array([t0]), np.array([21.0]))
    assert state.flatlined().tolist() == [True, False]
    assert state.offline(int(ts[-1]) + 10 * MIN, np.array([True, True])).tolist() == [False, True]
    view = state.view(0)
    assert view.count == 30
    assert view.baseline == pytest.approx(19.0)
    # a constant series: the spread is its resolution, widened by the uncertainty of a baseline
    # learnt from the slot's readings so far
    learnt = float(state.slots[0, state.last_slot[0], 2])
    assert view.std == pytest.approx(0.1 * np.sqrt(1 + 1 / learnt))
    assert state.nbytes == 2 * (12 * 8 + 24 * 4 * 4)
    # A last will marks the sensor offline at once; its next reading brings it back.
    state.report_status(0, False, int(ts[-1]) + MIN)
    assert state.offline(int(ts[-1]) + 2 * MIN, np.array([True, True])).tolist() == [True, True]
    state.update(np.array([0]), np.array([int(ts[-1]) + 3 * MIN]), np.array([19.0]))
    assert state.offline(int(ts[-1]) + 4 * MIN, np.array([True, True])).tolist() == [False, True]


def test_season_windows_are_local_days() -> None:
    """Asia/Shanghai has no DST: every season day starts at 16:00 UTC; 121 days in 2025-26."""
    from zoneinfo import ZoneInfo

    from cityops.schedule import HeatingCalendar
    from stream.rates import season_windows

    settings = Settings()
    cal = HeatingCalendar(settings.schedule, settings.timezone)
    lo = int(datetime(2025, 10, 1, tzinfo=UTC).timestamp() * 1000)
    hi = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp() * 1000)
    w = season_windows(cal, ZoneInfo("Asia/Shanghai"), lo, hi)
    assert w.shape == (1, 2)
    assert datetime.fromtimestamp(w[0, 0] / 1000, UTC) == datetime(2025, 11, 14, 16, tzinfo=UTC)
    assert datetime.fromtimestamp(w[0, 1] / 1000, UTC) == datetime(2026, 3, 15, 16, tzinfo=UTC)
    assert (w[0, 1] - w[0, 0]) // HOUR_MS == 121 * 24


def test_complaint_density_over_a_season_is_complaints_per_10000_m2() -> None:
    from cityops.schedule import HeatingCalendar
    from stream import complaints

    settings = Settings()
    cal = HeatingCalendar(settings.schedule, settings.timezone)
    areas = AreaIndex.build(["A", "B"], heated_area_m2=[2_000_000.0, np.nan])
    start = datetime(2025, 11, 14, 16, tzinfo=UTC)
    h0 = int(start.timestamp() * 1000) // HOUR_MS
    n_hours = 121 * 24 + 48  # the season and two days after it
    counts = np.zeros((n_hours, 2), dtype=np.int64)
    counts[5, 0] = 90
    counts[2000, 0] = 48
    counts[n_hours - 10, 0] = 7  # after the season: not counted
    rows = complaints.density_rows(counts, h0, areas, cal)
    assert {r.area_code for r in rows} == {"A"}  # B has no heated area
    assert len(rows) == 121 * 24
    num = sum(r.numerator for r in rows)
    den = sum(r.denominator for r in rows)
    assert num == 138
    assert den == pytest.approx(200.0)  # 2,000,000 m² / 10,000
    assert num / den == pytest.approx(0.69)


def test_live_consumer_keeps_state_across_a_registry_reload() -> None:
    """A lamp added to the registry is counted after the reload; known lamps keep their state."""
    from stream.live import LiveRates

    areas = AreaIndex.build(["A"])
    before = DeviceIndex.build(Kind.STREETLIGHT, ["L2", "L9"], [0, 0])
    live = LiveRates(Settings(), areas, {Kind.STREETLIGHT: before})
    t = int(datetime(2026, 1, 15, 14, tzinfo=UTC).timestamp() * 1000)
    on = {"power_state": "on", "fault": "none", "power_w": 80.0}

    def feed(rows: list) -> None:  # type: ignore[type-arg]
        from cityops.batch import CommittedBatch

        kb = KindBatch.from_rows(Kind.STREETLIGHT, rows)
        live.on_batch(CommittedBatch(seq=0, committed_at=datetime.now(UTC), readings={kb.kind: kb}))

    feed([("L9", t, t, on), ("L5", t, t, on)])  # L5 is not registered yet: ignored
    live.reload_devices(
        {Kind.STREETLIGHT: DeviceIndex.build(Kind.STREETLIGHT, ["L2", "L5", "L9"], [0, 0, 0])}
    )
    feed([("L9", t + 5 * MIN, t, on), ("L5", t + 5 * MIN, t, on)])
    state = live.sensor_state(Kind.STREETLIGHT)
    assert state.count.tolist() == [0, 1, 2]  # L2 never reported, L5 once, L9 twice
    rows = live.rows(Kind.STREETLIGHT)
    # 22:00 local, inside the window: L9 lit from 14:00 UTC for 25' (re-held at 14:05), L5 from
    # 14:05 for 20'; 3 lamps are now scheduled for the whole hour.
    lit = sum(r.numerator for r in rows if r.metric == "lighting_rate")
    assert lit == pytest.approx(25 + 20)
    due = sum(r.denominator for r in rows if r.metric == "lighting_rate" and r.hour_ms == t)
    assert due == pytest.approx(3 * 60)
    assert live.late_readings()[Kind.STREETLIGHT] == 0


def test_sensor_state_fields_are_the_kernels_record() -> None:
    """Every per-sensor field of the kernel's record is reachable on the state, and no other."""
    from stream import kernels
    from stream.state import SensorState, _Field

    fields = {name for name, v in vars(SensorState).items() if isinstance(v, _Field)}
    assert fields == set(kernels.SENSOR_DTYPE.names or ())
