"""Room-temperature sensors in heated homes: a first-order thermal model per room.

In season the heat company runs a weather-compensated heating curve designed to hold 21.5 °C; a
room settles at ``T_out + (21.5 - T_out) * gain / loss`` where ``gain`` is the compound's curve
setting (±3 %) and ``loss`` the building's heat-loss factor (log-normal around 1, so poorer
buildings run colder, most of all in cold snaps). Supply is trimmed 7 % at night (23-05 h). The
room approaches that equilibrium with a 15-30 h time constant. Out of season rooms drift with the
outdoor temperature. Coefficients are invented to give plausible numbers, not fitted to data.
"""

from __future__ import annotations

import numpy as np

from cityops.catalog import Kind
from cityops.schedule import HeatingCalendar
from simulators.clock import from_ms
from simulators.devices.base import DeviceModel, StepResult, TickInfo, init_rng
from simulators.faults import FaultType
from simulators.scenario import DeviceTable

DESIGN_ROOM_C = 21.5


class HeatingModel(DeviceModel):
    """Every room sensor of a scenario."""

    kind = Kind.HEATING

    def __init__(self, table: DeviceTable, calendar: HeatingCalendar, seed: int) -> None:
        rng = init_rng(seed, Kind.HEATING)
        n = len(table)
        super().__init__(table, rng.choice(np.array([600, 1200, 1800], np.int64), n))
        self.calendar = calendar
        n_groups = max(1, len(table.group_ids))
        self.gain = rng.normal(1.0, 0.03, n_groups)[np.maximum(table.group, 0)]
        self.loss = np.exp(rng.normal(0.0, 0.06, n))
        self.tau_h = rng.uniform(15, 30, n)
        self.internal_c = rng.uniform(1.5, 3.5, n)
        self.cold_loss = rng.uniform(1.5, 1.9, n)
        self.battery = rng.uniform(40, 100, n)
        self.temp = np.full(n, np.nan)
        self._in_season: tuple[int, bool] = (-1, False)

    def in_season(self, t_ms: int) -> bool:
        """Whether heating is supplied at ``t_ms`` (cached per simulated hour)."""
        hour = t_ms // 3_600_000
        if self._in_season[0] != hour:
            self._in_season = (hour, self.calendar.in_season(from_ms(t_ms)))
        return self._in_season[1]

    def equilibrium(self, info: TickInfo) -> np.ndarray:
        """The temperature each room would settle at under this tick's conditions."""
        n = self.n
        t_out = info.outdoor_c
        if self.in_season(info.t_ms):
            night = info.local_hour >= 23 or info.local_hour < 5
            supply = np.full(n, 0.93 if night else 1.0)
            loss = np.where(info.fault(FaultType.COLD_ROOM, n), self.cold_loss, self.loss)
            failed = info.fault(FaultType.SUPPLY_FAILURE, n)
            supply = np.where(failed, 0.0, supply)
            heated = t_out + (DESIGN_ROOM_C - t_out) * self.gain * supply / loss
            return np.where(failed, t_out + self.internal_c, heated + 0.3 * self.internal_c)
        return 0.5 * t_out + 12.0 + self.internal_c

    def step(self, info: TickInfo) -> StepResult:
        """Move every room toward its equilibrium for one tick."""
        n, rng = self.n, info.rng
        eq = self.equilibrium(info)
        if np.isnan(self.temp).any():
            self.temp = np.where(np.isnan(self.temp), eq, self.temp)
        dt_h = info.dt_s / 3600
        self.temp = self.temp + (eq - self.temp) * (1 - np.exp(-dt_h / self.tau_h))
        self.temp = self.temp + rng.normal(0, 0.02, n)
        self.battery = np.maximum(self.battery - 0.0005 * dt_h, 0.0)
        season = self.in_season(info.t_ms)
        humidity = np.where(season, 28.0, 52.0) + rng.normal(0, 1, n) * np.where(season, 5, 9)
        reported = self.temp + rng.normal(0, 0.1, n)
        return StepResult(
            columns={
                "temperature_c": np.round(np.clip(reported, -40, 60), 1),
                "humidity_pct": np.round(np.clip(humidity, 5, 95), 1),
                "battery_pct": np.round(self.battery, 2),
            },
            changed=np.zeros(n, dtype=np.bool_),
        )
