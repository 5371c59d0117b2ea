"""Numba kernels over columnar readings: held-state time per hour, onsets, runs, sensor state.

Every kernel works on plain NumPy arrays (device index, epoch-millisecond UTC timestamp, a small
integer category per reading) and adds into a caller-owned accumulator, so the same code serves
live batches and recomputation over history. Timestamps and durations are int64 milliseconds and
the sums are integers: adding readings in any split gives bit-identical results.

The held-state model (docs/rates.md): a reading's category holds from its timestamp until the
next reading of the same device or ``hold_ms`` later, whichever comes first. The kernel keeps, per
device, the last timestamp and category; a new reading first takes back the part of the previous
reading's tentative hold it cuts short, then adds its own full hold. After all readings the sums
equal those of the "until next reading or hold" definition (``stream.reference`` checks it).

Accumulator layout ``acc[hour - h0, area, slot]`` for ``K`` categories and ``B`` onset bits:

- ``slot k``          ms held in category ``k`` inside the device group's windows;
- ``slot K + k``      ms held in category ``k`` in total;
- ``slot 2K + k``     check instants of the group at which the device was held in ``k``;
- ``slot 3K``         readings (samples) by their own hour;
- ``slot 3K + 1 + b`` onsets of flag bit ``b`` (the flag is set and was not set at the previous
  reading still held at this one);
- ``slot 3K + 1 + B`` runs of category ``run_cat`` that reached ``run_ms`` at this reading.
"""

from __future__ import annotations

import numpy as np
from numba import njit

HOUR_MS = 3_600_000
NO_TS = np.iinfo(np.int64).min


def n_slots(n_cat: int, n_bits: int) -> int:
    """Number of accumulator slots for ``n_cat`` categories and ``n_bits`` onset flags."""
    return 3 * n_cat + 2 + n_bits


def pack_windows(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group sorted, non-overlapping (n, 2) windows as (ptr, on, off) flat int64 arrays."""
    ptr = np.zeros(len(groups) + 1, dtype=np.int64)
    for g, w in enumerate(groups):
        ptr[g + 1] = ptr[g] + len(w)
    on = np.concatenate([np.asarray(w, dtype=np.int64).reshape(-1, 2)[:, 0] for w in groups])
    off = np.concatenate([np.asarray(w, dtype=np.int64).reshape(-1, 2)[:, 1] for w in groups])
    return ptr, on.astype(np.int64), off.astype(np.int64)


def pack_points(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sorted check instants as (ptr, points) flat int64 arrays."""
    ptr = np.zeros(len(groups) + 1, dtype=np.int64)
    for g, p in enumerate(groups):
        ptr[g + 1] = ptr[g] + len(p)
    pts = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in groups])
    return ptr, pts.astype(np.int64)


@njit(cache=True, nogil=True, inline="always")
def _add_span(acc, h0, area, slot, s, e, sign):  # type: ignore[no-untyped-def]
    """Add ``sign * |[s, e)|`` to ``acc[., area, slot]``, split at UTC hour boundaries."""
    n_hours = acc.shape[0]
    lo = h0 * HOUR_MS
    hi = (h0 + n_hours) * HOUR_MS
    s = max(s, lo)
    e = min(e, hi)
    while s < e:
        h = s // HOUR_MS
        seg = min(e, (h + 1) * HOUR_MS)
        acc[h - h0, area, slot] += sign * (seg - s)
        s = seg


def device_time_order(dev: np.ndarray, ts: np.ndarray, n_dev: int) -> np.ndarray:
    """Indices of the readings of known devices (``dev >= 0``) by device, then time (stable).

    Equal to ``np.lexsort((ts, dev))`` without the unknown devices. Large inputs use a counting
    sort by device (linear) and sort each device's few readings; small batches against a large
    registry one stable sort of a packed (device, time) key, which does not touch a per-device
    array.
    """
    return device_time_sort(dev, ts, n_dev)[0]


