"""Per-sensor online state: last value and time, EWMA, robust score, flatline and gap detection.

One ``SensorState`` per kind holds ten preallocated arrays indexed by device position — 80 bytes
per sensor, 80 MB for a million sensors — and updates them with ``kernels.sensor_update``. Which
reading field a kind's state follows is fixed in ``STATE_FIELD``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityops import catalog
from cityops.catalog import Kind
from cityops.settings import StreamSettings
from stream import kernels

STATE_FIELD: dict[Kind, str] = {
    Kind.STREETLIGHT: "power_w",
    Kind.MANHOLE: "water_level_cm",
    Kind.HEATING: "temperature_c",
    Kind.CHARGER: "power_kw",
}
FLAT_EPS: dict[Kind, float] = {
    Kind.STREETLIGHT: 0.05,
    Kind.MANHOLE: 0.05,
    Kind.HEATING: 0.005,
    Kind.CHARGER: 0.005,
}


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorView:
    """The state of one sensor, for APIs and alerts."""

    last_ts_ms: int | None
    last_value: float | None
    mean: float | None
    std: float | None
    robust_score: float | None
    flat_since_ms: int | None
    count: int


class SensorState:
    """Online state of every sensor of one kind (bounded: a fixed set of arrays)."""

    def __init__(self, kind: Kind, n_devices: int, settings: StreamSettings) -> None:
        self.kind = kind
        self.field = STATE_FIELD[kind]
        self.alpha = settings.ewma_alpha
        self.flat_eps = FLAT_EPS[kind]
        self.flatline_ms = settings.flatline_min * 60_000
        self.max_silence_ms = int(
            catalog.KINDS[kind].typical_interval_s * 1000 * settings.gap_factor
        )
        n = n_devices
        self.last_ts = np.full(n, kernels.NO_TS, dtype=np.int64)
        self.last_val = np.full(n, np.nan)
        self.mean = np.full(n, np.nan)
        self.var = np.full(n, np.nan)
        self.med = np.full(n, np.nan)
        self.mad = np.full(n, np.nan)
        self.count = np.zeros(n, dtype=np.int64)
        self.flat_since = np.full(n, kernels.NO_TS, dtype=np.int64)
        self.score = np.full(n, np.nan)
        self.down_at = np.full(n, kernels.NO_TS, dtype=np.int64)  # last will / offline report

    _ARRAYS = (
        "last_ts", "last_val", "mean", "var", "med", "mad", "count", "flat_since", "score",
        "down_at",
    )  # fmt: skip

    def reindex(self, old_pos: np.ndarray) -> None:
        """Re-lay the arrays for a new device order: ``old_pos[i]`` is new device i's old
        position, or -1 for a device that is new (its state starts empty)."""
        keep = old_pos >= 0
        for name in self._ARRAYS:
            old = getattr(self, name)
            if old.dtype == np.int64:
                empty = 0 if name == "count" else kernels.NO_TS  # last_ts, flat_since, down_at
                fresh = np.full(len(old_pos), empty, dtype=np.int64)
            else:
                fresh = np.full(len(old_pos), np.nan)
            fresh[keep] = old[old_pos[keep]]
            setattr(self, name, fresh)

    @property
    def nbytes(self) -> int:
        """Memory held by the state arrays."""
        return sum(getattr(self, name).nbytes for name in self._ARRAYS)

    def update(
        self,
        dev: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        order: np.ndarray | None = None,
    ) -> int:
        """Apply readings (device positions, epoch ms, values; NaN = missing); returns applied.

        ``order`` may pass ``kernels.device_time_order`` of the readings when already computed.
        """
        dev = np.ascontiguousarray(dev, dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        if order is None:
            order = kernels.device_time_order(dev, ts, len(self.count))
        return int(
            kernels.sensor_update(
                dev, ts, np.ascontiguousarray(values, dtype=np.float64), order, self.alpha,
                self.flat_eps, self.last_ts, self.last_val, self.mean, self.var, self.med,
                self.mad, self.count, self.flat_since, self.score,
            )
        )  # fmt: skip

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
                last_ts_ms=None, last_value=None, mean=None, std=None, robust_score=None,
                flat_since_ms=None, count=0,
            )  # fmt: skip
        return SensorView(
            last_ts_ms=int(self.last_ts[d]),
            last_value=float(self.last_val[d]),
            mean=float(self.mean[d]),
            std=float(np.sqrt(self.var[d])),
            robust_score=float(self.score[d]),
            flat_since_ms=int(self.flat_since[d]),
            count=int(self.count[d]),
        )
