"""Per-sensor online state: last value and time, the anomaly detector, flatline and gap detection.

One ``SensorState`` per kind follows one reading field of that kind (``DETECTORS``) with
preallocated arrays indexed by device position, updated by ``kernels.anomaly_update``: per sensor
twelve scalars (96 bytes) and, per slot, baseline, spread, count and repeat rate as float32 (16
bytes a slot: 384 bytes for the 24 hours of a room sensor, 48 for the 3 power states of a lamp).
The state is saved to ``sensor_state`` (migrations 0012, 0016) and restored at start, so a restart
does not re-learn every sensor (docs/alerts.md, "The anomaly detector").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import psycopg

from cityops import catalog
from cityops.catalog import Kind
from cityops.settings import StreamSettings
from stream import kernels

HOUR_MS = 3_600_000
GATHER_FROM = 100_000  # readings in one update from which the batch is gathered first


@dataclass(frozen=True, kw_only=True, slots=True)
class DetectorField:
    """Which field of a kind the detector follows and what its baseline is conditioned on.

    ``slot_by``: ``hour`` — one baseline per local hour of the day (daily seasonality: rooms
    follow heating schedules and occupancy); an enum field's name — one baseline per reported
    state (a lamp's power depends on whether it is on, off or dimmed; a connector's on whether it
    is Charging); ``none`` — one baseline.
    """

    field: str
    slot_by: str | Literal["hour", "none"]
    # The spread never goes below this share of the baseline: a connector's power is set by the
    # car (one session at 7 kW, the next at 60), a lamp's drifts with its driver by a few %.
    rel_floor: float = 0.0
    # Entering this state anew restarts its baseline (a connector Charging: each car its own).
    reseed: str | None = None
    # Whether a run of repeated values is evidence: not for a connector, whose power is constant
    # through a session by design.
    flat: bool = True

    @property
    def carry(self) -> bool:
        """A new slot starts from the previous one (neighbouring hours are alike)."""
        return self.slot_by == "hour"

    def resolution(self, kind: Kind) -> float:
        """The field's resolution from the catalog: the floor of the spread."""
        spec = catalog.KINDS[kind].reading_field(self.field)
        if spec is None or spec.resolution is None:
            raise ValueError(f"{kind.value}.{self.field}: the catalog gives no resolution")
        return spec.resolution


_SLOT_BY: dict[Kind, str] = {
    Kind.STREETLIGHT: "power_state",
    Kind.MANHOLE: "none",
    Kind.HEATING: "hour",
    Kind.CHARGER: "status",
}
_REL_FLOOR: dict[Kind, float] = {Kind.STREETLIGHT: 0.02, Kind.CHARGER: 0.1}
DETECTORS: dict[Kind, DetectorField] = {
    kind: DetectorField(
        field=catalog.ANOMALY_FIELD[kind],
        slot_by=_SLOT_BY[kind],
        rel_floor=_REL_FLOOR.get(kind, 0.0),
        reseed="Charging" if kind is Kind.CHARGER else None,
        flat=kind is not Kind.CHARGER,
    )
    for kind in Kind
}
STATE_FIELD: dict[Kind, str] = {kind: d.field for kind, d in DETECTORS.items()}


def _state_spec(kind: Kind) -> catalog.FieldSpec | None:
    slot_by = DETECTORS[kind].slot_by
    if slot_by in ("hour", "none"):
        return None
    return catalog.KINDS[kind].reading_field(slot_by)


def n_slots(kind: Kind) -> int:
    """How many baselines a sensor of ``kind`` keeps."""
    slot_by = DETECTORS[kind].slot_by
    if slot_by == "hour":
        return 24
    if slot_by == "none":
        return 1
    spec = _state_spec(kind)
    return len(spec.allowed or ()) if spec is not None else 1


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorView:
    """The state of one sensor, for APIs and alerts."""

    last_ts_ms: int | None
    last_value: float | None
    baseline: float | None  # the baseline of the slot of the last reading
    std: float | None
    flat_since_ms: int | None
    count: int