def device_time_sort(
    dev: np.ndarray, ts: np.ndarray, n_dev: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``device_time_order`` and the device and timestamp arrays already in that order."""
    if len(ts) * 8 > n_dev:  # a large batch for the registry: counting sort, linear
        order, dev_sorted, ts_sorted = _counting_order(dev, ts, n_dev)
        return order, dev_sorted, ts_sorted
    # A live batch against a large registry: one stable sort of (device, time) packed in one
    # int64 (time relative to the batch's first reading) when both fit, else lexsort; neither
    # touches a per-device array.
    t0 = int(ts.min()) if len(ts) else 0
    span = int(ts.max()) - t0 if len(ts) else 0
    if span < 2**32 and n_dev < 2**31:
        key = (dev << 32) | (ts - t0)
        order = np.argsort(key, kind="stable")
        order = order[np.count_nonzero(dev < 0) :]  # unknown devices (-1) sort first
    else:
        order = np.lexsort((ts, dev))
        order = order[dev[order] >= 0]
    return order, dev[order], ts[order]


@njit(cache=True, nogil=True)
def _counting_order(dev, ts, n_dev):  # type: ignore[no-untyped-def]  # noqa: PLR0912
    start = np.zeros(n_dev + 1, dtype=np.int64)
    for i in range(dev.shape[0]):
        if dev[i] >= 0:
            start[dev[i] + 1] += 1
    for d in range(n_dev):
        start[d + 1] += start[d]
    m = start[n_dev]
    order = np.empty(m, dtype=np.int64)
    tsb = np.empty(m, dtype=np.int64)  # timestamps travel with the indices: local access later
    fill = start[:-1].copy()
    for i in range(dev.shape[0]):
        d = dev[i]
        if d >= 0:
            j = fill[d]
            order[j] = i
            tsb[j] = ts[i]
            fill[d] = j + 1
    dev_sorted = np.empty(m, dtype=np.int64)
    for d in range(n_dev):
        lo = start[d]
        hi = start[d + 1]
        dev_sorted[lo:hi] = d
        in_order = True
        for k in range(lo + 1, hi):
            if tsb[k] < tsb[k - 1]:
                in_order = False
                break
        if in_order:  # readings usually arrive in time order: nothing to do
            continue
        if hi - lo <= 64:
            for k in range(lo + 1, hi):  # insertion sort: stable, fast for a few readings
                x = order[k]
                tx = tsb[k]
                j = k - 1
                while j >= lo and tsb[j] > tx:
                    order[j + 1] = order[j]
                    tsb[j + 1] = tsb[j]
                    j -= 1
                order[j + 1] = x
                tsb[j + 1] = tx
        else:
            sub = np.argsort(tsb[lo:hi], kind="mergesort")
            seg = order[lo:hi].copy()
            tseg = tsb[lo:hi].copy()
            for k in range(hi - lo):
                order[lo + k] = seg[sub[k]]
                tsb[lo + k] = tseg[sub[k]]
    return order, dev_sorted, tsb


@njit(cache=True, nogil=True, inline="always")
def _first_above(arr, lo, hi, x):  # type: ignore[no-untyped-def]
    """First index in [lo, hi) of sorted ``arr`` whose value is greater than ``x`` (else hi)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if arr[mid] > x:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True, inline="always")
def _add_interval(  # type: ignore[no-untyped-def]
    acc, h0, area, cat, n_cat, s, e, sign, win_on, win_off, w_lo, w_hi, pts, p_lo, p_hi
):
    """Credit ``[s, e)`` held in ``cat``: in-window time, total time, check instants."""
    if e <= s:
        return
    _add_span(acc, h0, area, n_cat + cat, s, e, sign)
    if w_hi > w_lo:
        j = _first_above(win_off, w_lo, w_hi, s)
        while j < w_hi and win_on[j] < e:
            a = max(s, win_on[j])
            b = min(e, win_off[j])
            if a < b:
                _add_span(acc, h0, area, cat, a, b, sign)
            j += 1
    if p_hi > p_lo:
        n_hours = acc.shape[0]
        q = _first_above(pts, p_lo, p_hi, s - 1)
        while q < p_hi and pts[q] < e:
            hi = pts[q] // HOUR_MS - h0
            if 0 <= hi < n_hours:
                acc[hi, area, 2 * n_cat + cat] += sign
            q += 1


