"""What each device kind contributes to the rates: categories, flags, windows and metrics.

One ``KindRates`` per kind turns columns (``cityops.batch`` encoding, from a live batch or from the
database) into the kernel's per-reading category and onset flags, gives the time windows and check
instants per device group for a time range, and turns the kernel's accumulator plus the registry
denominators into ``rates_hourly`` rows. docs/rates.md states every definition in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from cityops import catalog
from cityops.catalog import Kind, LampFault, ManholeEvent, OcppStatus, PowerState
from cityops.schedule import HeatingCalendar, LightingSchedule
from cityops.settings import Settings
from stream import kernels
from stream.registry import SCHEDULE_GROUPS, AreaIndex, DeviceIndex

HOUR_MS = kernels.HOUR_MS
MIN_MS = 60_000
# A window wide enough to hold any range the kernels see (kinds without a schedule).
_ALWAYS = np.array([[0, 2**62]], dtype=np.int64)


def _code(kind: Kind, field: str, value: str) -> int:
    spec = catalog.KINDS[kind].reading_field(field)
    if spec is None or spec.allowed is None:
        raise KeyError(f"{kind.value}.{field} is not an enum field")
    return spec.allowed.index(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class RateRow:
    """One ``rates_hourly`` row."""

    area_code: str
    kind: str
    metric: str
    hour_ms: int
    numerator: float
    denominator: float
    samples: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Schedule:
    """Windows and check instants per device group over a time range (epoch ms)."""

    windows: list[np.ndarray]
    points: list[np.ndarray]

    def packed(self) -> tuple[np.ndarray, ...]:
        """(win_ptr, win_on, win_off, pt_ptr, pts) for the kernel."""
        return (*kernels.pack_windows(self.windows), *kernels.pack_points(self.points))

    def window_ms(self, h0: int, n_hours: int) -> np.ndarray:
        """(n_groups, n_hours) int64: ms of each hour inside the group's windows."""
        out = np.zeros((len(self.windows), n_hours), dtype=np.int64)
        edges = (h0 + np.arange(n_hours + 1, dtype=np.int64)) * HOUR_MS
        for g, w in enumerate(self.windows):
            for on, off in w:
                lo = np.clip(on, edges[:-1], edges[1:])
                hi = np.clip(off, edges[:-1], edges[1:])
                out[g] += hi - lo
        return out

    def point_counts(self, h0: int, n_hours: int) -> np.ndarray:
        """(n_groups, n_hours) int64: check instants in each hour."""
        out = np.zeros((len(self.points), n_hours), dtype=np.int64)
        for g, p in enumerate(self.points):
            idx = p // HOUR_MS - h0
            idx = idx[(idx >= 0) & (idx < n_hours)]
            np.add.at(out[g], idx, 1)
        return out


