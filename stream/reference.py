"""Plain-Python and pandas versions of the kernels, written from the definitions, for the tests.

They share no code with ``stream.kernels``: where the kernel folds readings in one by one and
takes back the part of a tentative hold a later reading cuts short, the reference first builds
each device's held intervals ("until the next reading or the hold time, whichever is first") and
then measures them. Same inputs, same accumulator layout (see ``stream.kernels``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pandas as pd

HOUR_MS = 3_600_000


def _hour_pieces(s: int, e: int) -> list[tuple[int, int]]:
    """[(hour index, ms in that hour)] of the span [s, e)."""
    out = []
    while s < e:
        h = s // HOUR_MS
        seg = min(e, (h + 1) * HOUR_MS)
        out.append((h, seg - s))
        s = seg
    return out


def _device_readings(
    dev: np.ndarray, ts: np.ndarray, cat: np.ndarray, flags: np.ndarray, active: np.ndarray
) -> dict[int, list[tuple[int, int, int]]]:
    """Per in-service device its (ts, cat, flags) in time order, first of equal timestamps kept."""
    per: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for i in range(len(ts)):
        d = int(dev[i])
        if d < 0 or not active[d] or int(cat[i]) < 0:
            continue
        per[d].append((int(ts[i]), i, int(cat[i]), int(flags[i])))
    out: dict[int, list[tuple[int, int, int]]] = {}
    for d, rows in per.items():
        rows.sort()
        kept: list[tuple[int, int, int]] = []
        for t, _, c, f in rows:
            if kept and kept[-1][0] == t:
                continue
            kept.append((t, c, f))
        out[d] = kept
    return out


def accumulate(  # noqa: PLR0912 (written out literally, to be checkable by eye)
    dev: np.ndarray,
    ts: np.ndarray,
    cat: np.ndarray,
    flags: np.ndarray,
    *,
    hold_ms: int,
    n_cat: int,
    n_bits: int,
    run_cat: int,
    run_ms: int,
    dev_area: np.ndarray,
    dev_group: np.ndarray,
    dev_active: np.ndarray,
    windows: Sequence[Sequence[tuple[int, int]]],
    points: Sequence[Sequence[int]],
    h0: int,
    n_hours: int,
    n_areas: int,
) -> np.ndarray:
    """The accumulator ``stream.kernels.accumulate`` produces from empty state, by definition."""
    slots = 3 * n_cat + 2 + n_bits
    acc = np.zeros((n_hours, n_areas, slots), dtype=np.int64)

    def add(h: int, area: int, slot: int, value: int) -> None:
        if h0 <= h < h0 + n_hours:
            acc[h - h0, area, slot] += value

    for d, rows in _device_readings(dev, ts, cat, flags, dev_active).items():
        area = int(dev_area[d])
        g = int(dev_group[d])
        run_start: int | None = None
        for k, (t, c, f) in enumerate(rows):
            end = t + hold_ms
            if k + 1 < len(rows):
                end = min(end, rows[k + 1][0])
            for h, ms in _hour_pieces(t, end):
                add(h, area, n_cat + c, ms)
            for on, off in windows[g]:
                for h, ms in _hour_pieces(max(t, on), min(end, off)):
                    add(h, area, c, ms)
            for p in points[g]:
                if t <= p < end:
                    add(p // HOUR_MS, area, 2 * n_cat + c, 1)
            hour = t // HOUR_MS
            add(hour, area, 3 * n_cat, 1)
            held = k > 0 and t <= rows[k - 1][0] + hold_ms
            prev_flags = rows[k - 1][2] if held else 0
            for b in range(n_bits):
                if (f >> b) & 1 and not (prev_flags >> b) & 1:
                    add(hour, area, 3 * n_cat + 1 + b, 1)
            if run_cat >= 0:
                if c != run_cat:
                    run_start = None
                    continue
                continues = held and rows[k - 1][1] == run_cat and run_start is not None
                if not continues or run_start is None:
                    run_start = t
                if held and t - run_start >= run_ms and rows[k - 1][0] - run_start < run_ms:
                    add(hour, area, 3 * n_cat + 1 + n_bits, 1)
    return acc


def lighting_minutes_pandas(
    device: np.ndarray,
    ts: np.ndarray,
    lit: np.ndarray,
    dev_area: np.ndarray,
    windows: np.ndarray,
    hold_ms: int,
) -> pd.DataFrame:
    """Lamp-ms lit inside the on-windows per (area, hour), idiomatic pandas (one schedule class).

    The benchmark's pandas contender; also checked against the kernel in the tests. Returns
    columns ``area``, ``hour`` (epoch hour index) and ``lit_ms``.
    """
    df = pd.DataFrame({"device": device, "ts": ts, "lit": lit})
    df = df[df["device"] >= 0]
    df = df.sort_values(["device", "ts"], kind="stable").drop_duplicates(["device", "ts"])
    nxt = df.groupby("device", sort=False)["ts"].shift(-1)
    df["end"] = np.minimum(nxt.fillna(df["ts"] + hold_ms).astype(np.int64), df["ts"] + hold_ms)
    df = df[df["lit"] == 1].reset_index(drop=True)
    # Clip every held span to every window it overlaps (an interval join on sorted windows).
    on, off = windows[:, 0].astype(np.int64), windows[:, 1].astype(np.int64)
    first = np.searchsorted(off, df["ts"].to_numpy(), side="right")
    reps = np.maximum(np.searchsorted(on, df["end"].to_numpy(), side="left") - first, 0)
    spans = df.loc[df.index.repeat(reps)].reset_index(drop=True)
    w = np.repeat(first, reps) + spans.groupby(np.repeat(df.index, reps)).cumcount().to_numpy()
    spans["s"] = np.maximum(spans["ts"].to_numpy(), on[w])
    spans["e"] = np.minimum(spans["end"].to_numpy(), off[w])
    spans = spans[spans["e"] > spans["s"]].reset_index(drop=True)
    # Split at hour boundaries: one row per hour the span touches.
    h_first = spans["s"] // HOUR_MS
    n = ((spans["e"] - 1) // HOUR_MS - h_first + 1).to_numpy()
    pieces = spans.loc[spans.index.repeat(n)].reset_index(drop=True)
    pieces["hour"] = np.repeat(h_first.to_numpy(), n) + (
        pieces.groupby(np.repeat(spans.index, n)).cumcount().to_numpy()
    )
    lo = np.maximum(pieces["s"], pieces["hour"] * HOUR_MS)
    hi = np.minimum(pieces["e"], (pieces["hour"] + 1) * HOUR_MS)
    pieces["lit_ms"] = (hi - lo).astype(np.int64)
    pieces["area"] = dev_area[pieces["device"].to_numpy()]
    return pieces.groupby(["area", "hour"])["lit_ms"].sum().reset_index()


def sensor_state(  # noqa: PLR0912 (written out literally, to be checkable by eye)
    dev: np.ndarray,
    ts: np.ndarray,
    val: np.ndarray,
    *,
    n_dev: int,
    alpha: float,
    flat_eps: float,
) -> dict[str, list[float]]:
    """Per-sensor state after the readings, by the definitions in ``kernels.sensor_update``."""
    state: dict[str, list[float]] = {
        name: [math.nan] * n_dev
        for name in ("last_val", "mean", "var", "med", "mad", "score", "flat_since", "last_ts")
    }
    count = [0] * n_dev
    rows = sorted(
        (int(dev[i]), int(ts[i]), i, float(val[i])) for i in range(len(ts)) if int(dev[i]) >= 0
    )
    for d, t, _, x in rows:
        if not math.isnan(state["last_ts"][d]) and t <= state["last_ts"][d]:
            continue
        if math.isnan(x):
            state["last_ts"][d] = t
            continue
        if count[d] == 0:
            for name, v in (("mean", x), ("var", 0.0), ("med", x), ("mad", 0.0), ("score", 0.0)):
                state[name][d] = v
            state["flat_since"][d] = t
        else:
            med, mad = state["med"][d], state["mad"][d]
            spread = 1.4826 * mad
            if spread > 0:
                state["score"][d] = abs(x - med) / spread
            else:
                state["score"][d] = math.inf if abs(x - med) > flat_eps else 0.0
            diff = x - state["mean"][d]
            state["mean"][d] += alpha * diff
            state["var"][d] = (1 - alpha) * (state["var"][d] + diff * alpha * diff)
            step = max(mad, flat_eps) * alpha
            if count[d] == 1:
                new_med = x
            elif x > med:
                new_med = min(med + step, x)
            elif x < med:
                new_med = max(med - step, x)
            else:
                new_med = med
            state["med"][d] = new_med
            state["mad"][d] = mad + alpha * (abs(x - new_med) - mad)
            if abs(x - state["last_val"][d]) > flat_eps:
                state["flat_since"][d] = t
        state["last_val"][d] = x
        state["last_ts"][d] = t
        count[d] += 1
    state["count"] = [float(c) for c in count]
    return state
