"""Stream core benchmark: time-weighted lighting rate per area per hour, numba vs pandas vs polars.

Full run: 10,000,000 streetlight readings over 100,000 lamps and one month (January 2026, 43
areas, mains schedule for Beijing). ``--quick``: 1,000,000 readings over 10,000 lamps. All three
contenders compute lamp-ms lit inside the on-windows per (area, hour) from the same arrays, in the
same run, and the script checks that they agree. Also measured: the first call of the kernel in a
fresh interpreter with a warm numba cache, the live consumer's cost per 10,000-reading batch
for 100,000 lamps, and (``snapshots``) every area's once-a-second live snapshot for a city-sized
registry (1,000,000 devices; 100,000 with ``--quick``), one pass against the area-by-area baseline
in the same run. Prints one JSON object.

    .venv/bin/python benchmarks/stream.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cityops.batch import CommittedBatch, KindBatch  # noqa: E402
from cityops.catalog import Kind, ScheduleClass  # noqa: E402
from cityops.schedule import LightingSchedule  # noqa: E402
from cityops.settings import Settings  # noqa: E402
from stream import reference  # noqa: E402
from stream.engine import HOUR_MS, Folder  # noqa: E402
from stream.live import LiveRates  # noqa: E402
from stream.rates import StreetlightRates  # noqa: E402
from stream.registry import AreaIndex, DeviceIndex  # noqa: E402

N_AREAS = 43
START = datetime(2026, 1, 1, tzinfo=UTC)
END = datetime(2026, 2, 1, tzinfo=UTC)
HOLD_MS = 20 * 60_000


def make_data(n_rows: int, n_lamps: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Random readings: uniform times in the month, 70 % lit, lamps spread over the areas."""
    rng = np.random.default_rng(seed)
    lo, hi = int(START.timestamp() * 1000), int(END.timestamp() * 1000)
    return {
        "dev": rng.integers(0, n_lamps, n_rows, dtype=np.int64),
        "ts": rng.integers(lo, hi, n_rows, dtype=np.int64),
        "lit": (rng.random(n_rows) < 0.7).astype(np.int16),
        "dev_area": rng.integers(0, N_AREAS, n_lamps, dtype=np.int64),
    }


def windows() -> np.ndarray:
    """The mains on-windows overlapping the month."""
    return LightingSchedule(Settings().schedule).window_array(START, END, ScheduleClass.MAINS)


def run_numba(data: dict[str, np.ndarray], n_lamps: int) -> np.ndarray:
    """(n_hours, n_areas) lit lamp-ms in the windows, by the stream kernel (fresh state)."""
    areas = AreaIndex.build([f"A{i:02d}" for i in range(N_AREAS)])
    ids = [f"L{i:06d}" for i in range(n_lamps)]
    index = DeviceIndex.build(Kind.STREETLIGHT, ids, data["dev_area"])
    folder = Folder(StreetlightRates(Settings()), index, areas)
    h0 = int(START.timestamp() * 1000) // HOUR_MS
    n_hours = int((END - START).total_seconds()) // 3600
    flags = np.zeros(len(data["ts"]), dtype=np.int8)
    folded = folder.fold_categorized(
        data["dev"], data["ts"], data["lit"], flags, h0=h0, n_hours=n_hours
    )
    return folded.acc[:, :, 1]


def run_pandas(data: dict[str, np.ndarray]) -> np.ndarray:
    """The idiomatic pandas contender (stream.reference.lighting_minutes_pandas)."""
    df = reference.lighting_minutes_pandas(
        data["dev"], data["ts"], data["lit"], data["dev_area"], windows(), HOLD_MS
    )
    return _dense(df["area"].to_numpy(), df["hour"].to_numpy(), df["lit_ms"].to_numpy())


