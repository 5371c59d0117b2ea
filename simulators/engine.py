"""The simulation loop: steps every device model tick by tick and applies the fault plan.

It emits readings, status changes and complaints in simulated time.

Everything generated depends only on the scenario, the seed, the start instant and the tick; the
generator for tick ``k`` of kind ``c`` is seeded from ``(seed, c, k)``, so the stream is the same
whether it is published in real time, at 60x or as fast as possible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from cityops.catalog import Kind, ScheduleClass
from cityops.schedule import HeatingCalendar, LightingSchedule
from cityops.settings import ScheduleSettings
from simulators import faults as faults_mod
from simulators import shapes
from simulators.clock import from_ms, rfc3339, to_ms
from simulators.devices.base import DeviceModel, TickInfo
from simulators.devices.charger import ChargerModel
from simulators.devices.heating import HeatingModel
from simulators.devices.manhole import ManholeModel
from simulators.devices.streetlight import StreetlightModel
from simulators.faults import Fault, FaultType, PlanContext
from simulators.hotline import Complaint, plan_complaints
from simulators.scenario import KIND_ORDER, Scenario
from simulators.weather import Weather, local_hour

_TICK_STREAM = 5_000
_SHAPE_NOISE = 9_000


@dataclass(frozen=True, kw_only=True, slots=True)
class Reading:
    """One reading of one device; ``gateway_id`` set when a concentrator reports it."""

    kind: Kind
    device_id: str
    gateway_id: str | None
    ts: int | str
    values: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusChange:
    """A device coming online (birth) or dropping off (what its last will announces)."""

    kind: Kind
    device_id: str
    online: bool
    ts_ms: int


@dataclass(kw_only=True)
class TickOutput:
    """Everything one tick produced."""

    tick: int
    t_ms: int
    readings: list[Reading] = field(default_factory=list)
    statuses: list[StatusChange] = field(default_factory=list)
    complaints: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class _KindState:
    model: DeviceModel
    phase_s: npt.NDArray[np.int64]
    jitter_ms: npt.NDArray[np.int64]
    rfc: npt.NDArray[np.bool_]
    silent: npt.NDArray[np.bool_]
    frozen: dict[int, dict[str, Any]] = field(default_factory=dict)


class Simulation:
    """A seeded run of a scenario over [start, end)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        start: datetime,
        duration: timedelta,
        tick_s: int = 60,
        fault_rate: float = 0.0,
        faults: list[Fault] | None = None,
        schedule: ScheduleSettings | None = None,
        timezone: str = "Asia/Shanghai",
        births: bool = True,
        rfc3339_share: float = 0.25,
        shape_rate: float = 0.0,
        shape_after: timedelta = timedelta(0),
    ) -> None:
        if tick_s < 1 or (3600 % tick_s and tick_s % 60):
            raise ValueError("tick_s must divide an hour or be a whole number of minutes")
        self.scenario = scenario
        self.seed = scenario.seed
        self.start_ms = to_ms(start)
        self.tick_ms = tick_s * 1000
        self.end_ms = self.start_ms + int(duration.total_seconds() * 1000)
        self.n_ticks = max(0, -(-(self.end_ms - self.start_ms) // self.tick_ms))
        settings = schedule or ScheduleSettings()
        self.schedule = LightingSchedule(settings, timezone)
        self.calendar = HeatingCalendar(settings, timezone)
        self.weather = Weather(self.seed)
        self.births = births
        self._kinds = self._build_models(rfc3339_share)
        if faults is None:
            faults = faults_mod.plan_faults(
                scenario.tables,
                PlanContext(
                    seed=self.seed,
                    start_ms=self.start_ms,
                    end_ms=self.end_ms,
                    tick_ms=self.tick_ms,
                    rate=fault_rate,
                    constraints=self._constraints(),
                ),
            )
        if shape_rate > 0:
            # Anomaly shapes (simulators/shapes.py) on devices without another fault, from
            # ``shape_after`` on (a detector has learnt the devices by then).
            faults = faults + shapes.plan_shapes(
                scenario.tables,
                PlanContext(
                    seed=self.seed,
                    start_ms=self.start_ms + int(shape_after.total_seconds() * 1000),
                    end_ms=self.end_ms,
                    tick_ms=self.tick_ms,
                    rate=shape_rate,
                ),
                shape_rate,
                busy={d for f in faults for d in f.device_ids},
                constraints={(Kind.STREETLIGHT, FaultType.FLATLINE): self._night_start},
            )
            faults.sort(key=lambda f: (f.start_ms, f.fault_id))
        self.faults = faults
        self.complaints: list[Complaint] = plan_complaints(
            scenario,
            faults,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            noticeable=self.noticeable,
            heating_season=lambda t: self.calendar.in_season(from_ms(t)),
        )
        for f in self.faults:
            f.params.setdefault("complaints", [])
        by_id = {f.fault_id: f for f in self.faults}
        for c in self.complaints:
            if c.fault_id is not None and c.fault_id in by_id:
                by_id[c.fault_id].params["complaints"].append(c.record["complaint_id"])

    # --- set-up --------------------------------------------------------------------------------

    def _build_models(self, rfc3339_share: float) -> dict[Kind, _KindState]:
        out: dict[Kind, _KindState] = {}
        for kind in KIND_ORDER:
            table = self.scenario.tables.get(kind)
            if table is None or len(table) == 0:
                continue
            model: DeviceModel
            if kind is Kind.STREETLIGHT:
                model = StreetlightModel(table, self.schedule, self.seed)
            elif kind is Kind.MANHOLE:
                model = ManholeModel(table, self.seed)
            elif kind is Kind.HEATING:
                model = HeatingModel(table, self.calendar, self.seed)
            else:
                model = ChargerModel(table, self.seed)
            rng = np.random.default_rng(
                np.random.SeedSequence([self.seed, KIND_ORDER.index(kind), 2_000])
            )
            n = len(table)
            direct = np.array([g is None for g in table.gateway.tolist()], dtype=np.bool_)
            out[kind] = _KindState(
                model=model,
                phase_s=(rng.random(n) * model.interval_s).astype(np.int64),
                jitter_ms=rng.integers(0, self.tick_ms, n),
                rfc=direct & (rng.random(n) < rfc3339_share),
                silent=np.zeros(n, dtype=np.bool_),
            )
        return out

    def _due_mains_and_solar(self, t_ms: int) -> tuple[bool, bool]:
        ts = from_ms(t_ms)
        return (
            self.schedule.is_on(ts, ScheduleClass.MAINS),
            self.schedule.is_on(ts, ScheduleClass.SOLAR),
        )

    def _night(self, t_ms: int) -> bool:
        mains, solar = self._due_mains_and_solar(t_ms)
        return mains and solar

    def _day(self, t_ms: int) -> bool:
        mains, solar = self._due_mains_and_solar(t_ms)
        return not mains and not solar

    def _constraints(self) -> dict[FaultType, faults_mod.Constraint]:
        def in_night_clip(start: int, end: int) -> tuple[int, int] | None:
            if not self._night(start):
                return None
            windows = self.schedule.windows(from_ms(start), from_ms(start + 1))
            off = min(to_ms(w.off) for w in windows) - 30 * 60_000
            return (start, min(end, off)) if off > start else None

        def in_night(start: int, end: int) -> tuple[int, int] | None:
            return (start, end) if self._night(start) else None

        def in_day_clip(start: int, end: int) -> tuple[int, int] | None:
            if not self._day(start):
                return None
            windows = self.schedule.windows(from_ms(start), from_ms(start + 2 * 86_400_000))
            next_on = min((to_ms(w.on) for w in windows if to_ms(w.on) > start), default=end)
            return (start, min(end, next_on - 30 * 60_000))

        def in_season(start: int, end: int) -> tuple[int, int] | None:
            season = self.calendar.season_of(from_ms(start))
            if season is None:
                return None
            return (start, min(end, to_ms(season[1])))

        return {
            FaultType.FLICKER: in_night_clip,
            FaultType.LAMP_OUT: in_night,
            FaultType.CABINET_OUTAGE: in_night_clip,
            FaultType.STUCK_ON: in_day_clip,
            FaultType.SUPPLY_FAILURE: in_season,
            FaultType.COLD_ROOM: in_season,
        }

    def _night_start(self, start: int, end: int) -> tuple[int, int] | None:
        """A window that starts while both lamp classes are due on (a lamp frozen by day shows
        nothing: its standby power never changes anyway)."""
        return (start, end) if self._night(start) else None

    def noticeable(self, fault: Fault, t_ms: int) -> bool:
        """Whether a citizen can notice ``fault`` at ``t_ms`` (for the hotline)."""
        if fault.fault_type in (FaultType.LAMP_OUT, FaultType.FLICKER, FaultType.CABINET_OUTAGE):
            return self._night(t_ms)
        if fault.fault_type is FaultType.STUCK_ON:
            return self._day(t_ms)
        if fault.kind is Kind.HEATING:
            return self.calendar.in_season(from_ms(t_ms))
        return True

    # --- the loop ------------------------------------------------------------------------------

    def kinds(self) -> Mapping[Kind, DeviceModel]:
        """The device models by kind."""
        return {k: s.model for k, s in self._kinds.items()}

    def ticks(self) -> Iterator[TickOutput]:
        """Run the simulation, yielding each tick's output in order."""
        pending = sorted(self.faults, key=lambda f: f.start_ms)
        next_fault = 0
        active: list[Fault] = []
        complaint_pos = 0
        lingering: list[Fault] = []  # ended faults whose effect may still show
        for k in range(self.n_ticks):
            t = self.start_ms + k * self.tick_ms
            while next_fault < len(pending) and pending[next_fault].start_ms <= t:
                active.append(pending[next_fault])
                next_fault += 1
            lingering += [f for f in active if f.end_ms <= t]
            active = [f for f in active if f.end_ms > t]
            out = TickOutput(tick=k, t_ms=t)
            weather = (self.weather.outdoor_c(t), self.weather.rain_mm_h(t))
            for kind, state in self._kinds.items():
                masks = _masks(active, kind, state.model.n)
                shaped = {
                    i: f
                    for f in active
                    if f.kind is kind and "shape" in f.params  # planned by shapes.plan_shapes
                    for i in f.indices
                }
                self._step_kind(kind, state, k, t, weather, masks, out, shaped)
            lingering = self._settle(lingering, t)
            tick_end = t + self.tick_ms
            while (
                complaint_pos < len(self.complaints)
                and self.complaints[complaint_pos].received_ms < tick_end
            ):
                out.complaints.append(self.complaints[complaint_pos].record)
                complaint_pos += 1
            yield out
        for f in lingering:  # still affected when the run ended
            f.params["effect_end_ms"] = None
            f.params["effect_end"] = None

    def _settle(self, lingering: list[Fault], t: int) -> list[Fault]:
        """Record the effect end of ended faults whose devices are back to normal at ``t``.

        A fault's ``end`` is its repair; a slow fault's effect lasts longer (a repaired room
        takes hours to warm up). When it does, the ground truth gets ``params.effect_end_ms``
        (and ``effect_end``): the first tick at which no member still shows the effect, or None
        when they still did at the end of the run. Faults without a lasting effect get neither.
        """
        if not lingering:
            return lingering
        affected: dict[Kind, npt.NDArray[np.bool_] | None] = {}
        still: list[Fault] = []
        for f in lingering:
            if f.kind not in affected:
                state = self._kinds.get(f.kind)
                affected[f.kind] = state.model.affected() if state is not None else None
            mask = affected[f.kind]
            if mask is not None and bool(mask[list(f.indices)].any()):
                still.append(f)
            elif t > f.end_ms:
                f.params["effect_end_ms"] = t
                f.params["effect_end"] = rfc3339(t)
        return still

    def _step_kind(  # noqa: PLR0912 (one pass over the tick's devices)
        self,
        kind: Kind,
        state: _KindState,
        k: int,
        t: int,
        weather: tuple[float, float],
        masks: dict[FaultType, npt.NDArray[np.bool_]],
        out: TickOutput,
        shaped: Mapping[int, Fault] | None = None,
    ) -> None:
        model = state.model
        n = model.n
        rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, KIND_ORDER.index(kind), _TICK_STREAM, k])
        )
        info = TickInfo(
            tick=k,
            t_ms=t,
            dt_s=self.tick_ms / 1000,
            rng=rng,
            outdoor_c=weather[0],
            rain_mm_h=weather[1],
            local_hour=local_hour(t),
            faults=masks,
        )
        result = model.step(info)
        table = model.table
        if k == 0 and self.births:
            out.statuses.extend(
                StatusChange(kind=kind, device_id=str(d), online=True, ts_ms=t)
                for d in table.device_id.tolist()
            )
        silent = np.zeros(n, dtype=np.bool_)
        for ftype in faults_mod.SILENT_TYPES:
            if ftype in masks:
                silent |= masks[ftype]
        for i in np.flatnonzero(silent != state.silent).tolist():
            out.statuses.append(
                StatusChange(
                    kind=kind, device_id=str(table.device_id[i]), online=not silent[i], ts_ms=t
                )
            )
        state.silent = silent
        elapsed = k * self.tick_ms // 1000
        tick_s = self.tick_ms // 1000
        slot_now = (elapsed + state.phase_s) // model.interval_s
        slot_before = (elapsed - tick_s + state.phase_s) // model.interval_s
        due = (slot_now != slot_before) | (k == 0)
        emit = (due | result.changed) & ~silent
        idx = np.flatnonzero(emit)
        if len(idx) == 0:
            self._release_frozen(state, masks)
            return
        cols = {name: col[idx].tolist() for name, col in result.columns.items()}
        names = list(cols)
        ids = table.device_id[idx].tolist()
        gws = table.gateway[idx].tolist()
        ts_ms = (t + state.jitter_ms[idx]).tolist()
        rfc = state.rfc[idx].tolist()
        frozen_mask = np.zeros(n, dtype=np.bool_)
        for ftype in faults_mod.FROZEN_TYPES:
            if ftype in masks:
                frozen_mask |= masks[ftype]
        frozen = frozen_mask[idx].tolist()
        for j, i in enumerate(idx.tolist()):
            values = {name: cols[name][j] for name in names if cols[name][j] is not None}
            if frozen[j]:
                values = dict(state.frozen.setdefault(i, values))
            fault = shaped.get(i) if shaped else None
            if fault is not None:
                if fault.fault_type in shapes.VALUE_SHAPES:
                    field = str(fault.params["field"])
                    shape_rng = np.random.default_rng([self.seed, _SHAPE_NOISE, k, i])
                    shaped_value = shapes.apply(fault, values.get(field), ts_ms[j], shape_rng)
                    if shaped_value is not None:
                        values[field] = shaped_value
                else:  # flatline: frozen above; count the readings it froze
                    fault.params["readings"] = int(fault.params.get("readings", 0)) + 1
            ts: int | str = rfc3339(ts_ms[j]) if rfc[j] else ts_ms[j]
            out.readings.append(
                Reading(kind=kind, device_id=ids[j], gateway_id=gws[j], ts=ts, values=values)
            )
        self._release_frozen(state, masks)

    @staticmethod
    def _release_frozen(state: _KindState, masks: dict[FaultType, npt.NDArray[np.bool_]]) -> None:
        if not state.frozen:
            return
        still = np.zeros(state.model.n, dtype=np.bool_)
        for ftype in faults_mod.FROZEN_TYPES:
            if ftype in masks:
                still |= masks[ftype]
        for i in [i for i in state.frozen if not still[i]]:
            del state.frozen[i]


def _masks(active: list[Fault], kind: Kind, n: int) -> dict[FaultType, npt.NDArray[np.bool_]]:
    masks: dict[FaultType, npt.NDArray[np.bool_]] = {}
    for f in active:
        if f.kind is not kind:
            continue
        mask = masks.get(f.fault_type)
        if mask is None:
            mask = masks[f.fault_type] = np.zeros(n, dtype=np.bool_)
        mask[list(f.indices)] = True
    return masks