@njit(cache=True, nogil=True)
def accumulate(  # type: ignore[no-untyped-def]  # noqa: PLR0912, PLR0915 (one loop: numba speed)
    dev,
    ts,
    cat,
    flags,
    order,
    hold_ms,
    n_cat,
    n_bits,
    run_cat,
    run_ms,
    dev_area,
    dev_group,
    dev_active,
    win_ptr,
    win_on,
    win_off,
    pt_ptr,
    pts,
    last_ts,
    last_cat,
    last_flags,
    run_start,
    acc,
    h0,
    late,
):
    """Fold readings (visited in ``order``) into ``acc`` and the per-device state; see module doc.

    ``order`` must visit each device's readings by ascending timestamp (``np.lexsort((ts, dev))``).
    Readings of unknown (index < 0) or not-in-service devices and readings with ``cat < 0`` are
    skipped; a reading at the same timestamp as the device's last one is a duplicate (the first
    wins, as in the database); a reading older than the device's last one is late: it is not
    folded in, ``late[i]`` is set to 1 and the caller recomputes its hours. Returns the number of
    readings folded in.
    """
    n_hours = acc.shape[0]
    sample_slot = 3 * n_cat
    run_slot = 3 * n_cat + 1 + n_bits
    folded = 0
    n = order.shape[0]
    prev_d = -1  # device of the previous reading folded in this call
    for r in range(n):
        i = order[r]
        d = dev[i]
        if d < 0 or not dev_active[d]:
            continue
        c = cat[i]
        if c < 0:
            continue
        t = ts[i]
        lt = last_ts[d]
        if lt != NO_TS and t <= lt:
            if t < lt:
                late[i] = 1
            continue
        area = dev_area[d]
        g = dev_group[d]
        w_lo = win_ptr[g]
        w_hi = win_ptr[g + 1]
        p_lo = pt_ptr[g]
        p_hi = pt_ptr[g + 1]
        held = lt != NO_TS and t <= lt + hold_ms
        # Only the device's reading folded last (in an earlier call) was credited its full,
        # tentative hold; take back the part this reading cuts short.
        if prev_d != d and lt != NO_TS and t < lt + hold_ms:
            _add_interval(
                acc, h0, area, last_cat[d], n_cat, t, lt + hold_ms, -1,
                win_on, win_off, w_lo, w_hi, pts, p_lo, p_hi,
            )  # fmt: skip
        # Within this call the next reading of the device is known: hold until it (or the hold
        # time); the device's last reading here gets the tentative full hold.
        end = t + hold_ms
        r2 = r + 1
        while r2 < n and dev[order[r2]] == d:
            j = order[r2]
            if cat[j] >= 0 and ts[j] > t:
                end = min(end, ts[j])
                break
            r2 += 1
        _add_interval(
            acc, h0, area, c, n_cat, t, end, 1,
            win_on, win_off, w_lo, w_hi, pts, p_lo, p_hi,
        )  # fmt: skip
        prev_d = d
        hi = t // HOUR_MS - h0
        inside = 0 <= hi < n_hours
        if inside:
            acc[hi, area, sample_slot] += 1
        f = flags[i]
        prev = last_flags[d] if held else 0
        new = f & ~prev
        for b in range(n_bits):
            if inside and (new >> b) & 1:
                acc[hi, area, sample_slot + 1 + b] += 1
        if run_cat >= 0:
            if c == run_cat:
                if not (held and last_cat[d] == run_cat and run_start[d] != NO_TS):
                    run_start[d] = t
                rs = run_start[d]
                if inside and t - rs >= run_ms and lt - rs < run_ms and held:
                    acc[hi, area, run_slot] += 1
            else:
                run_start[d] = NO_TS
        last_ts[d] = t
        last_cat[d] = c
        last_flags[d] = f
        folded += 1
    return folded


