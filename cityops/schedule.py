"""Street-lighting switching schedule (Beijing dusk to dawn) and the heating-season calendar.

Everything is UTC inside; local time (the configured zone, Asia/Shanghai by default) is used only
to decide which night or which season day an instant belongs to. Sun times come from astral.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
from astral import Observer
from astral.sun import sunrise, sunset

from cityops.catalog import ScheduleClass
from cityops.settings import ScheduleSettings


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """One scheduled on-window of a lamp class, in UTC (``on`` inclusive, ``off`` exclusive)."""

    night: date
    on: datetime
    off: datetime


class LightingSchedule:
    """When lamps of each schedule class are due on, computed per local night."""

    def __init__(self, settings: ScheduleSettings, timezone: str = "Asia/Shanghai") -> None:
        self._settings = settings
        self._zone = ZoneInfo(timezone)
        self._where = (settings.latitude, settings.longitude)

    def _offsets(self, schedule_class: ScheduleClass) -> tuple[timedelta, timedelta]:
        s = self._settings
        if schedule_class is ScheduleClass.SOLAR:
            return (
                timedelta(minutes=s.solar_on_offset_min),
                timedelta(minutes=s.solar_off_offset_min),
            )
        return (timedelta(minutes=s.mains_on_offset_min), timedelta(minutes=s.mains_off_offset_min))

    def window(self, night: date, schedule_class: ScheduleClass = ScheduleClass.MAINS) -> Window:
        """The on-window that starts in the evening of local day ``night``."""
        on_offset, off_offset = self._offsets(schedule_class)
        return Window(
            night=night,
            on=_sun_event(*self._where, night, self._zone, "set") + on_offset,
            off=_sun_event(*self._where, night + timedelta(days=1), self._zone, "rise")
            + off_offset,
        )

    def windows(
        self,
        start: datetime,
        end: datetime,
        schedule_class: ScheduleClass = ScheduleClass.MAINS,
    ) -> list[Window]:
        """Every on-window that overlaps [start, end), in order."""
        first = start.astimezone(self._zone).date() - timedelta(days=1)
        last = end.astimezone(self._zone).date()
        out = []
        night = first
        while night <= last:
            w = self.window(night, schedule_class)
            if w.off > start and w.on < end:
                out.append(w)
            night += timedelta(days=1)
        return out

    def window_array(
        self,
        start: datetime,
        end: datetime,
        schedule_class: ScheduleClass = ScheduleClass.MAINS,
    ) -> np.ndarray:
        """The windows overlapping [start, end) as an (n, 2) int64 array of epoch milliseconds."""
        ws = self.windows(start, end, schedule_class)
        out = np.empty((len(ws), 2), dtype=np.int64)
        for i, w in enumerate(ws):
            out[i, 0] = _ms(w.on)
            out[i, 1] = _ms(w.off)
        return out

    def is_on(self, ts: datetime, schedule_class: ScheduleClass = ScheduleClass.MAINS) -> bool:
        """Whether a lamp of this class is due on at ``ts``."""
        return any(
            w.on <= ts < w.off
            for w in self.windows(ts, ts + timedelta(microseconds=1), schedule_class)
        )


class HeatingCalendar:
    """The heating season (default 15 Nov to 15 Mar, both days included), in local days."""

    def __init__(self, settings: ScheduleSettings, timezone: str = "Asia/Shanghai") -> None:
        self._zone = ZoneInfo(timezone)
        self._start = tuple(int(p) for p in settings.heating_season_start.split("-"))
        self._end = tuple(int(p) for p in settings.heating_season_end.split("-"))

    def in_season(self, ts: datetime) -> bool:
        """Whether the local day of ``ts`` is a heating day."""
        day = ts.astimezone(self._zone).date()
        md = (day.month, day.day)
        if self._start <= self._end:
            return self._start <= md <= self._end
        return md >= self._start or md <= self._end

    def season_of(self, ts: datetime) -> tuple[datetime, datetime] | None:
        """[start, end) in UTC of the season containing ``ts``, or None outside the season."""
        if not self.in_season(ts):
            return None
        day = ts.astimezone(self._zone).date()
        start_year = day.year if (day.month, day.day) >= self._start else day.year - 1
        if self._start <= self._end:
            start_year = day.year
        start = date(start_year, *self._start)
        end_year = start_year + (0 if self._start <= self._end else 1)
        end = date(end_year, *self._end) + timedelta(days=1)
        return (_local_midnight(start, self._zone), _local_midnight(end, self._zone))


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


@lru_cache(maxsize=4096)
def _sun_event(lat: float, lon: float, day: date, zone: ZoneInfo, which: str) -> datetime:
    fn = sunset if which == "set" else sunrise
    return fn(Observer(latitude=lat, longitude=lon), date=day, tzinfo=zone).astimezone(UTC)