def run_polars(data: dict[str, np.ndarray]) -> np.ndarray:
    """The same computation in polars (lazy frame, sort, shift over device, interval clip)."""
    import polars as pl

    w = windows()
    win = pl.DataFrame({"on": w[:, 0], "off": w[:, 1]}).sort("off")
    area = pl.DataFrame({"dev": np.arange(len(data["dev_area"])), "area": data["dev_area"]})
    out = (
        pl.LazyFrame({"dev": data["dev"], "ts": data["ts"], "lit": data["lit"]})
        .unique(["dev", "ts"], keep="first", maintain_order=True)
        .sort(["dev", "ts"])
        .with_columns(
            pl.min_horizontal(
                pl.col("ts").shift(-1).over("dev").fill_null(pl.col("ts") + HOLD_MS),
                pl.col("ts") + HOLD_MS,
            ).alias("end")
        )
        .filter(pl.col("lit") == 1)
        # Held spans (at most the 20-minute hold) never reach past the window ending after them.
        .sort("ts")
        .join_asof(win.lazy().with_columns(pl.col("off").alias("key")), left_on="ts",
                   right_on="key", strategy="forward", allow_exact_matches=False)
        .filter(pl.col("on").is_not_null())
        .with_columns(
            pl.max_horizontal("ts", "on").alias("s"), pl.min_horizontal("end", "off").alias("e")
        )
        .filter(pl.col("e") > pl.col("s"))
        .with_columns(
            pl.int_ranges(pl.col("s") // HOUR_MS, (pl.col("e") - 1) // HOUR_MS + 1).alias("hour")
        )
        .explode("hour")
        .with_columns(
            (
                pl.min_horizontal("e", (pl.col("hour") + 1) * HOUR_MS)
                - pl.max_horizontal("s", pl.col("hour") * HOUR_MS)
            ).alias("lit_ms")
        )
        .join(area.lazy(), on="dev")
        .group_by(["area", "hour"])
        .agg(pl.col("lit_ms").sum())
        .collect()
    )  # fmt: skip
    return _dense(out["area"].to_numpy(), out["hour"].to_numpy(), out["lit_ms"].to_numpy())


def _dense(area: np.ndarray, hour: np.ndarray, ms: np.ndarray) -> np.ndarray:
    h0 = int(START.timestamp() * 1000) // HOUR_MS
    n_hours = int((END - START).total_seconds()) // 3600
    out = np.zeros((n_hours, N_AREAS), dtype=np.int64)
    keep = (hour >= h0) & (hour < h0 + n_hours)
    np.add.at(out, (hour[keep] - h0, area[keep]), ms[keep])
    return out


def timed(fn, *args):  # type: ignore[no-untyped-def]
    """(seconds, result) of one call."""
    t = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t, result


WARM_SNIPPET = """
import time
t = time.perf_counter()
import numpy as np
from stream import kernels
dev = np.array([0], dtype=np.int64); ts = np.array([0], dtype=np.int64)
z16 = np.zeros(1, np.int16); z8 = np.zeros(1, np.int8)
win_ptr, win_on, win_off = kernels.pack_windows([np.array([[0, 10]])])
pt_ptr, pts = kernels.pack_points([np.array([5])])
acc = np.zeros((1, 1, kernels.n_slots(2, 1)), np.int64)
kernels.accumulate(dev, ts, z16, z8, np.array([0]), 1, 2, 1, -1, 1, np.array([0]),
    np.array([0]), np.array([True]), win_ptr, win_on, win_off, pt_ptr, pts,
    np.full(1, kernels.NO_TS), np.zeros(1, np.int16), np.zeros(1, np.int8),
    np.full(1, kernels.NO_TS), acc, 0, np.zeros(1, np.int8))
params = np.array([2, 2, 10, 8, 10, 4, 0.1, 0, 0.05, 0.3, 5, 4, 7, 0, 0], dtype=np.float64)
kernels.anomaly_update(dev, ts, np.ones(1), np.array([0]), np.array([0]), params, True,
    np.zeros(1, kernels.SENSOR_DTYPE), np.zeros((1, 1, 4), np.float32), np.zeros(1),
    np.zeros(1, np.int8))
print(time.perf_counter() - t)
"""


def warm_start_s() -> float:
    """Import + first calls of the kernels in a fresh interpreter, numba cache already warm."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", WARM_SNIPPET]
    subprocess.run(cmd, check=True, env=env, capture_output=True)  # noqa: S603 (fills the cache)
    runs = [
        float(subprocess.run(cmd, check=True, env=env, capture_output=True, text=True).stdout)  # noqa: S603
        for _ in range(3)
    ]
    return statistics.median(runs)


def live_update_ms(
    n_lamps: int = 100_000, batch: int = 10_000, n_batches: int = 30, *, hinted: bool = True
) -> float:
    """Median cost of LiveRates.on_batch for a 10,000-reading streetlight batch, 100,000 lamps.

    ``hinted``: the batch carries each reading's device position as ingest sends it
    (``KindBatch.positions``, from its registry copy); without, every id is hashed (a batch
    from elsewhere, or a partitioned worker whose index holds only its areas' devices).
    """
    rng = np.random.default_rng(3)
    areas = AreaIndex.build([f"A{i:02d}" for i in range(N_AREAS)])
    ids = np.array([f"L{i:06d}" for i in range(n_lamps)], dtype=object)
    index = DeviceIndex.build(Kind.STREETLIGHT, list(ids), rng.integers(0, N_AREAS, n_lamps))
    live = LiveRates(Settings(), areas, {Kind.STREETLIGHT: index})
    t0 = int(datetime(2026, 1, 15, 12, tzinfo=UTC).timestamp() * 1000)
    costs = []
    for k in range(n_batches + 3):
        pick = rng.choice(n_lamps, batch, replace=False)
        ts = t0 + k * 60_000 + rng.integers(0, 60_000, batch)
        kb = KindBatch(
            kind=Kind.STREETLIGHT,
            # fresh string objects, as ingest decodes them from each message
            device_ids=np.array([str(i)[:1] + str(i)[1:] for i in ids[pick]], dtype=object),
            positions=pick.astype(np.int64) if hinted else None,
            ts_ms=ts.astype(np.int64),
            received_ms=ts.astype(np.int64),
            columns={
                "power_state": rng.integers(0, 3, batch).astype(np.int16),
                "illuminance_level": np.full(batch, np.nan),
                "power_w": rng.normal(90, 5, batch),
                "voltage_v": np.full(batch, np.nan),
                "current_a": np.full(batch, np.nan),
                "energy_kwh": np.full(batch, np.nan),
                "fault": np.zeros(batch, dtype=np.int16),
            },
        )
        cb = CommittedBatch(seq=k, committed_at=datetime.now(UTC), readings={kb.kind: kb})
        t = time.perf_counter()
        live.on_batch(cb)
        if k >= 3:  # the first batches include first-touch allocations
            costs.append((time.perf_counter() - t) * 1000)
    if live.consumer_errors:
        raise RuntimeError("live consumer failed")
    return statistics.median(costs)


def snapshot_ms(devices: int = 1_000_000) -> dict[str, Any]:
    """Every area's live snapshot (published once a second) for a city-sized registry: the
    one-pass ``LiveRates.snapshots`` against the area-by-area baseline, same state."""
    rng = np.random.default_rng(1)
    areas = AreaIndex.build([f"A{i:02d}" for i in range(N_AREAS)])
    share = {Kind.CHARGER: 0.60, Kind.STREETLIGHT: 0.22, Kind.HEATING: 0.13, Kind.MANHOLE: 0.05}
    values = {
        Kind.CHARGER: {"status": "Charging"},
        Kind.STREETLIGHT: {"power_state": "on", "power_w": 90.0},
        Kind.HEATING: {"temperature_c": 20.5},
        Kind.MANHOLE: {"event": "heartbeat"},
    }
    index = {}
    for kind, part in share.items():
        n = int(devices * part)
        ids = [f"{kind.value[:2]}{i:07d}" for i in range(n)]
        index[kind] = DeviceIndex.build(kind, ids, rng.integers(0, N_AREAS, n))
    t0 = int(datetime(2026, 1, 15, 10, tzinfo=UTC).timestamp() * 1000)
    now_ms = t0 + 65 * 60_000
    live = LiveRates(Settings(), areas, index, clock=lambda: now_ms / 1000)
    for kind, idx in index.items():
        pick = rng.choice(len(idx), min(20_000, len(idx)), replace=False)
        rows = [(str(idx.ids[p]), t0 + j * 100, t0, values[kind]) for j, p in enumerate(pick)]
        kb = KindBatch.from_rows(kind, rows)
        live.on_batch(CommittedBatch(seq=1, committed_at=datetime.now(UTC), readings={kind: kb}))
    one_pass, per_area = [], []
    for _ in range(3):
        t = time.perf_counter()
        got = live.snapshots()
        one_pass.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        expect = {c: reference.area_snapshot(live, a, c, now_ms) for a, c in enumerate(areas.codes)}
        per_area.append((time.perf_counter() - t) * 1000)
    return {
        "devices": sum(len(i) for i in index.values()),
        "areas": len(areas),
        "snapshots_ms": round(statistics.median(one_pass), 1),
        "per_area_baseline_ms": round(statistics.median(per_area), 1),
        "same": got == expect,
    }


def main() -> None:
    """Run the benchmark and print one JSON object."""
    from cityops import logging as cityops_logging
    from cityops.settings import LogSettings

    # Logs go to stderr: stdout carries only the one JSON object.
    cityops_logging.configure(LogSettings(level="warning"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M readings over 10k lamps")
    args = parser.parse_args()
    n_rows, n_lamps = (1_000_000, 10_000) if args.quick else (10_000_000, 100_000)
    data = make_data(n_rows, n_lamps)
    run_numba(make_data(1000, 100), 100)  # compile or load from cache outside the timing
    t_numba, got_numba = min(
        (timed(run_numba, data, n_lamps) for _ in range(3)), key=lambda x: x[0]
    )
    t_pandas, got_pandas = timed(run_pandas, data)
    t_polars, got_polars = min((timed(run_polars, data) for _ in range(2)), key=lambda x: x[0])
    result = {
        "benchmark": "stream",
        "quick": args.quick,
        "rows": n_rows,
        "lamps": n_lamps,
        "areas": N_AREAS,
        "period": f"{START.date()}..{END.date()}",
        "numba_rows_per_s": round(n_rows / t_numba),
        "pandas_rows_per_s": round(n_rows / t_pandas),
        "polars_rows_per_s": round(n_rows / t_polars),
        "ratio_numba_pandas": round(t_pandas / t_numba, 2),
        "ratio_numba_polars": round(t_polars / t_numba, 2),
        "numba_s": round(t_numba, 3),
        "pandas_s": round(t_pandas, 3),
        "polars_s": round(t_polars, 3),
        "results_agree": bool(
            np.array_equal(got_numba, got_pandas) and np.array_equal(got_numba, got_polars)
        ),
        "warm_start_s": round(warm_start_s(), 3),
        "live_update_ms": round(live_update_ms(), 3),
        "live_update_unhinted_ms": round(live_update_ms(hinted=False), 3),
        "snapshots": snapshot_ms(100_000 if args.quick else 1_000_000),
        "live_batch_readings": 10_000,
        "live_sensors": 100_000,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