SLOT_MEAN, SLOT_VAR, SLOT_COUNT, SLOT_SAME = 0, 1, 2, 3  # anomaly_update's per-slot layout
# anomaly_update's per-sensor scalars, one record per sensor (a batch touches its sensors in no
# particular order: one record is one or two cache lines where one array per field is twelve)
SENSOR_DTYPE = np.dtype(
    [
        ("last_ts", "<i8"), ("count", "<i8"), ("last_val", "<f8"), ("flat_since", "<i8"),
        ("last_slot", "<i8"), ("start_ts", "<i8"), ("level", "<f8"), ("var", "<f8"),
        ("fvar", "<f8"), ("surprise", "<f8"), ("same_rate", "<f8"), ("down_at", "<i8"),
    ]
)  # fmt: skip


@njit(cache=True, nogil=True)
def anomaly_update(  # type: ignore[no-untyped-def]  # noqa: PLR0912, PLR0915 (one loop: numba speed)
    dev,
    ts,
    val,
    slot,
    order,
    params,
    carry,
    sensors,
    slots,
    score,
    cause,
):
    """Score readings (visited in ``order``, ascending per device), then learn from them.

    The detector of docs/alerts.md ("The anomaly detector"). ``params`` is a float64 array:
    warmup, slot_warmup, level_memory, slot_memory, memory, clip, floor, rel_floor, eps,
    fast_alpha, flat_log10, noise_ratio, z_ref, season_warmup_ms, reseed slot (-1: none)
    (``stream.state.SensorState.params``).

    Per sensor the baseline of a reading in *slot* ``s`` is ``level + slots[s, MEAN]``. With
    ``carry`` (daily seasonality: ``s`` is the hour of the day) ``level`` follows the sensor's
    slow changes (weather) over ``level_memory`` readings and the slots learn the daily shape; a
    slot seen for the first time starts from the previous reading's slot (neighbouring hours are
    alike), and the spread is one ``var`` over all slots. Without ``carry`` (``s`` is the
    reported state, or a single slot) the level stays 0, each slot is its own baseline and
    spread (a lamp's power is steadier off than on), learnt from the slot's ``slot_warmup``-th
    reading on. The spread never goes below the field's resolution ``floor`` nor ``rel_floor``
    times the baseline. A reading's score is computed *before* it updates any of that: ``max(|x
    - baseline| / sd, flat, noise)`` where ``flat`` grows with the improbability of the current
    run of repeated values (how often the sensor repeats a value: ``same_rate`` per sensor with
    ``carry``, ``slots[s, SAME]`` per state without; ``z_ref`` at ``10**-flat_log10``) and
    ``noise`` with the short-term spread ``fvar`` of the steps between consecutive readings in
    one slot (``z_ref`` at ``noise_ratio`` times the usual spread). ``cause`` says which was
    largest (1 value, 2 flat, 3 noise). No score (NaN, cause 0) during the first ``warmup``
    readings, and with ``carry`` before a whole day (``season_warmup_ms`` from ``start_ts``) has
    shown every hour once. With ``reseed`` that slot, entered from another one, starts again
    from the entering reading, unscored (a connector's power is set by each new car; what is
    judged is the session). Learning clips residuals at ``clip`` standard deviations, and an
    outlier (its value or its flat statistic above ``clip``) teaches the level, its slot and the
    spreads at the long memories' rates (``1 / level_memory``, ``1 / slot_memory``, ``1 /
    memory``) even where the slot is young, so an anomaly barely moves the baseline while a
    lasting shift is learnt over the memory. The spread a reading is judged against includes the
    uncertainty of its slot's baseline (``× (1 + 1 / readings learnt)``). Late and duplicate
    readings are skipped (NaN); a reading without the value (NaN) or without a slot (< 0) only
    moves the last time. Returns the number of readings whose value was applied.
    """
    warmup = params[0]
    slot_warmup = params[1]
    level_memory = params[2]
    slot_memory = params[3]
    memory = params[4]
    clip = params[5]
    floor2 = params[6] * params[6]
    rel_floor = params[7]
    eps = params[8]
    fast_alpha = params[9]
    flat_log10 = params[10]
    noise_ratio = params[11]
    z_ref = params[12]
    season_warmup_ms = params[13]
    reseed = params[14]  # the slot that restarts when entered, -1 none
    applied = 0
    for r in range(order.shape[0]):
        i = order[r]
        d = dev[i]
        score[i] = np.nan
        cause[i] = 0
        if d < 0:
            continue
        sv = sensors[d]  # the sensor's scalars: one record (SENSOR_DTYPE), one or two cache lines
        t = ts[i]
        if sv.last_ts != NO_TS and t <= sv.last_ts:
            continue
        x = val[i]
        s = slot[i]
        if np.isnan(x) or s < 0:  # the sensor reported, without this value: alive, nothing to learn
            sv.last_ts = t
            continue
        n = sv.count
        if slots[d, s, SLOT_COUNT] == 0.0 and carry and n > 0:
            ps = sv.last_slot
            slots[d, s, SLOT_MEAN] = slots[d, ps, SLOT_MEAN]
            slots[d, s, SLOT_VAR] = slots[d, ps, SLOT_VAR]
            slots[d, s, SLOT_SAME] = slots[d, ps, SLOT_SAME]
            slots[d, s, SLOT_COUNT] = 1.0
        repeat = n > 0 and abs(x - sv.last_val) <= eps
        entered = s == reseed and n > 0 and s != sv.last_slot and slots[d, s, SLOT_COUNT] > 0.0
        if entered:
            slots[d, s, SLOT_MEAN] = x
            sv.surprise = 0.0
        if not carry and n > 0 and s != sv.last_slot:
            # the short-term spread restarts from the new state's usual one
            rel = rel_floor * x
            sv.fvar = max(np.float64(slots[d, s, SLOT_VAR]), floor2, rel * rel)
        if slots[d, s, SLOT_COUNT] > 0.0 and not entered:
            mean = np.float64(slots[d, s, SLOT_MEAN])
            slot_var = np.float64(slots[d, s, SLOT_VAR])
            same = np.float64(sv.same_rate if carry else slots[d, s, SLOT_SAME])
            pred = sv.level + mean
            resid = x - pred
            rel = rel_floor * pred
            # the slot's baseline is itself an estimate from its readings so far: the spread a
            # reading is judged against includes that uncertainty (predictive variance)
            v = max(sv.var if carry else slot_var, floor2, rel * rel) * (
                1.0 + 1.0 / np.float64(slots[d, s, SLOT_COUNT])
            )
            sd = np.sqrt(v)
            # --- score, before learning ---
            if repeat:
                sv.surprise -= np.log10(min(max(same, 0.01), 0.99))
            else:
                sv.surprise = 0.0
            # the short-term spread: of the step from the last reading (half its square: a
            # step of two independent readings has twice their variance), blind to the level
            # (a shift or a ramp moves it once or slowly), not to a burst of noise
            step = x - sv.last_val if n > 0 and (carry or s == sv.last_slot) else 0.0
            fv = (1.0 - fast_alpha) * sv.fvar + fast_alpha * 0.5 * step * step
            k = np.float64(slots[d, s, SLOT_COUNT]) + 1.0
            if carry:
                judged = n >= warmup and t - sv.start_ts >= season_warmup_ms
            else:
                judged = n >= warmup and k > slot_warmup
            if judged:
                best = abs(resid) / sd
                c = 1
                zf = sv.surprise / flat_log10 * z_ref
                if zf > best:
                    best = zf
                    c = 2
                zn = np.sqrt(fv / v) / noise_ratio * z_ref
                if zn > best:
                    best = zn
                    c = 3
                score[i] = best
                cause[i] = c
                lim = clip * sd
                rc = min(max(resid, -lim), lim)
                outlier = abs(resid) > lim or zf > clip  # the baseline's own statistics
            else:
                rc = resid
                outlier = False
            # --- learn ---
            a_v = max(1.0 / (n + 1.0), 1.0 / memory)
            sv.var += (1.0 / memory if outlier else a_v) * (rc * rc - sv.var)
            sv.fvar = fv
            # An outlier teaches the baselines at their long memory's rate only, however young
            # they are: a lasting change is learnt, an anomaly does not become the baseline.
            if carry:
                a_l = 1.0 / level_memory if outlier else max(1.0 / (n + 1.0), 1.0 / level_memory)
                sv.level += a_l * rc
                sv.same_rate = same + a_v * ((1.0 if repeat else 0.0) - same)
            a_s = 1.0 / slot_memory if outlier else max(1.0 / k, 1.0 / slot_memory)
            slots[d, s, SLOT_MEAN] = mean + a_s * rc
            a_sv = 1.0 / memory if outlier else max(1.0 / k, 1.0 / memory)
            slots[d, s, SLOT_VAR] = slot_var + a_sv * (rc * rc - slot_var)
            if not carry:
                slots[d, s, SLOT_SAME] = same + a_s * ((1.0 if repeat else 0.0) - same)
            slots[d, s, SLOT_COUNT] = min(k, 1e9)
        elif not entered:
            if carry:  # the sensor's first reading: the level starts here, the shape at 0
                sv.level = x
                slots[d, s, SLOT_MEAN] = 0.0
            else:
                slots[d, s, SLOT_MEAN] = x
            slots[d, s, SLOT_VAR] = 0.0
            slots[d, s, SLOT_SAME] = 0.5
            slots[d, s, SLOT_COUNT] = 1.0
            if n == 0:
                sv.var = 0.0
                sv.fvar = 0.0
                sv.surprise = 0.0
                sv.same_rate = 0.5
        if n == 0:
            sv.start_ts = t
        if n == 0 or not repeat:
            sv.flat_since = t
        sv.last_slot = s
        sv.last_val = x
        sv.last_ts = t
        sv.count = n + 1
        applied += 1
    return applied