SAVE_STAGE_SQL = """
CREATE TEMP TABLE IF NOT EXISTS sensor_state_stage (LIKE sensor_state) ON COMMIT DROP
"""
SAVE_SQL = """
INSERT INTO sensor_state SELECT * FROM sensor_state_stage
ON CONFLICT (kind, field, device_id) DO UPDATE SET
    model = EXCLUDED.model, saved_at = EXCLUDED.saved_at, last_ts = EXCLUDED.last_ts,
    last_val = EXCLUDED.last_val, n = EXCLUDED.n, flat_since = EXCLUDED.flat_since,
    last_slot = EXCLUDED.last_slot, start_ts = EXCLUDED.start_ts, level = EXCLUDED.level,
    var = EXCLUDED.var, fvar = EXCLUDED.fvar,
    surprise = EXCLUDED.surprise, same_rate = EXCLUDED.same_rate, slots = EXCLUDED.slots
"""
LOAD_SQL = """
SELECT device_id, last_ts, last_val, n, flat_since, last_slot, start_ts, level, var, fvar,
       surprise, same_rate, slots
FROM sensor_state
WHERE kind = %(kind)s AND field = %(field)s AND model = %(model)s AND device_id = ANY(%(ids)s)
"""
_COLUMNS = (
    "kind, field, device_id, model, saved_at, last_ts, last_val, n, flat_since, last_slot, "
    "start_ts, level, var, fvar, surprise, same_rate, slots"
)


