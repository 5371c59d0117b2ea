"""The numba kernels equal their reference implementations on random inputs and edge cases."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import kernels, reference

HOUR = kernels.HOUR_MS
MIN = 60_000
# Two hours before a month boundary in UTC (local Asia/Shanghai midnight of 1 Feb is 16:00 UTC).
BASE = int(datetime(2026, 1, 31, 14, tzinfo=UTC).timestamp() * 1000)
H0 = BASE // HOUR
N_HOURS = 14
N_AREAS = 2
# Group 0 has two windows, one across UTC midnight and the month boundary; group 1 one window.
WINDOWS = [
    np.array([[BASE + 30 * MIN, BASE + 3 * HOUR], [BASE + 4 * HOUR + 7, BASE + 12 * HOUR]]),
    np.array([[BASE + 2 * HOUR, BASE + 11 * HOUR + 30 * MIN]]),
]
POINTS = [np.array([BASE + 90 * MIN, BASE + 5 * HOUR + 7]), np.array([BASE + 3 * HOUR])]
# Instants that sit exactly on window edges, hour boundaries and check instants.
EDGES = sorted(
    {int(x) for w in WINDOWS for x in w.ravel()}
    | {int(x) for p in POINTS for x in p}
    | {BASE + k * HOUR for k in range(N_HOURS + 1)}
)


def run_kernel(
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
    chunks: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Run the kernel over the readings, optionally in several batches (indices per batch)."""
    n_dev = len(dev_area)
    win_ptr, win_on, win_off = kernels.pack_windows(WINDOWS)
    pt_ptr, pts = kernels.pack_points(POINTS)
    last_ts = np.full(n_dev, kernels.NO_TS, dtype=np.int64)
    last_cat = np.zeros(n_dev, dtype=np.int16)
    last_flags = np.zeros(n_dev, dtype=np.int8)
    run_start = np.full(n_dev, kernels.NO_TS, dtype=np.int64)
    acc = np.zeros((N_HOURS, N_AREAS, kernels.n_slots(n_cat, n_bits)), dtype=np.int64)
    late = np.zeros(len(ts), dtype=np.int8)
    folded = 0
    for idx in chunks if chunks is not None else [np.arange(len(ts))]:
        order = idx[np.lexsort((ts[idx], dev[idx]))]
        folded += kernels.accumulate(
            dev, ts, cat, flags, order, hold_ms, n_cat, n_bits, run_cat, run_ms,
            dev_area, dev_group, dev_active, win_ptr, win_on, win_off, pt_ptr, pts,
            last_ts, last_cat, last_flags, run_start, acc, H0, late,
        )  # fmt: skip
    return acc, int(late.sum())


def run_reference(dev, ts, cat, flags, **kw):  # type: ignore[no-untyped-def]
    """The reference accumulator on the same inputs."""
    return reference.accumulate(
        dev,
        ts,
        cat,
        flags,
        windows=[[tuple(map(int, r)) for r in w] for w in WINDOWS],
        points=[[int(p) for p in ps] for ps in POINTS],
        h0=H0,
        n_hours=N_HOURS,
        n_areas=N_AREAS,
        **kw,
    )


@st.composite
def readings(draw: st.DrawFn) -> dict[str, object]:
    """Random devices and readings; timestamps often on edges, duplicated or out of order."""
    n_dev = draw(st.integers(1, 5))
    n = draw(st.integers(0, 40))
    any_ts = st.integers(BASE - 2 * HOUR, BASE + (N_HOURS + 1) * HOUR)
    edge_ts = st.sampled_from(EDGES)
    ts = draw(st.lists(st.one_of(any_ts, edge_ts), min_size=n, max_size=n))
    n_cat = draw(st.integers(1, 3))
    return {
        "dev": np.array(draw(st.lists(st.integers(-1, n_dev - 1), min_size=n, max_size=n)), "i8"),
        "ts": np.array(ts, dtype=np.int64),
        "cat": np.array(
            draw(st.lists(st.integers(-1, n_cat - 1), min_size=n, max_size=n)), dtype=np.int16
        ),
        "flags": np.array(draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)), np.int8),
        "hold_ms": draw(st.sampled_from([1, 20 * MIN, HOUR, 3 * HOUR + 1])),
        "n_cat": n_cat,
        "n_bits": draw(st.integers(0, 3)),
        "run_cat": draw(st.integers(-1, n_cat - 1)),
        "run_ms": draw(st.sampled_from([1, 30 * MIN, 2 * HOUR])),
        "dev_area": np.array(draw(st.lists(st.integers(0, 1), min_size=n_dev, max_size=n_dev))),
        "dev_group": np.array(draw(st.lists(st.integers(0, 1), min_size=n_dev, max_size=n_dev))),
        "dev_active": np.array(
            draw(st.lists(st.booleans(), min_size=n_dev, max_size=n_dev)), dtype=np.bool_
        ),
    }