class KindRates:
    """Rates of one device kind (see the subclasses)."""

    kind: Kind
    n_cat: int
    n_bits: int = 0
    run_cat: int = -1
    run_ms: int = 1
    n_groups: int = 1

    def __init__(self, settings: Settings, hold_ms: int) -> None:
        self.settings = settings
        self.hold_ms = hold_ms

    @property
    def lookback_ms(self) -> int:
        """How far before a range readings still change the range's sums."""
        if self.run_cat >= 0:
            return self.run_ms + 2 * self.hold_ms
        return self.hold_ms

    def categorize(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per reading its category (int16, -1 = no usable value) and onset flags (int8)."""
        raise NotImplementedError

    def schedule(self, start_ms: int, end_ms: int) -> Schedule:
        """Windows and check instants per group covering [start_ms, end_ms)."""
        return Schedule(windows=[_ALWAYS], points=[np.empty(0, dtype=np.int64)])

    def metrics(
        self, acc: np.ndarray, active: np.ndarray, sched: Schedule, h0: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """metric -> (numerator, denominator), each (n_hours, n_areas) float64."""
        raise NotImplementedError

    def rows(
        self,
        acc: np.ndarray,
        devices: DeviceIndex,
        areas: AreaIndex,
        sched: Schedule,
        h0: int,
        *,
        hours: np.ndarray | None = None,
        area_mask: np.ndarray | None = None,
    ) -> list[RateRow]:
        """The ``rates_hourly`` rows of ``acc`` (rows with numerator and denominator 0 omitted)."""
        active = devices.count_active(len(areas), self.n_groups)
        samples = acc[:, :, 3 * self.n_cat]
        out: list[RateRow] = []
        hour_idx = np.arange(acc.shape[0]) if hours is None else hours
        for metric, (num, den) in self.metrics(acc, active, sched, h0).items():
            for hi in hour_idx:
                for a in np.flatnonzero((num[hi] != 0) | (den[hi] != 0)):
                    if area_mask is not None and not area_mask[a]:
                        continue
                    out.append(
                        RateRow(
                            area_code=areas.codes[a],
                            kind=self.kind.value,
                            metric=metric,
                            hour_ms=int((h0 + hi) * HOUR_MS),
                            numerator=float(num[hi, a]),
                            denominator=float(den[hi, a]),
                            samples=int(samples[hi, a]),
                        )
                    )
        return out


def _minutes(ms: np.ndarray) -> np.ndarray:
    return ms.astype(np.float64) / MIN_MS


class StreetlightRates(KindRates):
    """Lighting rate (time-weighted and snapshot), coverage, lit in daylight, lamp faults."""

    kind = Kind.STREETLIGHT
    n_cat = 2  # 0 off, 1 lit (on or dimmed)
    n_bits = 1  # fault onset
    n_groups = len(SCHEDULE_GROUPS)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.stream.lighting_hold_min * MIN_MS)
        self._lighting = LightingSchedule(settings.schedule, settings.timezone)
        self._on = _code(Kind.STREETLIGHT, "power_state", PowerState.ON)
        self._dimmed = _code(Kind.STREETLIGHT, "power_state", PowerState.DIMMED)
        self._none = _code(Kind.STREETLIGHT, "fault", LampFault.NONE)

    def categorize(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Lit when the power state is on or dimmed; fault flag when a fault other than none."""
        ps = columns["power_state"]
        cat = np.where(ps < 0, -1, ((ps == self._on) | (ps == self._dimmed)).astype(np.int16))
        fault = columns["fault"]
        flags = ((fault >= 0) & (fault != self._none)).astype(np.int8)
        return cat.astype(np.int16), flags

    def schedule(self, start_ms: int, end_ms: int) -> Schedule:
        """The switching windows of each schedule class; check instants after each switch-on."""
        start = datetime.fromtimestamp(start_ms / 1000, UTC)
        end = datetime.fromtimestamp(end_ms / 1000, UTC)
        offset = self.settings.stream.snapshot_offset_min * MIN_MS
        windows = [self._lighting.window_array(start, end, c) for c in SCHEDULE_GROUPS]
        points = []
        for w in windows:
            p = w[:, 0] + offset
            points.append(p[p < w[:, 1]])
        return Schedule(windows=windows, points=points)

    def metrics(
        self, acc: np.ndarray, active: np.ndarray, sched: Schedule, h0: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Numerators and denominators of every streetlight metric, in lamp-minutes or counts."""
        n_hours = acc.shape[0]
        win = sched.window_ms(h0, n_hours)  # (g, h)
        due = sched.point_counts(h0, n_hours)
        scheduled = active @ win  # (a, h)
        checks = active @ due
        lamps = active.sum(axis=1)
        off_schedule = lamps[:, None] * HOUR_MS - scheduled
        lit_in, off_in = acc[:, :, 1], acc[:, :, 0]
        lit_all = acc[:, :, 3]
        return {
            "lighting_rate": (_minutes(lit_in), _minutes(scheduled.T)),
            "lighting_coverage": (_minutes(lit_in + off_in), _minutes(scheduled.T)),
            "lighting_snapshot": (acc[:, :, 5].astype(np.float64), checks.T.astype(np.float64)),
            "lighting_snapshot_coverage": (
                (acc[:, :, 4] + acc[:, :, 5]).astype(np.float64),
                checks.T.astype(np.float64),
            ),
            "lit_in_daylight": (_minutes(lit_all - lit_in), _minutes(off_schedule.T)),
            "lamp_faults": (
                acc[:, :, 7].astype(np.float64),
                np.repeat(lamps[None, :], n_hours, axis=0).astype(np.float64),
            ),
        }


class HeatingRates(KindRates):
    """Room-temperature compliance, coverage and cold episodes, within the heating season."""

    kind = Kind.HEATING
    n_cat = 2  # 0 below the standard, 1 at or above
    run_cat = 0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.stream.heating_hold_min * MIN_MS)
        self.run_ms = round(settings.stream.cold_episode_hours * HOUR_MS)
        self._calendar = HeatingCalendar(settings.schedule, settings.timezone)
        self._zone = ZoneInfo(settings.timezone)

    def categorize(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """At or above the standard is 1, below 0, no temperature -1."""
        t = columns["temperature_c"]
        cat = np.where(np.isnan(t), -1, t >= self.settings.schedule.room_standard_c)
        return cat.astype(np.int16), np.zeros(len(t), dtype=np.int8)

    def schedule(self, start_ms: int, end_ms: int) -> Schedule:
        """The in-season stretches (local days) overlapping the range, as windows."""
        return Schedule(
            windows=[season_windows(self._calendar, self._zone, start_ms, end_ms)],
            points=[np.empty(0, dtype=np.int64)],
        )

    def metrics(
        self, acc: np.ndarray, active: np.ndarray, sched: Schedule, h0: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Compliance and coverage in sensor-minutes; cold episodes per sensor-hour in season."""
        n_hours = acc.shape[0]
        season = sched.window_ms(h0, n_hours)[0]  # (h,)
        sensors = active[:, 0]
        observed = acc[:, :, 0] + acc[:, :, 1]
        in_season_hour = (season > 0)[:, None]
        return {
            "room_temp_compliance": (_minutes(acc[:, :, 1]), _minutes(observed)),
            "room_temp_coverage": (_minutes(observed), _minutes(season[:, None] * sensors[None])),
            "cold_episodes": (
                np.where(in_season_hour, acc[:, :, 7], 0).astype(np.float64),
                (season[:, None] * sensors[None]).astype(np.float64) / HOUR_MS,
            ),
        }


def season_windows(
    calendar: HeatingCalendar, zone: ZoneInfo, start_ms: int, end_ms: int
) -> np.ndarray:
    """Merged [start, end) epoch-ms stretches of heating days overlapping the range."""
    first = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(zone).date() - timedelta(1)
    last = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zone).date() + timedelta(1)
    out: list[list[int]] = []
    day = first
    while day <= last:
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        if calendar.in_season(midnight):
            lo = int(midnight.astimezone(UTC).timestamp() * 1000)
            nxt = day + timedelta(1)
            hi = int(
                datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC).timestamp()
                * 1000
            )
            if out and out[-1][1] == lo:
                out[-1][1] = hi
            else:
                out.append([lo, hi])
        day += timedelta(1)
    return np.array(out, dtype=np.int64).reshape(-1, 2)


