"""Per-kind folding of readings into hourly sums: the state both live and batch mode use.

A ``Folder`` owns the kernel's per-device state for one kind (last timestamp, category, flags,
run start) in preallocated arrays indexed by device position, and folds columnar readings into a
fresh accumulator covering the hours the readings can touch. Live mode keeps one Folder for the
life of the process; recomputation makes a new one per range and starts it ``lookback_ms`` early.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream import kernels
from stream.rates import KindRates, Schedule
from stream.registry import AreaIndex, DeviceIndex

HOUR_MS = kernels.HOUR_MS
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, kw_only=True, slots=True)
class Folded:
    """The result of folding one set of readings."""

    h0: int  # first epoch hour of ``acc``
    acc: np.ndarray  # (n_hours, n_areas, slots) int64
    late: np.ndarray  # bool per reading: older than the device's last reading, not folded
    folded: int


class Folder:
    """Kernel state of one kind and the fold of readings into hourly sums."""

    def __init__(self, rates: KindRates, devices: DeviceIndex, areas: AreaIndex) -> None:
        self.rates = rates
        self.devices = devices
        self.areas = areas
        n = len(devices)
        self.last_ts = np.full(n, kernels.NO_TS, dtype=np.int64)
        self.last_cat = np.zeros(n, dtype=np.int16)
        self.last_flags = np.zeros(n, dtype=np.int8)
        self.run_start = np.full(n, kernels.NO_TS, dtype=np.int64)
        self._sched_key: tuple[int, int] | None = None
        self._sched: Schedule | None = None
        self._packed: tuple[np.ndarray, ...] = ()

    def reindex(self, devices: DeviceIndex) -> None:
        """Switch to a new registry index, keeping the state of devices present in both."""
        old_pos = self.devices.lookup(devices.ids)  # old position of each new device, or -1
        keep = old_pos >= 0
        for name in ("last_ts", "last_cat", "last_flags", "run_start"):
            old = getattr(self, name)
            fresh = np.full(len(devices), kernels.NO_TS if old.dtype == np.int64 else 0, old.dtype)
            fresh[keep] = old[old_pos[keep]]
            setattr(self, name, fresh)
        self.devices = devices

    @property
    def slots(self) -> int:
        """Accumulator slots of this kind."""
        return kernels.n_slots(self.rates.n_cat, self.rates.n_bits)

    def schedule(self, start_ms: int, end_ms: int) -> Schedule:
        """Windows covering [start_ms, end_ms), cached by whole UTC days with a day's margin."""
        key = (start_ms // DAY_MS - 1, end_ms // DAY_MS + 2)
        if (
            self._sched is None
            or self._sched_key is None
            or not (self._sched_key[0] <= key[0] and key[1] <= self._sched_key[1])
        ):
            self._sched = self.rates.schedule(key[0] * DAY_MS, key[1] * DAY_MS)
            self._sched_key = key
            self._packed = self._sched.packed()
        return self._sched

    def fold(
        self,
        dev: np.ndarray,
        ts: np.ndarray,
        columns: Mapping[str, np.ndarray],
        *,
        h0: int | None = None,
        n_hours: int | None = None,
        order: np.ndarray | None = None,
    ) -> Folded:
        """Fold readings (device positions, epoch-ms timestamps, catalog-encoded columns).

        Without ``h0``/``n_hours`` the accumulator spans every hour the readings' holds touch.
        ``order`` may pass ``kernels.device_time_order`` of the readings when already computed.
        """
        cat, flags = self.rates.categorize(columns)
        return self.fold_categorized(dev, ts, cat, flags, h0=h0, n_hours=n_hours, order=order)

    def fold_categorized(
        self,
        dev: np.ndarray,
        ts: np.ndarray,
        cat: np.ndarray,
        flags: np.ndarray,
        *,
        h0: int | None = None,
        n_hours: int | None = None,
        order: np.ndarray | None = None,
    ) -> Folded:
        """Like ``fold`` with categories and flags already computed."""
        hold = self.rates.hold_ms
        if h0 is None or n_hours is None:
            if len(ts) == 0:
                h0, n_hours = 0, 0
            else:
                h0 = int(ts.min()) // HOUR_MS
                n_hours = (int(ts.max()) + hold) // HOUR_MS - h0 + 1
        acc = np.zeros((n_hours, len(self.areas), self.slots), dtype=np.int64)
        late = np.zeros(len(ts), dtype=np.int8)
        if len(ts) == 0:
            return Folded(h0=h0, acc=acc, late=late.astype(bool), folded=0)
        self.schedule(int(ts.min()) - hold, max(int(ts.max()) + hold, (h0 + n_hours) * HOUR_MS))
        win_ptr, win_on, win_off, pt_ptr, pts = self._packed
        dev = np.ascontiguousarray(dev, dtype=np.int64)
        ts = np.ascontiguousarray(ts, dtype=np.int64)
        # Gather into device-time order once: the kernel then reads memory sequentially.
        if order is None:
            order, dev_sorted, ts_sorted = kernels.device_time_sort(dev, ts, len(self.devices))
        else:
            dev_sorted, ts_sorted = dev[order], ts[order]
        late_sorted = np.zeros(len(order), dtype=np.int8)
        d = self.devices
        folded = kernels.accumulate(
            dev_sorted, ts_sorted, np.asarray(cat, dtype=np.int16)[order],
            np.asarray(flags, dtype=np.int8)[order], np.arange(len(order)), hold,
            self.rates.n_cat, self.rates.n_bits, self.rates.run_cat, self.rates.run_ms, d.area,
            d.group, d.active, win_ptr, win_on, win_off, pt_ptr, pts, self.last_ts,
            self.last_cat, self.last_flags, self.run_start, acc, h0, late_sorted,
        )  # fmt: skip
        late[order] = late_sorted
        return Folded(h0=h0, acc=acc, late=late.astype(bool), folded=int(folded))