@settings(max_examples=150, deadline=None)
@given(readings())
def test_accumulate_equals_reference(case: dict[str, object]) -> None:
    acc, late = run_kernel(**case)  # type: ignore[arg-type]
    assert late == 0
    np.testing.assert_array_equal(acc, run_reference(**case))


@settings(max_examples=100, deadline=None)
@given(readings(), st.data())
def test_batches_in_time_order_equal_one_batch(
    case: dict[str, object], data: st.DataObject
) -> None:
    """Live mode: the readings arriving in several batches give the same sums as all at once."""
    ts = case["ts"]
    assert isinstance(ts, np.ndarray)
    by_time = np.argsort(ts, kind="stable")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ts)), max_size=4)))
    chunks = list(np.split(by_time, cuts))
    chunks = [data.draw(st.permutations(list(c))) for c in chunks]
    split, late = run_kernel(**case, chunks=[np.array(c, dtype=np.int64) for c in chunks])  # type: ignore[arg-type]
    whole, _ = run_kernel(**case)  # type: ignore[arg-type]
    # Only readings at an already-seen timestamp of a device are dropped (duplicates); the
    # stable sort and the batch split can keep a different one of equal-time duplicates.
    dev = case["dev"]
    assert isinstance(dev, np.ndarray)
    if len({(int(d), int(t)) for d, t in zip(dev, ts, strict=True)}) == len(ts):
        assert late == 0
        np.testing.assert_array_equal(split, whole)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 40)), max_size=400),
    st.sampled_from([7, 1000]),
    st.sampled_from([1, 60_000, 2**28]),  # 2**28 ms steps: spans past the packed key's 32 bits
)
def test_device_time_order_is_a_stable_lexsort(
    pairs: list[tuple[int, int]], n_dev: int, step: int
) -> None:
    """Counting sort (large batches), packed key (small ones) and lexsort (long spans) agree."""
    dev = np.array([p[0] for p in pairs], dtype=np.int64)
    ts = 1_764_547_200_000 + np.array([p[1] for p in pairs], dtype=np.int64) * step
    expect = np.lexsort((ts, dev))
    expect = expect[dev[expect] >= 0]
    np.testing.assert_array_equal(kernels.device_time_order(dev, ts, n_dev), expect)


def test_empty_and_single_sample() -> None:
    common = {
        "hold_ms": 20 * MIN,
        "n_cat": 2,
        "n_bits": 1,
        "run_cat": -1,
        "run_ms": HOUR,
        "dev_area": np.array([1]),
        "dev_group": np.array([0]),
        "dev_active": np.array([True]),
    }
    empty = np.array([], dtype=np.int64)
    acc, _ = run_kernel(empty, empty, empty.astype(np.int16), empty.astype(np.int8), **common)  # type: ignore[arg-type]
    assert not acc.any()
    one = np.array([BASE + 2 * HOUR + 50 * MIN])
    acc, _ = run_kernel(
        np.array([0]), one, np.array([1], np.int16), np.array([1], np.int8), **common
    )  # type: ignore[arg-type]
    # Held 20 min: 10 min in hour 2, 10 min in hour 3; the window ends at BASE + 3h.
    assert acc[2, 1, 1] == 10 * MIN
    assert acc[3, 1, 1] == 0
    assert acc[2, 1, 3] == 10 * MIN
    assert acc[3, 1, 3] == 10 * MIN
    assert acc[2, 1, 6] == 1
    assert acc[2, 1, 7] == 1


def test_late_reading_is_flagged_not_folded() -> None:
    common = {
        "hold_ms": 20 * MIN,
        "n_cat": 1,
        "n_bits": 0,
        "run_cat": -1,
        "run_ms": HOUR,
        "dev_area": np.array([0]),
        "dev_group": np.array([0]),
        "dev_active": np.array([True]),
    }
    ts = np.array([BASE + HOUR, BASE + HOUR - 5 * MIN])
    acc, late = run_kernel(
        np.array([0, 0]),
        ts,
        np.zeros(2, np.int16),
        np.zeros(2, np.int8),
        chunks=[np.array([0]), np.array([1])],
        **common,  # type: ignore[arg-type]
    )
    assert late == 1
    assert acc[:, 0, 1].sum() == 20 * MIN


