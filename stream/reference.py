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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from stream.live import LiveRates

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


def anomaly_scores(  # noqa: PLR0912, PLR0915 (written out literally, to be checkable by eye)
    dev: np.ndarray,
    ts: np.ndarray,
    val: np.ndarray,
    slot: np.ndarray,
    *,
    carry: bool,
    warmup: float,
    slot_warmup: float,
    level_memory: float,
    slot_memory: float,
    memory: float,
    clip: float,
    floor: float,
    rel_floor: float,
    eps: float,
    fast_alpha: float,
    flat_log10: float,
    noise_ratio: float,
    z_ref: float,
    season_warmup_ms: float,
    reseed: float,
) -> tuple[list[float], dict[int, dict[str, Any]]]:
    """Scores of the readings and the final per-sensor state, by ``kernels.anomaly_update``'s
    definitions, in plain Python (dicts and floats; slot values rounded to float32 like the
    kernel's arrays)."""
    f32 = np.float32
    scores = [math.nan] * len(ts)
    sensors: dict[int, dict[str, Any]] = {}
    rows = sorted((int(dev[i]), int(ts[i]), i) for i in range(len(ts)) if int(dev[i]) >= 0)
    for d, t, i in rows:
        st = sensors.setdefault(
            d,
            {
                "last_ts": None, "last_val": math.nan, "n": 0, "last_slot": 0, "level": 0.0,
                "start": 0, "var": 0.0, "fvar": 0.0, "surprise": 0.0, "same": 0.5, "slots": {},
            },
        )  # fmt: skip
        if st["last_ts"] is not None and t <= st["last_ts"]:
            continue
        x, s = float(val[i]), int(slot[i])
        if math.isnan(x) or s < 0:
            st["last_ts"] = t
            continue
        n = st["n"]
        slots = st["slots"]
        if s not in slots and carry and n > 0:
            prev = slots[st["last_slot"]]
            slots[s] = {"mean": prev["mean"], "var": prev["var"], "same": prev["same"],
                        "count": f32(1.0)}  # fmt: skip
        repeat = n > 0 and abs(x - st["last_val"]) <= eps
        entered = s == reseed and n > 0 and s != st["last_slot"] and s in slots
        if entered:
            slots[s]["mean"] = f32(x)
            st["surprise"] = 0.0
        if not carry and n > 0 and s != st["last_slot"]:
            slot_v = float(slots[s]["var"]) if s in slots else 0.0
            st["fvar"] = max(slot_v, floor * floor, (rel_floor * x) ** 2)
        if s in slots and not entered:
            sl = slots[s]
            mean, slot_var = float(sl["mean"]), float(sl["var"])
            same = st["same"] if carry else float(sl["same"])
            pred = st["level"] + mean
            resid = x - pred
            v = max(st["var"] if carry else slot_var, floor * floor, (rel_floor * pred) ** 2) * (
                1 + 1 / float(sl["count"])
            )
            sd = math.sqrt(v)
            if repeat:
                st["surprise"] += -math.log10(min(max(same, 0.01), 0.99))
            else:
                st["surprise"] = 0.0
            step = x - st["last_val"] if n > 0 and (carry or s == st["last_slot"]) else 0.0
            fast = (1 - fast_alpha) * st["fvar"] + fast_alpha * 0.5 * step * step
            k = float(sl["count"]) + 1
            if carry:
                judged = n >= warmup and t - st["start"] >= season_warmup_ms
            else:
                judged = n >= warmup and k > slot_warmup
            if judged:
                scores[i] = max(
                    abs(resid) / sd,
                    st["surprise"] / flat_log10 * z_ref,
                    math.sqrt(fast / v) / noise_ratio * z_ref,
                )
                rc = min(max(resid, -clip * sd), clip * sd)
                outlier = abs(resid) > clip * sd or st["surprise"] / flat_log10 * z_ref > clip
            else:
                rc = resid
                outlier = False
            a_v = max(1 / (n + 1), 1 / memory)
            st["var"] += (1 / memory if outlier else a_v) * (rc * rc - st["var"])
            st["fvar"] = fast
            if carry:
                a_l = 1 / level_memory if outlier else max(1 / (n + 1), 1 / level_memory)
                st["level"] += a_l * rc
                st["same"] = same + a_v * ((1.0 if repeat else 0.0) - same)
            a_s = 1 / slot_memory if outlier else max(1 / k, 1 / slot_memory)
            sl["mean"] = f32(mean + a_s * rc)
            a_sv = 1 / memory if outlier else max(1 / k, 1 / memory)
            sl["var"] = f32(slot_var + a_sv * (rc * rc - slot_var))
            if not carry:
                sl["same"] = f32(same + a_s * ((1.0 if repeat else 0.0) - same))
            sl["count"] = f32(min(k, 1e9))
        elif not entered:
            if carry:
                st["level"] = x
            slots[s] = {"mean": f32(0.0 if carry else x), "var": f32(0.0), "same": f32(0.5),
                        "count": f32(1.0)}  # fmt: skip
        if n == 0:
            st["start"] = t
        st["last_slot"] = s
        st["last_val"] = x
        st["last_ts"] = t
        st["n"] = n + 1
    return scores, sensors


def area_snapshot(live: LiveRates, a: int, code: str, now_ms: int) -> dict[str, Any]:
    """One area's live snapshot computed for that area alone, from public parts of ``live``:
    the reference of ``LiveRates.snapshots`` (and how it was computed before, area by area)."""
    from stream import complaints
    from stream.engine import HOUR_MS

    hour = now_ms // HOUR_MS - 1
    rates: dict[str, float | None] = {}
    sensors: dict[str, dict[str, int]] = {}
    for kind, index in live.devices.items():
        for r in live.rows(kind, {hour}):
            if r.area_code == code and r.metric != complaints.METRIC:
                rates[r.metric] = r.numerator / r.denominator if r.denominator else None
        state = live.sensor_state(kind)
        in_area = (index.area == a) & index.active
        sensors[kind.value] = {
            "in_service": int(in_area.sum()),
            "offline": int((state.offline(now_ms, index.active) & in_area).sum()),
            "flatlined": int((state.flatlined() & in_area).sum()),
        }
    return {"area": code, "ts": now_ms, "hour": hour * HOUR_MS, "rates": rates, "sensors": sensors}
