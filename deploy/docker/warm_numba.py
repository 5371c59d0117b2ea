"""Compile cityops' numba kernels into NUMBA_CACHE_DIR at image build time.

The kernels are ``@njit(cache=True)``: the first call of a process compiles them (seconds) unless
the on-disk cache already holds them for the same signatures. This folds one small committed
batch per device kind through the live rates consumer -- the same path ``cityops ingest`` takes,
so the same argument types -- and calls the remaining kernels once. The image then starts warm.
Run as ``python deploy/docker/warm_numba.py``; prints how many cache files exist afterwards.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cityops.batch import CommittedBatch, KindBatch
from cityops.catalog import Kind
from cityops.settings import Settings
from stream import kernels
from stream.live import LiveRates
from stream.registry import AreaIndex, DeviceIndex

VALUES = {
    Kind.STREETLIGHT: {"power_state": "on", "power_w": 90.0},
    Kind.MANHOLE: {"tilt_deg": 0.5, "cover_open": False},
    Kind.HEATING: {"temperature_c": 20.5},
    Kind.CHARGER: {"status": "Charging", "power_kw": 7.0},
}


def main() -> int:
    """Warm the cache; return 1 when no cache folder is configured or nothing was written."""
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        print("NUMBA_CACHE_DIR is not set: nothing to warm", file=sys.stderr)
        return 1
    areas = AreaIndex.build(["A1", "A2"])
    ids = ["D1", "D2", "D3"]
    devices = {
        kind: DeviceIndex.build(kind, ids, np.array([0, 1, 1], dtype=np.int64)) for kind in Kind
    }
    live = LiveRates(Settings(), areas, devices)
    t0 = int(datetime(2026, 1, 15, 20, tzinfo=UTC).timestamp() * 1000)
    for k in range(2):
        readings = {
            kind: KindBatch.from_rows(
                kind,
                [
                    (d, t0 + k * 60_000 + i, t0 + k * 60_000 + i, VALUES[kind])
                    for i, d in enumerate(ids)
                ],
            )
            for kind in Kind
        }
        live.on_batch(CommittedBatch(seq=k, committed_at=datetime.now(UTC), readings=readings))
    if live.consumer_errors:
        print("the live consumer failed while warming", file=sys.stderr)
        return 1
    for kind in Kind:
        live.rows(kind)
    grid = np.array([39.9, 40.0]), np.array([116.4, 116.5])
    kernels.nearest_distance_km(*grid, np.array([39.95]), np.array([116.45]))
    kernels.nearest_site(*grid, np.array([39.95]), np.array([116.45]))
    for kind in Kind:
        live.sensor_state(kind).offline(t0 + 3_600_000, devices[kind].active)
    files = [p for p in Path(cache).rglob("*") if p.suffix in (".nbi", ".nbc")]
    print(f"{len(files)} numba cache files in {cache}")
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
