"""EV charger connectors: OCPP 1.6 status machine, Poisson arrivals, sessions and energy meters.

Arrivals follow a non-homogeneous Poisson process with a daily profile (morning, midday and evening
peaks); a session plugs in (Preparing, 1-3 min), charges until its energy need is met (taper at
80 %), may pause (SuspendedEV), ends (Finishing, 1-10 min while the driver unplugs) and frees the
connector. The meter only ever counts up. Each connector makes at most one status transition per
tick, so every transition shows up in the stream; the allowed ones are ``TRANSITIONS``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from cityops.catalog import Kind, OcppErrorCode, OcppStatus
from simulators.devices.base import DeviceModel, StepResult, TickInfo, init_rng
from simulators.faults import FaultType, faulted_error_code
from simulators.scenario import DeviceTable

S = OcppStatus
STATUSES: tuple[OcppStatus, ...] = tuple(OcppStatus)
_CODE = {s: i for i, s in enumerate(STATUSES)}
AVAILABLE, PREPARING, CHARGING = _CODE[S.AVAILABLE], _CODE[S.PREPARING], _CODE[S.CHARGING]
SUSPENDED_EV, FINISHING, RESERVED = _CODE[S.SUSPENDED_EV], _CODE[S.FINISHING], _CODE[S.RESERVED]
FAULTED = _CODE[S.FAULTED]

# The transitions this simulator makes (a subset of what OCPP 1.6 permits). Faulted can be entered
# from any state; a repaired connector returns to Available.
TRANSITIONS: Mapping[OcppStatus, frozenset[OcppStatus]] = {
    S.AVAILABLE: frozenset({S.PREPARING, S.RESERVED, S.FAULTED}),
    S.PREPARING: frozenset({S.CHARGING, S.AVAILABLE, S.FAULTED}),
    S.CHARGING: frozenset({S.SUSPENDED_EV, S.FINISHING, S.FAULTED}),
    S.SUSPENDED_EV: frozenset({S.CHARGING, S.FINISHING, S.FAULTED}),
    S.SUSPENDED_EVSE: frozenset({S.CHARGING, S.FINISHING, S.FAULTED}),
    S.FINISHING: frozenset({S.AVAILABLE, S.FAULTED}),
    S.RESERVED: frozenset({S.PREPARING, S.AVAILABLE, S.FAULTED}),
    S.UNAVAILABLE: frozenset({S.AVAILABLE, S.FAULTED}),
    S.FAULTED: frozenset({S.AVAILABLE}),
}
# Relative arrival intensity by local hour (invented: commuter peaks and an evening home peak).
HOURLY_PROFILE = np.array(
    [0.3, 0.2, 0.15, 0.1, 0.1, 0.2, 0.5, 1.0, 1.4, 1.3, 1.1, 1.1,
     1.3, 1.2, 1.0, 1.0, 1.1, 1.3, 1.6, 1.7, 1.5, 1.2, 0.8, 0.5]
)  # fmt: skip
HOURLY_PROFILE = HOURLY_PROFILE / HOURLY_PROFILE.mean()
_STATUS_TEXT = np.array([s.value for s in STATUSES], dtype=object)


class ChargerModel(DeviceModel):
    """Every connector of a scenario."""

    kind = Kind.CHARGER

    def __init__(self, table: DeviceTable, seed: int) -> None:
        rng = init_rng(seed, Kind.CHARGER)
        n = len(table)
        super().__init__(table, rng.choice(np.array([120, 180, 300], np.int64), n))
        self.rated = table.attrs["power_kw"].astype(np.float64)
        # Fast chargers turn over more sessions a day than 7 kW AC posts.
        self.sessions_per_day = np.where(self.rated >= 50, 6.0, 2.0) * rng.uniform(0.5, 1.5, n)
        self.state = np.full(n, AVAILABLE, dtype=np.int8)
        self.timer = np.zeros(n, dtype=np.int32)
        self.energy = np.round(rng.uniform(100, 30_000, n), 3)
        self.need = np.zeros(n)
        self.delivered = np.zeros(n)
        self.ev_power = np.zeros(n)
        self.session: npt.NDArray[np.object_] = np.full(n, None, dtype=object)
        self.index = np.arange(n)
        self.errors = np.array([faulted_error_code(i) for i in range(n)], dtype=object)
        self.started = False

    def _start_sessions(self, who: npt.NDArray[np.bool_], info: TickInfo) -> None:
        k = int(who.sum())
        if k == 0:
            return
        rng = info.rng
        self.need[who] = np.minimum(rng.lognormal(np.log(20), 0.5, k), 80)
        self.delivered[who] = 0.0
        self.ev_power[who] = np.minimum(self.rated[who], rng.choice([7.0, 11.0, 60.0, 120.0], k))
        self.ev_power[who] *= rng.uniform(0.8, 0.97, k)
        ids = [f"tx{info.tick}-{i}" for i in self.index[who].tolist()]
        sessions = np.empty(k, dtype=object)
        sessions[:] = ids
        self.session[who] = sessions
        self.timer[who] = rng.integers(1, 4, k)

    def step(self, info: TickInfo) -> StepResult:  # noqa: PLR0915 -- one state machine, read top-down
        """Advance every connector's OCPP state by at most one transition."""
        n, rng = self.n, info.rng
        s = self.state
        new = s.copy()
        faulted = info.fault(FaultType.FAULTED, n)
        stuck = info.fault(FaultType.STUCK_FINISHING, n)
        onset = faulted & (s != FAULTED)
        repaired = ~faulted & (s == FAULTED)
        new[onset] = FAULTED
        new[repaired] = AVAILABLE
        self.session[onset | repaired] = None
        normal = ~(faulted | (s == FAULTED))
        self.timer = np.where(normal, self.timer - 1, self.timer)
        expired = self.timer <= 0
        dt_h = info.dt_s / 3600

        hour = int(info.local_hour)
        p_arrive = 1 - np.exp(-self.sessions_per_day / 24 * HOURLY_PROFILE[hour] * dt_h)
        draw = rng.random(n)
        avail = normal & (s == AVAILABLE)
        arrive = avail & ((draw < p_arrive) | stuck)
        reserve = avail & ~arrive & (draw > 1 - 0.0005)
        self._start_sessions(arrive, info)
        new[arrive] = PREPARING
        new[reserve] = RESERVED
        self.timer[reserve] = rng.integers(5, 16, int(reserve.sum()))

        prep = normal & (s == PREPARING) & expired
        abandon = prep & (rng.random(n) < 0.03) & ~stuck
        new[prep & ~abandon] = CHARGING
        new[abandon] = AVAILABLE
        self.session[abandon] = None

        charging = normal & (s == CHARGING)
        taper = np.where(self.delivered > 0.8 * self.need, 0.5, 1.0)
        power_now = np.where(charging, self.ev_power * taper, 0.0)
        energy_step = power_now * dt_h
        self.delivered += energy_step
        self.energy = self.energy + energy_step
        done = charging & ((self.delivered >= self.need) | stuck)
        pause = charging & ~done & (rng.random(n) < 0.002)
        new[done] = FINISHING
        self.timer[done] = rng.integers(1, 11, int(done.sum()))
        new[pause] = SUSPENDED_EV
        self.timer[pause] = rng.integers(5, 21, int(pause.sum()))

        resumed = normal & (s == SUSPENDED_EV) & (expired | stuck)
        new[resumed & stuck] = FINISHING
        new[resumed & ~stuck] = CHARGING
        freed = normal & (s == FINISHING) & expired & ~stuck
        new[freed] = AVAILABLE
        self.session[freed] = None
        claimed = normal & (s == RESERVED) & expired
        use = claimed & (rng.random(n) < 0.7)
        self._start_sessions(use, info)
        new[use] = PREPARING
        new[claimed & ~use] = AVAILABLE

        changed = new != s
        if not self.started:
            changed[:] = True
            self.started = True
        self.state = new
        error = np.full(n, OcppErrorCode.NO_ERROR.value, dtype=object)
        error[new == FAULTED] = self.errors[new == FAULTED]
        taper = np.where(self.delivered > 0.8 * self.need, 0.5, 1.0)
        power_out = np.where(new == CHARGING, self.ev_power * taper, 0.0)
        return StepResult(
            columns={
                "status": _STATUS_TEXT[new],
                "error_code": error,
                "power_kw": np.round(power_out, 2),
                "energy_kwh": np.round(self.energy, 3),
                "session_id": self.session.copy(),
            },
            changed=changed,
        )
