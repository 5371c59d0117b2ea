"""Smart manhole-cover sensors (NB-IoT): heartbeat, tilt, opening, displacement, water, battery.

A healthy well drains: water rises with rain (1.5-4 cm per mm/h) and falls back with a 2-6 h time
constant, never above 80 % of the overflow level; only a blocked well (the ``overflow`` fault)
rises past it. Events (open, close, displacement, overflow, low battery) are sent at once; while a
cover is in alarm it reports every 5 minutes instead of its heartbeat interval.
"""

from __future__ import annotations

import numpy as np

from cityops.catalog import Kind, ManholeEvent
from simulators.devices.base import DeviceModel, StepResult, TickInfo, init_rng
from simulators.faults import FaultType
from simulators.scenario import DeviceTable

LOW_BATTERY_PCT = 20.0
_ALARM_EVERY_S = 300


class ManholeModel(DeviceModel):
    """Every cover of a scenario."""

    kind = Kind.MANHOLE

    def __init__(self, table: DeviceTable, seed: int) -> None:
        rng = init_rng(seed, Kind.MANHOLE)
        n = len(table)
        super().__init__(table, rng.choice(np.array([900, 1800, 3600], np.int64), n))
        self.overflow_level = table.attrs["overflow_level_cm"].astype(np.float64)
        self.battery = rng.uniform(55, 100, n)
        self.drain_pct_h = rng.uniform(0.002, 0.006, n)
        self.signal = np.clip(rng.normal(-95, 8, n), -125, -70)
        self.base_level = rng.uniform(5, 25, n)
        self.level = self.base_level.copy()
        self.rain_gain = rng.uniform(1.5, 4.0, n)
        self.tau_h = rng.uniform(2, 6, n)
        self.open = np.zeros(n, dtype=np.bool_)
        self.displaced = np.zeros(n, dtype=np.bool_)
        self.overflowing = np.zeros(n, dtype=np.bool_)
        self.open_tilt = rng.uniform(60, 95, n)
        self.displacement = np.zeros(n)
        self.fault_displacement = rng.uniform(40, 300, n)
        self.above = rng.uniform(5, 40, n)
        self.low = self.battery < LOW_BATTERY_PCT

    def step(self, info: TickInfo) -> StepResult:
        """Drain batteries, move water, open and displace covers for one tick."""
        n, rng = self.n, info.rng
        dt_h = info.dt_s / 3600
        self.battery = np.maximum(self.battery - self.drain_pct_h * dt_h, 0.0)
        inflow = self.rain_gain * info.rain_mm_h * dt_h
        decay = 1 - np.exp(-dt_h / self.tau_h)
        self.level = self.level + inflow - (self.level - self.base_level) * decay
        blocked = info.fault(FaultType.OVERFLOW, n)
        target = self.overflow_level + self.above
        self.level = np.where(
            blocked,
            self.level + (target - self.level) * 0.3,
            np.minimum(self.level, 0.8 * self.overflow_level),
        )

        event = np.full(n, ManholeEvent.HEARTBEAT.value, dtype=object)
        opened = info.fault(FaultType.COVER_OPEN, n)
        event[opened & ~self.open] = ManholeEvent.OPEN.value
        event[~opened & self.open] = ManholeEvent.CLOSE.value
        changed = opened != self.open
        self.open = opened
        displaced = info.fault(FaultType.DISPLACED, n)
        event[displaced & ~self.displaced] = ManholeEvent.DISPLACEMENT.value
        changed |= displaced & ~self.displaced
        self.displaced = displaced
        over = self.level >= self.overflow_level
        event[over & ~self.overflowing] = ManholeEvent.OVERFLOW.value
        changed |= over != self.overflowing
        self.overflowing = over
        low = self.battery < LOW_BATTERY_PCT
        event[low & ~self.low & (event == ManholeEvent.HEARTBEAT.value)] = "low_battery"
        changed |= low & ~self.low
        self.low = low
        alarm = self.open | self.displaced | self.overflowing
        every = max(1, round(_ALARM_EVERY_S / info.dt_s))
        changed |= alarm & (info.tick % every == 0)

        tilt = np.abs(rng.normal(0.4, 0.3, n))
        tilt = np.where(self.displaced, 3 + np.abs(rng.normal(6, 3, n)), tilt)
        tilt = np.where(self.open, self.open_tilt + rng.normal(0, 1, n), tilt)
        disp = np.abs(rng.normal(0, 1.5, n))
        disp = np.where(self.displaced, self.fault_displacement + rng.normal(0, 2, n), disp)
        signal = np.clip(self.signal + rng.normal(0, 2, n), -150, 0)
        return StepResult(
            columns={
                "tilt_deg": np.round(np.clip(tilt, 0, 180), 1),
                "cover_open": self.open.copy(),
                "displacement_mm": np.round(np.clip(disp, 0, 2000), 1),
                "water_level_cm": np.round(np.clip(self.level, 0, 2000), 1),
                "overflow": over,
                "battery_pct": np.round(self.battery, 2),
                "signal_dbm": np.round(signal, 0),
                "event": event,
            },
            changed=changed,
        )
