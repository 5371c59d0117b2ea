"""Lighting schedule (Beijing dusk/dawn with offsets) and heating calendar (local days)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from cityops.catalog import ScheduleClass
from cityops.schedule import HeatingCalendar, LightingSchedule
from cityops.settings import ScheduleSettings


def test_winter_night_in_beijing() -> None:
    sched = LightingSchedule(ScheduleSettings())
    w = sched.window(date(2026, 12, 21))
    # Beijing winter solstice: sunset about 16:53, sunrise about 07:33 local (UTC+8).
    assert (
        datetime(2026, 12, 21, 8, 55, tzinfo=UTC) < w.on < datetime(2026, 12, 21, 9, 15, tzinfo=UTC)
    )
    assert (
        datetime(2026, 12, 21, 23, 10, tzinfo=UTC)
        < w.off
        < datetime(2026, 12, 21, 23, 35, tzinfo=UTC)
    )
    assert sched.is_on(w.on)
    assert not sched.is_on(w.on - timedelta(seconds=1))
    assert not sched.is_on(w.off)


def test_offsets_and_solar_class() -> None:
    base = LightingSchedule(ScheduleSettings(mains_on_offset_min=0, mains_off_offset_min=0))
    shifted = LightingSchedule(ScheduleSettings(mains_on_offset_min=30, mains_off_offset_min=-30))
    night = date(2026, 6, 21)
    assert shifted.window(night).on - base.window(night).on == timedelta(minutes=30)
    assert base.window(night).off - shifted.window(night).off == timedelta(minutes=30)
    solar = base.window(night, ScheduleClass.SOLAR)
    assert solar.on - base.window(night).on == timedelta(minutes=20)


def test_windows_cover_a_month_and_do_not_overlap() -> None:
    sched = LightingSchedule(ScheduleSettings())
    start = datetime(2026, 10, 31, 16, tzinfo=UTC)
    end = datetime(2026, 11, 30, 16, tzinfo=UTC)
    arr = sched.window_array(start, end)
    assert 30 <= len(arr) <= 31
    assert (arr[:, 1] > arr[:, 0]).all()
    assert (arr[1:, 0] > arr[:-1, 1]).all()


def test_heating_season_is_local_days_inclusive() -> None:
    cal = HeatingCalendar(ScheduleSettings())
    # 15 Nov 00:00 in Beijing is 14 Nov 16:00 UTC.
    assert not cal.in_season(datetime(2026, 11, 14, 15, 59, tzinfo=UTC))
    assert cal.in_season(datetime(2026, 11, 14, 16, 0, tzinfo=UTC))
    assert cal.in_season(datetime(2027, 3, 15, 15, 59, tzinfo=UTC))
    assert not cal.in_season(datetime(2027, 3, 15, 16, 0, tzinfo=UTC))
    assert cal.season_of(datetime(2027, 1, 1, tzinfo=UTC)) == (
        datetime(2026, 11, 14, 16, tzinfo=UTC),
        datetime(2027, 3, 15, 16, tzinfo=UTC),
    )
    assert cal.season_of(datetime(2026, 7, 1, tzinfo=UTC)) is None