class _Field:
    """A per-sensor scalar of ``SensorState``: the view of that field of its record array."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: SensorState, objtype: type | None = None) -> np.ndarray:
        view: np.ndarray = obj.sensors[self.name]
        return view


class SensorState:
    """Online state of every sensor of one kind (bounded: a fixed set of arrays)."""

    # The per-sensor scalars live in one record array (``kernels.SENSOR_DTYPE``), read and
    # written through column views (``state.var[d] = ...``).
    last_ts = _Field()
    count = _Field()
    last_val = _Field()
    flat_since = _Field()
    last_slot = _Field()
    start_ts = _Field()  # the sensor's first reading
    level = _Field()
    var = _Field()
    fvar = _Field()
    surprise = _Field()
    same_rate = _Field()
    down_at = _Field()  # last will / offline report

    def __init__(
        self, kind: Kind, n_devices: int, settings: StreamSettings, timezone: str = "Asia/Shanghai"
    ) -> None:
        self.kind = kind
        self.detector = DETECTORS[kind]
        self.field = self.detector.field
        self.settings = settings
        self.n_slots = n_slots(kind)
        self.floor = self.detector.resolution(kind)
        self.flat_eps = self.floor / 2
        # A state slot learns its own spread: it is scored from its 9th reading on.
        self.slot_warmup = min(settings.anomaly_warmup, 8)
        memory = float(settings.anomaly_memory)
        self.params = np.array(
            [
                settings.anomaly_warmup, self.slot_warmup, settings.anomaly_level_memory,
                max(memory / self.n_slots, 8.0), memory, settings.anomaly_clip, self.floor,
                self.detector.rel_floor, self.flat_eps, settings.anomaly_fast_alpha,
                settings.anomaly_flat_log10 if self.detector.flat else np.inf,
                settings.anomaly_noise_ratio, settings.anomaly_z_ref,
                25 * HOUR_MS, self._reseed_slot(),
            ],
            dtype=np.float64,
        )  # fmt: skip
        self.flatline_ms = settings.flatline_min * 60_000
        self.max_silence_ms = int(
            catalog.KINDS[kind].typical_interval_s * 1000 * settings.gap_factor
        )
        # China keeps one offset all year; the hour slots are local hours of the day.
        offset = datetime(2026, 1, 1, tzinfo=ZoneInfo(timezone)).utcoffset()
        self.utc_offset_ms = int(offset.total_seconds() * 1000) if offset is not None else 0
        self._alloc(n_devices)

    def _reseed_slot(self) -> float:
        spec = _state_spec(self.kind)
        if self.detector.reseed is None or spec is None or spec.allowed is None:
            return -1.0
        return float(spec.allowed.index(self.detector.reseed))

    def _alloc(self, n: int) -> None:
        self.sensors = np.zeros(n, dtype=kernels.SENSOR_DTYPE)
        for name in ("last_ts", "flat_since", "down_at"):  # down_at: last will / offline report
            self.sensors[name] = kernels.NO_TS
        self.sensors["last_val"] = np.nan
        self.sensors["same_rate"] = 0.5  # share of readings repeating the last value (rooms)
        # per slot: baseline, spread, readings learnt, share of repeated values
        # (kernels.SLOT_MEAN ...), one cache line's worth per slot
        self.slots = np.zeros((n, self.n_slots, 4), dtype=np.float32)

    @property
    def model(self) -> str:
        """The layout of the saved state; a saved state of another layout is not restored."""
        return f"v5:{self.field}:{self.detector.slot_by}:{self.n_slots}"

    def reindex(self, old_pos: np.ndarray) -> None:
        """Re-lay the arrays for a new device order: ``old_pos[i]`` is new device i's old
        position, or -1 for a device that is new (its state starts empty)."""
        keep = old_pos >= 0
        sensors, slots = self.sensors, self.slots
        self._alloc(len(old_pos))
        self.sensors[keep] = sensors[old_pos[keep]]
        self.slots[keep] = slots[old_pos[keep]]

    @property
    def nbytes(self) -> int:
        """Memory held by the state arrays."""
        return int(self.sensors.nbytes + self.slots.nbytes)

    def slots_of(self, ts: np.ndarray, columns: Any) -> np.ndarray:
        """The slot of each reading: local hour, state code (-1: state missing) or 0."""
        slot_by = self.detector.slot_by
        if slot_by == "hour":
            return np.asarray((ts + self.utc_offset_ms) // HOUR_MS % 24, dtype=np.int64)
        if slot_by == "none":
            return np.zeros(len(ts), dtype=np.int64)
        return np.asarray(columns[slot_by], dtype=np.int64)

    def update(
        self,
        dev: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        order: np.ndarray | None = None,
        slots: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score, then learn, readings (device positions, epoch ms, values; NaN = missing).

        Returns the score and the cause code of each reading, in the readings' order (NaN / 0
        where not scored). ``order`` may pass ``kernels.device_time_order`` of the readings;
        ``slots`` must be given for a state-conditioned field (``slots_of``).
        """
        dev = np.ascontiguousarray(dev, dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        if order is None:
            order = kernels.device_time_order(dev, ts, len(self.count))
        if slots is None:
            if self.detector.slot_by not in ("hour", "none"):
                raise ValueError(f"{self.kind.value}: slots by {self.detector.slot_by} needed")
            slots = self.slots_of(ts, {})
        order = np.ascontiguousarray(order, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        score = np.full(len(ts), np.nan)
        cause = np.zeros(len(ts), dtype=np.int8)
        state = (self.params, self.detector.carry, self.sensors, self.slots)
        m = len(order)
        if m < GATHER_FROM:  # a live batch: small enough to stay in cache
            kernels.anomaly_update(dev, ts, values, slots, order, *state, score, cause)
            return score, cause
        # A large batch (backfill, benchmark): the readings in visiting order first (one
        # vectorised gather), so the kernel reads them sequentially instead of jumping through
        # the batch; the scores go back after.
        score_o = np.empty(m)
        cause_o = np.empty(m, dtype=np.int8)
        kernels.anomaly_update(
            dev[order], ts[order], values[order], slots[order], np.arange(m, dtype=np.int64),
            *state, score_o, cause_o,
        )  # fmt: skip
        score[order] = score_o
        cause[order] = cause_o
        return score, cause

    def report_status(self, d: int, online: bool, ts_ms: int) -> None:
        """A status message (birth or last will) of the sensor at position ``d``."""
        if online:
            self.down_at[d] = kernels.NO_TS
        elif self.last_ts[d] == kernels.NO_TS or ts_ms >= self.last_ts[d]:
            self.down_at[d] = ts_ms

    def offline(self, now_ms: int, active: np.ndarray) -> np.ndarray:
        """Bool per sensor in service: silent longer than ``gap_factor`` typical intervals, or
        reported offline (last will) with no reading since."""
        mask = kernels.offline_mask(self.last_ts, now_ms, self.max_silence_ms, active)
        down = (self.down_at != kernels.NO_TS) & (
            (self.last_ts == kernels.NO_TS) | (self.down_at >= self.last_ts)
        )
        return np.asarray(mask.astype(np.bool_) | (down & active), dtype=np.bool_)

    def flatlined(self) -> np.ndarray:
        """Bool per sensor: its value has not changed for at least ``flatline_min`` minutes."""
        has = (self.flat_since != kernels.NO_TS) & (self.count > 1)
        return np.asarray(
            has & (self.last_ts - self.flat_since >= self.flatline_ms), dtype=np.bool_
        )

    def view(self, d: int) -> SensorView:
        """The state of the sensor at position ``d``."""
        if self.count[d] == 0:
            return SensorView(
                last_ts_ms=None, last_value=None, baseline=None, std=None, flat_since_ms=None,
                count=0,
            )  # fmt: skip
        return SensorView(
            last_ts_ms=int(self.last_ts[d]),
            last_value=float(self.last_val[d]),
            baseline=float(self.level[d] + self.slots[d, self.last_slot[d], kernels.SLOT_MEAN]),
            std=float(np.sqrt(self.spread2(d))),
            flat_since_ms=int(self.flat_since[d]),
            count=int(self.count[d]),
        )

    def spread2(self, d: int) -> float:
        """The variance a reading of sensor ``d`` in its last slot is judged against (without
        the relative floor): the spread, at least the resolution, widened by the uncertainty of
        the slot's baseline (``× (1 + 1 / its readings)``), as in ``kernels.anomaly_update``."""
        slot = self.slots[d, self.last_slot[d]]
        spread = max(float(self.var[d] if self.detector.carry else slot[kernels.SLOT_VAR]),
                     self.floor**2)  # fmt: skip
        return spread * (1.0 + 1.0 / max(float(slot[kernels.SLOT_COUNT]), 1.0))

    # --- persistence ------------------------------------------------------------------------

    def save(self, conn: psycopg.Connection[Any], device_ids: Sequence[str]) -> int:
        """Upsert the state of every sensor that has learnt something; return how many."""
        learnt = np.flatnonzero(self.count > 0)
        if len(learnt) == 0:
            return 0
        now = datetime.now(UTC)
        kind, field, model = self.kind.value, self.field, self.model
        with conn.transaction():
            conn.execute(SAVE_STAGE_SQL)
            with conn.cursor().copy(f"COPY sensor_state_stage ({_COLUMNS}) FROM STDIN") as copy:
                for d in learnt.tolist():
                    slots = self.slots[d].astype("<f4")
                    copy.write_row(
                        (
                            kind, field, device_ids[d], model, now,
                            None if self.last_ts[d] == kernels.NO_TS else int(self.last_ts[d]),
                            float(self.last_val[d]), int(self.count[d]),
                            None if self.flat_since[d] == kernels.NO_TS
                            else int(self.flat_since[d]),
                            int(self.last_slot[d]), int(self.start_ts[d]), float(self.level[d]),
                            float(self.var[d]),
                            float(self.fvar[d]),
                            float(self.surprise[d]), float(self.same_rate[d]), slots.tobytes(),
                        )
                    )  # fmt: skip
            conn.execute(SAVE_SQL)
        return len(learnt)

    def restore(self, conn: psycopg.Connection[Any], device_ids: np.ndarray, lookup: Any) -> int:
        """Load the saved state of ``device_ids`` (positions by ``lookup``); return how many.

        A partitioned worker passes only its own devices, so it restores only its areas.
        """
        if len(device_ids) == 0:
            return 0
        rows = conn.execute(
            LOAD_SQL,
            {
                "kind": self.kind.value,
                "field": self.field,
                "model": self.model,
                "ids": list(device_ids),
            },
        ).fetchall()
        if not rows:
            return 0
        pos = lookup([r[0] for r in rows])
        s = self.n_slots
        restored = 0
        for d, row in zip(pos.tolist(), rows, strict=True):
            if d < 0:
                continue
            (_, last_ts, last_val, n, flat_since, last_slot, start, level, var, fvar, surprise,
             same_rate, blob) = row  # fmt: skip
            slots = np.frombuffer(bytes(blob), dtype="<f4")
            if slots.shape[0] != 4 * s:
                continue
            self.last_ts[d] = kernels.NO_TS if last_ts is None else last_ts
            self.last_val[d] = last_val
            self.count[d] = n
            self.flat_since[d] = kernels.NO_TS if flat_since is None else flat_since
            self.last_slot[d] = last_slot
            self.start_ts[d] = start
            self.level[d] = level
            self.var[d] = var
            self.fvar[d] = fvar
            self.surprise[d] = surprise
            self.same_rate[d] = same_rate
            self.slots[d] = slots.reshape(s, 4)
            restored += 1
        return restored
