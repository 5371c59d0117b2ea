"""Single-lamp controllers: switching by schedule class, midnight dimming, electrical readings.

Mains lamps hang on cabinet circuits (220 V AC, power factor 0.95) and are reported by the cabinet
concentrator every 10 minutes; solar lamps carry their own 25.6 V LiFePO4 battery and report
directly every 15 minutes. Both report at once when their power state changes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from cityops.catalog import Kind, LampFault, PowerState, ScheduleClass
from cityops.schedule import LightingSchedule
from simulators.devices.base import DeviceModel, StepResult, TickInfo, init_rng
from simulators.faults import FaultType
from simulators.scenario import DeviceTable

_DAY_MS = 86_400_000
MAINS_DIM_LEVEL = 0.6  # 23:00-05:00 local, the usual midnight half-power step
SOLAR_DIM_LEVEL = 0.5  # 22:00-05:00 local, to spare the battery
_STATES = np.array([PowerState.OFF.value, PowerState.ON.value, PowerState.DIMMED.value], object)
_OFF, _ON, _DIMMED = 0, 1, 2


class StreetlightModel(DeviceModel):
    """Every lamp of a scenario."""

    kind = Kind.STREETLIGHT

    def __init__(self, table: DeviceTable, schedule: LightingSchedule, seed: int) -> None:
        rng = init_rng(seed, Kind.STREETLIGHT)
        self.solar = table.attrs["schedule_class"] == ScheduleClass.SOLAR.value
        interval = np.where(self.solar, 900, 600).astype(np.int64)
        super().__init__(table, interval)
        self.schedule = schedule
        self.rated = table.attrs["rated_power_w"].astype(np.float64)
        self.energy = np.round(rng.uniform(50, 3000, self.n) * self.rated / 100, 3)
        self.efficiency = rng.uniform(0.97, 1.03, self.n)
        self.state = np.full(self.n, -1, dtype=np.int8)
        self._windows: dict[ScheduleClass, npt.NDArray[np.int64]] = {}
        self._cached: tuple[int, int] = (0, -1)

    def _due(self, t_ms: int, cls: ScheduleClass) -> bool:
        lo, hi = self._cached
        if not lo <= t_ms < hi:
            from simulators.clock import from_ms

            lo, hi = t_ms - 2 * _DAY_MS, t_ms + 5 * _DAY_MS
            for c in ScheduleClass:
                self._windows[c] = self.schedule.window_array(from_ms(lo), from_ms(hi), c)
            self._cached = (lo, hi)
        w = self._windows[cls]
        return bool(np.any((w[:, 0] <= t_ms) & (t_ms < w[:, 1])))

    def due_on(self, t_ms: int) -> npt.NDArray[np.bool_]:
        """Which lamps their schedule wants on at ``t_ms``."""
        mains = self._due(t_ms, ScheduleClass.MAINS)
        solar = self._due(t_ms, ScheduleClass.SOLAR)
        return np.where(self.solar, solar, mains)

    def step(self, info: TickInfo) -> StepResult:
        """Switch, dim and meter every lamp for one tick."""
        n, rng = self.n, info.rng
        due = self.due_on(info.t_ms)
        h = info.local_hour
        dim_mains = h >= 23 or h < 5
        dim_solar = h >= 22 or h < 5
        level = np.where(due, 1.0, 0.0)
        level = np.where(
            due & np.where(self.solar, dim_solar, dim_mains),
            np.where(self.solar, SOLAR_DIM_LEVEL, MAINS_DIM_LEVEL),
            level,
        )
        fault = np.full(n, LampFault.NONE.value, dtype=object)
        stuck = info.fault(FaultType.STUCK_ON, n)
        level = np.where(stuck & ~due, 1.0, level)
        out = info.fault(FaultType.LAMP_OUT, n)
        level = np.where(out, 0.0, level)
        fault[out] = LampFault.LAMP_FAILURE.value
        flicker = info.fault(FaultType.FLICKER, n) & due
        if flicker.any():
            blink = rng.random(n) < 0.5
            level = np.where(flicker, np.where(blink, 1.0, 0.0), level)
            fault[flicker] = LampFault.DRIVER_FAILURE.value
        outage = info.fault(FaultType.CABINET_OUTAGE, n)
        level = np.where(outage, 0.0, level)
        fault[outage] = LampFault.POWER_LOSS.value

        state = np.where(level <= 0, _OFF, np.where(level < 1, _DIMMED, _ON)).astype(np.int8)
        nominal_v = np.where(self.solar, 25.6, 225.0)
        voltage = nominal_v + rng.normal(0, 1, n) * np.where(self.solar, 0.3, 3.0)
        voltage = np.where(outage, 0.0, voltage)
        standby = np.where(self.solar, 0.1, 0.4)
        power = np.where(level > 0, self.rated * level * self.efficiency, standby)
        power = power * rng.uniform(0.99, 1.01, n)
        power = np.where(outage, 0.0, power)
        pf = np.where(self.solar, 1.0, 0.95)
        current = np.where(voltage > 1, power / (np.maximum(voltage, 1.0) * pf), 0.0)
        self.energy = self.energy + power * info.dt_s / 3.6e6
        changed = state != self.state
        changed |= flicker  # a flickering lamp reports every state change the controller sees
        self.state = state
        return StepResult(
            columns={
                "power_state": _STATES[state],
                "illuminance_level": np.round(level, 2),
                "power_w": np.round(power, 1),
                "voltage_v": np.round(voltage, 1),
                "current_a": np.round(current, 3),
                "energy_kwh": np.round(self.energy, 3),
                "fault": fault,
            },
            changed=changed,
        )