@njit(cache=True, nogil=True)
def offline_mask(last_ts, now_ms, max_silence_ms, active):  # type: ignore[no-untyped-def]
    """1 where an in-service sensor has been silent longer than ``max_silence_ms`` (or never)."""
    n = last_ts.shape[0]
    out = np.zeros(n, dtype=np.int8)
    for d in range(n):
        if active[d] and (last_ts[d] == NO_TS or now_ms - last_ts[d] > max_silence_ms):
            out[d] = 1
    return out


@njit(cache=True, nogil=True)
def nearest_distance_km(cell_lat, cell_lon, site_lat, site_lon):  # type: ignore[no-untyped-def]
    """Distance (km, equirectangular) from each grid cell to its nearest site; inf with no site."""
    n = cell_lat.shape[0]
    out = np.full(n, np.inf)
    k_lat = 111.32
    for c in range(n):
        k_lon = 111.32 * np.cos(np.radians(cell_lat[c]))
        best = np.inf
        for s in range(site_lat.shape[0]):
            dy = (site_lat[s] - cell_lat[c]) * k_lat
            dx = (site_lon[s] - cell_lon[c]) * k_lon
            dist = dx * dx + dy * dy
            best = min(best, dist)
        out[c] = np.sqrt(best)
    return out


@njit(cache=True, nogil=True)
def nearest_site(cell_lat, cell_lon, site_lat, site_lon):  # type: ignore[no-untyped-def]
    """Index of the nearest site (equirectangular distance) for each cell; -1 with no site."""
    n = cell_lat.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    for c in range(n):
        k_lon = np.cos(np.radians(cell_lat[c]))
        best = np.inf
        for s in range(site_lat.shape[0]):
            dy = site_lat[s] - cell_lat[c]
            dx = (site_lon[s] - cell_lon[c]) * k_lon
            dist = dx * dx + dy * dy
            if dist < best:
                best = dist
                out[c] = s
    return out