class ChargerRates(KindRates):
    """Connector availability, utilization and online share from OCPP status durations."""

    kind = Kind.CHARGER
    n_cat = 3  # 0 in service and not charging, 1 Charging, 2 Faulted or Unavailable

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.stream.charger_hold_min * MIN_MS)
        self._charging = _code(Kind.CHARGER, "status", OcppStatus.CHARGING)
        self._down = (
            _code(Kind.CHARGER, "status", OcppStatus.FAULTED),
            _code(Kind.CHARGER, "status", OcppStatus.UNAVAILABLE),
        )

    def categorize(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Category by OCPP status; -1 without a status."""
        s = columns["status"]
        cat = np.zeros(len(s), dtype=np.int16)
        cat[s == self._charging] = 1
        cat[np.isin(s, self._down)] = 2
        cat[s < 0] = -1
        return cat, np.zeros(len(s), dtype=np.int8)

    def metrics(
        self, acc: np.ndarray, active: np.ndarray, sched: Schedule, h0: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Connector-minutes available, charging and reporting, over connector-minutes."""
        n_hours = acc.shape[0]
        total = _minutes(np.repeat(active[:, 0][None] * HOUR_MS, n_hours, axis=0))
        return {
            "charger_availability": (_minutes(acc[:, :, 3] + acc[:, :, 4]), total),
            "charger_utilization": (_minutes(acc[:, :, 4]), total),
            "charger_online": (_minutes(acc[:, :, 3] + acc[:, :, 4] + acc[:, :, 5]), total),
        }


MANHOLE_ALARMS = ("displacement", "opening", "overflow")


class ManholeRates(KindRates):
    """Cover alarms by type (onsets) and the sensor online share."""

    kind = Kind.MANHOLE
    n_cat = 1
    n_bits = len(MANHOLE_ALARMS)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.stream.manhole_hold_min * MIN_MS)
        self._events = {
            "displacement": _code(Kind.MANHOLE, "event", ManholeEvent.DISPLACEMENT),
            "opening": _code(Kind.MANHOLE, "event", ManholeEvent.OPEN),
            "overflow": _code(Kind.MANHOLE, "event", ManholeEvent.OVERFLOW),
        }

    def categorize(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Every report counts as online; alarm flags from the event and the measurements."""
        ev = columns["event"]
        disp = columns["displacement_mm"]
        with np.errstate(invalid="ignore"):
            displaced = (ev == self._events["displacement"]) | (
                disp >= self.settings.stream.displacement_alarm_mm
            )
        opened = (ev == self._events["opening"]) | (columns["cover_open"] == 1)
        flooded = (ev == self._events["overflow"]) | (columns["overflow"] == 1)
        flags = displaced.astype(np.int8) | (opened.astype(np.int8) << 1)
        flags |= flooded.astype(np.int8) << 2
        return np.zeros(len(ev), dtype=np.int16), flags.astype(np.int8)

    def metrics(
        self, acc: np.ndarray, active: np.ndarray, sched: Schedule, h0: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Alarm onsets per cover-hour by type; cover-minutes reporting over cover-minutes."""
        n_hours = acc.shape[0]
        covers = np.repeat(active[:, 0][None], n_hours, axis=0).astype(np.float64)
        out = {
            f"manhole_alarm_{name}": (acc[:, :, 4 + b].astype(np.float64), covers)
            for b, name in enumerate(MANHOLE_ALARMS)
        }
        out["manhole_online"] = (_minutes(acc[:, :, 1]), covers * 60.0)
        return out


def kind_rates(kind: Kind, settings: Settings) -> KindRates:
    """The rates of ``kind`` with the configured parameters."""
    cls: dict[Kind, type[KindRates]] = {
        Kind.STREETLIGHT: StreetlightRates,
        Kind.HEATING: HeatingRates,
        Kind.CHARGER: ChargerRates,
        Kind.MANHOLE: ManholeRates,
    }
    return cls[kind](settings)  # type: ignore[call-arg]
