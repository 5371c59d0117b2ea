"""Room-temperature sensors in heated homes: a first-order thermal model per room.

In season the heat company runs a weather-compensated heating curve. A balanced room settles at
``T_out + (level - T_out) * gain * supply / loss``: ``level`` is the room's own comfort level
(20.5-23 °C: where it sits in its building and stack), ``gain`` the compound's curve setting
(±3 %), ``loss`` the room's residual heat-loss factor (±2 %, a healthy, balanced room), and
``supply`` 1, trimmed 3 % at night (23-05 h). The bounds are chosen so that a healthy room stays
at or above about 18.5 °C down to about -18 °C outdoors (the deepest cold snap the weather model
draws): Beijing homes are heated to about 20-24 °C, and a home that falls below the 18 °C
standard is a real fault an operator wants to see (the ``cold_room`` fault, heat loss × 1.5-1.9,
or the compound's ``supply_failure``), never a healthy room's bad luck. The room approaches its
equilibrium with a 15-30 h time constant; the air the sensor reads swings a few tenths of a
degree with occupancy over the day (warmest in the evening). Out of season rooms drift with the
outdoor temperature. Coefficients are invented to give plausible numbers, not fitted to data.

The model also carries each room's *healthy twin*: the temperature it would have with no fault
(same weather, same noise). A repaired room takes hours to warm back up, so a fault's effect
outlasts its end; ``affected`` tells the simulation which rooms are still more than
``RECOVERED_WITHIN_C`` below their twin, and the ground truth records when that ends.
"""

from __future__ import annotations

import math

import numpy as np

from cityops.catalog import Kind
from cityops.schedule import HeatingCalendar
from simulators.clock import from_ms
from simulators.devices.base import BoolArray, DeviceModel, StepResult, TickInfo, init_rng
from simulators.faults import FaultType
from simulators.scenario import DeviceTable

LEVEL_C = (20.5, 23.0)  # a healthy room's comfort level, mild weather, daytime
GAIN_SPREAD = 0.03  # the compound's curve setting, ± (clipped normal, σ half of it)
LOSS_SPREAD = 0.02  # a healthy room's residual heat-loss factor, ± (clipped normal)
NIGHT_SUPPLY = 0.97
SWING_C = (0.2, 0.5)  # amplitude of the daily occupancy swing of the air temperature
SWING_PEAK_H = 20.0  # local hour of the warmest air (people home, cooking)
# A room whose fault has ended counts as recovered once it is this close to its healthy twin.
RECOVERED_WITHIN_C = 0.5


def _clipped_normal(rng: np.random.Generator, spread: float, n: int) -> np.ndarray:
    return np.clip(rng.normal(1.0, spread / 2, n), 1.0 - spread, 1.0 + spread)


class HeatingModel(DeviceModel):
    """Every room sensor of a scenario."""

    kind = Kind.HEATING

    def __init__(self, table: DeviceTable, calendar: HeatingCalendar, seed: int) -> None:
        rng = init_rng(seed, Kind.HEATING)
        n = len(table)
        super().__init__(table, rng.choice(np.array([600, 1200, 1800], np.int64), n))
        self.calendar = calendar
        n_groups = max(1, len(table.group_ids))
        self.gain = _clipped_normal(rng, GAIN_SPREAD, n_groups)[np.maximum(table.group, 0)]
        self.loss = _clipped_normal(rng, LOSS_SPREAD, n)
        self.level = np.clip(rng.normal(sum(LEVEL_C) / 2, 0.6, n), *LEVEL_C)
        self.tau_h = rng.uniform(15, 30, n)
        self.internal_c = rng.uniform(1.5, 3.5, n)
        self.cold_loss = rng.uniform(1.5, 1.9, n)
        self.swing_c = rng.uniform(*SWING_C, n)
        self.battery = rng.uniform(40, 100, n)
        self.temp = np.full(n, np.nan)
        self.healthy = np.full(n, np.nan)  # the healthy twin (see the module docstring)
        self._in_season: tuple[int, bool] = (-1, False)

    def in_season(self, t_ms: int) -> bool:
        """Whether heating is supplied at ``t_ms`` (cached per simulated hour)."""
        hour = t_ms // 3_600_000
        if self._in_season[0] != hour:
            self._in_season = (hour, self.calendar.in_season(from_ms(t_ms)))
        return self._in_season[1]

    def equilibrium(self, info: TickInfo, *, faults: bool = True) -> np.ndarray:
        """The temperature each room would settle at under this tick's conditions.

        With ``faults=False``: as if no fault were active (the healthy twin's equilibrium).
        """
        n = self.n
        t_out = info.outdoor_c
        if self.in_season(info.t_ms):
            night = info.local_hour >= 23 or info.local_hour < 5
            supply = np.full(n, NIGHT_SUPPLY if night else 1.0)
            loss = self.loss
            if faults:
                loss = np.where(info.fault(FaultType.COLD_ROOM, n), self.cold_loss, loss)
                failed = info.fault(FaultType.SUPPLY_FAILURE, n)
            else:
                failed = np.zeros(n, dtype=np.bool_)
            heated = t_out + (self.level - t_out) * self.gain * np.where(failed, 0, supply) / loss
            return np.where(failed, t_out + self.internal_c, heated + 0.3 * self.internal_c)
        return 0.5 * t_out + 12.0 + self.internal_c

    def step(self, info: TickInfo) -> StepResult:
        """Move every room (and its healthy twin) toward its equilibrium for one tick."""
        n, rng = self.n, info.rng
        eq = self.equilibrium(info)
        eq_healthy = self.equilibrium(info, faults=False)
        if np.isnan(self.temp).any():
            self.temp = np.where(np.isnan(self.temp), eq, self.temp)
            self.healthy = np.where(np.isnan(self.healthy), eq_healthy, self.healthy)
        dt_h = info.dt_s / 3600
        approach = 1 - np.exp(-dt_h / self.tau_h)
        noise = rng.normal(0, 0.02, n)
        self.temp = self.temp + (eq - self.temp) * approach + noise
        self.healthy = self.healthy + (eq_healthy - self.healthy) * approach + noise
        self.battery = np.maximum(self.battery - 0.0005 * dt_h, 0.0)
        season = self.in_season(info.t_ms)
        humidity = np.where(season, 28.0, 52.0) + rng.normal(0, 1, n) * np.where(season, 5, 9)
        swing = self.swing_c * math.cos(2 * math.pi * (info.local_hour - SWING_PEAK_H) / 24)
        reported = self.temp + swing + rng.normal(0, 0.1, n)
        return StepResult(
            columns={
                "temperature_c": np.round(np.clip(reported, -40, 60), 1),
                "humidity_pct": np.round(np.clip(humidity, 5, 95), 1),
                "battery_pct": np.round(self.battery, 2),
            },
            changed=np.zeros(n, dtype=np.bool_),
        )

    def affected(self) -> BoolArray:
        """Rooms still more than ``RECOVERED_WITHIN_C`` colder than their healthy twin."""
        if np.isnan(self.temp).any():
            return np.zeros(self.n, dtype=np.bool_)
        return np.asarray(self.healthy - self.temp > RECOVERED_WITHIN_C, dtype=np.bool_)