@settings(max_examples=30, deadline=None)
@given(readings())
def test_lighting_pandas_equals_kernel(case: dict[str, object]) -> None:
    """The pandas contender of the benchmark computes the same lit lamp-ms as the kernel."""
    dev, ts = case["dev"], case["ts"]
    assert isinstance(dev, np.ndarray)
    assert isinstance(ts, np.ndarray)
    n_dev = len(case["dev_area"])  # type: ignore[arg-type]
    lit = (np.asarray(case["cat"]) > 0).astype(np.int16)
    kw = {
        **case,
        "cat": lit,
        "n_cat": 2,
        "dev_group": np.zeros(n_dev, np.int64),
        "dev_active": np.ones(n_dev, np.bool_),
    }
    acc, _ = run_kernel(**kw)  # type: ignore[arg-type]
    df = reference.lighting_minutes_pandas(
        dev,
        ts,
        lit,
        np.asarray(case["dev_area"]),
        WINDOWS[0],
        int(case["hold_ms"]),  # type: ignore[call-overload]
    )
    got = np.zeros((N_HOURS, N_AREAS), dtype=np.int64)
    for area, hour, ms in df.itertuples(index=False):
        if H0 <= hour < H0 + N_HOURS:
            got[hour - H0, area] += ms
    np.testing.assert_array_equal(got, acc[:, :, 1])


def test_nearest_distance() -> None:
    d = kernels.nearest_distance_km(
        np.array([39.9, 40.0]), np.array([116.4, 116.4]), np.array([39.9]), np.array([116.4])
    )
    assert d[0] == 0.0
    assert d[1] == pytest.approx(11.132, rel=1e-3)
    none = kernels.nearest_distance_km(
        np.array([39.9]), np.array([116.4]), np.empty(0), np.empty(0)
    )
    assert np.isinf(none[0])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(39.8, 40.1), st.floats(116.35, 116.65)), min_size=1, max_size=20),
    st.lists(st.tuples(st.floats(39.8, 40.1), st.floats(116.35, 116.65)), max_size=8),
)
def test_nearest_site_equals_brute_force(
    cells: list[tuple[float, float]], sites: list[tuple[float, float]]
) -> None:
    import math

    c_lat = np.array([c[0] for c in cells])
    c_lon = np.array([c[1] for c in cells])
    s_lat = np.array([s[0] for s in sites], dtype=np.float64)
    s_lon = np.array([s[1] for s in sites], dtype=np.float64)
    got_i = kernels.nearest_site(c_lat, c_lon, s_lat, s_lon)
    got_d = kernels.nearest_distance_km(c_lat, c_lon, s_lat, s_lon)
    for k, (la, lo) in enumerate(cells):
        d = [
            math.hypot((sl - la) * 111.32, (so - lo) * 111.32 * math.cos(math.radians(la)))
            for sl, so in sites
        ]
        if not d:
            assert got_i[k] == -1
            assert math.isinf(got_d[k])
            continue
        assert got_d[k] == pytest.approx(min(d), rel=1e-9, abs=1e-9)
        assert d[got_i[k]] == pytest.approx(min(d), rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(BASE - 2 * HOUR, BASE + (N_HOURS + 2) * HOUR), st.integers(-1, 2)),
        max_size=60,
    )
)
def test_complaint_counts_equal_reference(events: list[tuple[int, int]]) -> None:
    from stream import complaints

    ts = np.array([e[0] for e in events], dtype=np.int64)
    area = np.array([e[1] for e in events], dtype=np.int64)
    acc = np.zeros((N_HOURS, 3), dtype=np.int64)
    complaints.count_by_hour_area(ts, area, H0, acc)
    np.testing.assert_array_equal(
        acc, complaints.count_reference(list(ts), list(area), H0, N_HOURS, 3)
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 99)), max_size=400),
    st.sampled_from([4, 100_000]),
)
def test_device_time_sort_returns_sorted_columns(pairs: list[tuple[int, int]], n_dev: int) -> None:
    dev = np.array([p[0] for p in pairs], dtype=np.int64)
    ts = np.array([p[1] for p in pairs], dtype=np.int64)
    order, dev_s, ts_s = kernels.device_time_sort(dev, ts, n_dev)
    np.testing.assert_array_equal(dev_s, dev[order])
    np.testing.assert_array_equal(ts_s, ts[order])
