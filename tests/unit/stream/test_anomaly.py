"""The stream core's anomaly detector: kernel = reference, known answers for every shape.

Known-answer series are built from a healthy signal (noise at the field's scale, a daily pattern
where the field has one) with one shape injected; the detector must score the shape at or above
the shipped rules' firing level (7) and the healthy part below it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cityops.catalog import Kind
from cityops.settings import StreamSettings
from stream import kernels, reference
from stream.state import SensorState, n_slots

FIRE = 7.0
MIN = 60_000
HOUR = 3_600_000
T0 = int(datetime(2025, 12, 1, tzinfo=UTC).timestamp() * 1000)


PARAM_NAMES = (
    "warmup", "slot_warmup", "level_memory", "slot_memory", "memory", "clip", "floor",
    "rel_floor", "eps", "fast_alpha", "flat_log10", "noise_ratio", "z_ref", "season_warmup_ms",
    "reseed",
)  # fmt: skip


def _params(state: SensorState) -> dict[str, object]:
    """The kernel's parameters by name, for the reference."""
    return {
        "carry": state.detector.carry,
        **{name: float(v) for name, v in zip(PARAM_NAMES, state.params, strict=True)},
    }


@st.composite
def series(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Readings of a few sensors in random order: repeats, NaNs, duplicates and late ones."""
    n_dev = draw(st.integers(1, 4))
    n = draw(st.integers(1, 160))
    dev = np.array(draw(st.lists(st.integers(-1, n_dev - 1), min_size=n, max_size=n)))
    ts = T0 + np.array(draw(st.lists(st.integers(0, 3 * 24 * 60), min_size=n, max_size=n))) * MIN
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    val = np.round(rng.normal(20, draw(st.sampled_from([0.0, 0.05, 0.5, 3.0])), n), 1)
    val[rng.random(n) < 0.1] = np.nan
    val[rng.random(n) < 0.2] = 20.0
    slot = rng.integers(-1, 3, n)
    return {"dev": dev.astype(np.int64), "ts": ts.astype(np.int64), "val": val, "slot": slot,
            "n_dev": np.array([n_dev])}  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(series(), st.sampled_from([Kind.HEATING, Kind.STREETLIGHT, Kind.MANHOLE]))
def test_kernel_equals_reference(case: dict[str, np.ndarray], kind: Kind) -> None:
    """Same scores, same final state, in one batch or split in two."""
    dev, ts, val = case["dev"], case["ts"], case["val"]
    slot = case["slot"] if kind is Kind.STREETLIGHT else (
        (ts + 8 * HOUR) // HOUR % 24 if kind is Kind.HEATING else np.zeros_like(ts)
    )  # fmt: skip
    slot = np.where(slot >= n_slots(kind), -1, slot)
    n_dev = int(case["n_dev"][0])
    state = SensorState(kind, n_dev, StreamSettings(anomaly_warmup=3))
    half = len(ts) // 2
    order = np.lexsort((ts, dev))
    # In two batches: the second's readings older than the first's last are late, as in the
    # reference only if the split is by time; split by time so both agree.
    by_time = np.argsort(ts, kind="stable")
    first, second = np.sort(by_time[:half]), np.sort(by_time[half:])
    got = np.full(len(ts), np.nan)
    for part in (first, second):
        sc, _ = state.update(dev[part], ts[part], val[part], slots=slot[part])
        got[part] = sc
    params = _params(state)
    ref, sensors = reference.anomaly_scores(dev, ts, val, slot, **params)  # type: ignore[arg-type]
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-6, atol=1e-9, equal_nan=True)
    for d, s in sensors.items():
        assert state.count[d] == s["n"]
        assert state.var[d] == pytest.approx(s["var"], rel=1e-6, abs=1e-12)
        assert state.level[d] == pytest.approx(s["level"], rel=1e-9, abs=1e-9)
        assert state.same_rate[d] == pytest.approx(s["same"], rel=1e-9, abs=1e-12)
        for k, sl in s["slots"].items():
            mean = state.slots[d, k, kernels.SLOT_MEAN]
            assert mean == pytest.approx(float(sl["mean"]), abs=1e-5)
            assert state.slots[d, k, kernels.SLOT_COUNT] == sl["count"]
    assert order.shape == ts.shape


def _healthy_room(days: float, every_min: int = 20, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A heated room: 21 °C, a 0.4 °C daily swing (warmest 20:00 local), 0.1 °C noise, 0.1 steps."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(0, int(days * 24 * 60), every_min, dtype=np.int64) * MIN
    local_h = ((ts + 8 * HOUR) % (24 * HOUR)) / HOUR
    val = 21 + 0.4 * np.cos(2 * np.pi * (local_h - 20) / 24) + rng.normal(0, 0.1, len(ts))
    return ts, np.round(val, 1)


def _scores(kind: Kind, ts: np.ndarray, val: np.ndarray, slots: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    state = SensorState(kind, 1, StreamSettings())
    return state.update(np.zeros(len(ts), np.int64), ts, val, slots=slots)


@pytest.mark.parametrize(
    ("shape", "expect_cause"),
    [
        ("spike", {1}),
        ("step", {1, 3}),
        ("drift", {1, 3}),  # a ramp also raises the short-term spread around the baseline
        ("flatline", {2}),
        ("stuck", {1, 2, 3}),
        ("noisy", {1, 3}),
    ],
)
def test_every_shape_scores_above_the_rule_and_healthy_below(
    shape: str, expect_cause: set[int]
) -> None:
    ts, val = _healthy_room(4)
    start = len(ts) - 36  # the last 12 hours
    v = val.copy()
    if shape == "spike":
        v[start] += 6.0
    elif shape == "step":
        v[start:] += 4.0
    elif shape == "drift":
        v[start:] += np.linspace(0, 6.0, len(ts) - start)
    elif shape == "flatline":
        v[start:] = v[start]
    elif shape == "stuck":
        v[start:] = 26.0
    else:
        v[start:] += np.random.default_rng(5).normal(0, 3.0, len(ts) - start)
    score, cause = _scores(Kind.HEATING, ts, v)
    healthy = score[:start]
    assert np.nanmax(healthy) < FIRE
    assert np.nanmax(score[start:]) >= FIRE
    first = start + int(np.argmax(score[start:] >= FIRE))
    assert int(cause[first]) in expect_cause


def test_constant_series_never_scores_infinity() -> None:
    ts = T0 + np.arange(200, dtype=np.int64) * 10 * MIN
    score, _ = _scores(Kind.MANHOLE, ts, np.full(200, 12.0))
    assert np.isfinite(score[~np.isnan(score)]).all()
    # a constant series scores the improbability of its run only if it used to vary: never here
    assert np.nanmax(score) < FIRE
    # one resolution step off a noise-free series is a score of about 1, not infinity (the
    # spread includes the uncertainty of a baseline learnt from 200 readings: x (1 + 1/200))
    values = np.append(np.full(200, 12.0), 12.1)
    score2, _ = _scores(Kind.MANHOLE, np.append(ts, ts[-1] + MIN), values)
    assert score2[-1] == pytest.approx(1.0 / np.sqrt(1 + 1 / 200))


def test_no_score_during_warm_up() -> None:
    """A seasonal field is judged once a whole day has shown every hour (25 h); a state-slot
    field after ``anomaly_warmup`` readings and 8 of the slot's own."""
    ts, val = _healthy_room(2)
    score, cause = _scores(Kind.HEATING, ts, val)
    young = ts - ts[0] < 25 * HOUR
    assert np.isnan(score[young]).all()
    assert (cause[young] == 0).all()
    assert not np.isnan(score[~young]).any()
    ts2 = T0 + np.arange(40, dtype=np.int64) * 10 * MIN
    score2, _ = _scores(Kind.MANHOLE, ts2, np.full(40, 12.0))
    warm = StreamSettings().anomaly_warmup
    assert np.isnan(score2[:warm]).all()
    assert not np.isnan(score2[warm:]).any()


def test_daily_pattern_is_learnt_and_a_break_of_it_is_not() -> None:
    """A room whose swing is 3 °C a day (night set-back) raises nothing once learnt; a night
    without the set-back does."""
    rng = np.random.default_rng(2)
    ts = T0 + np.arange(0, 8 * 24 * 60, 20, dtype=np.int64) * MIN
    local_h = ((ts + 8 * HOUR) % (24 * HOUR)) / HOUR
    night = (local_h >= 23) | (local_h < 5)
    val = np.round(np.where(night, 18.5, 21.5) + rng.normal(0, 0.1, len(ts)), 1)
    score, _ = _scores(Kind.HEATING, ts, val)
    learnt = ts >= T0 + 3 * 24 * HOUR
    assert np.nanmax(score[learnt]) < FIRE
    # Same series, but the last night keeps the day temperature: a break of the pattern.
    broken = val.copy()
    last_night = night & (ts >= T0 + 7 * 24 * HOUR)
    broken[last_night] = np.round(21.5 + rng.normal(0, 0.1, int(last_night.sum())), 1)
    score_b, _ = _scores(Kind.HEATING, ts, broken)
    assert np.nanmax(score_b[last_night]) >= FIRE
    # without seasonality (one slot) the regular pattern itself would be scored: the swing is
    # 30 σ of the noise; with the hour slots it is not.
    assert np.nanmax(score[learnt & night]) < FIRE


def test_lamp_power_is_judged_against_its_state() -> None:
    """Standby by day and full power at night are both normal; full power by day is not."""
    rng = np.random.default_rng(4)
    ts = T0 + np.arange(0, 4 * 24 * 60, 10, dtype=np.int64) * MIN
    local_h = ((ts + 8 * HOUR) % (24 * HOUR)) / HOUR
    lit = (local_h >= 17) | (local_h < 7)
    state = np.where(lit, 1, 0).astype(np.int64)  # codes of power_state: off, on, dimmed
    from cityops import catalog

    allowed = catalog.STREETLIGHT.reading_field("power_state").allowed  # type: ignore[union-attr]
    on, off = allowed.index("on"), allowed.index("off")
    state = np.where(lit, on, off).astype(np.int64)
    power = np.round(np.where(lit, 150 * rng.uniform(0.99, 1.01, len(ts)), 0.4), 1)
    score, _ = _scores(Kind.STREETLIGHT, ts, power, slots=state)
    assert np.nanmax(score) < FIRE
    power2 = power.copy()
    power2[-20:] = np.round(power2[-20:] + 60, 1)  # drawing 40 % more: a failing driver
    score2, _ = _scores(Kind.STREETLIGHT, ts, power2, slots=state)
    assert np.nanmax(score2[-20:]) >= FIRE


def test_score_is_computed_before_the_reading_updates_the_state() -> None:
    ts, val = _healthy_room(2)
    state = SensorState(Kind.HEATING, 1, StreamSettings())
    state.update(np.zeros(len(ts) - 1, np.int64), ts[:-1], val[:-1])
    slot = int(((ts[-1] + 8 * HOUR) // HOUR) % 24)
    baseline = state.level[0] + state.slots[0, slot, kernels.SLOT_MEAN]
    # the room's spread, widened by the uncertainty of the slot's baseline (its readings so far)
    sd = np.sqrt(state.var[0] * (1 + 1 / state.slots[0, slot, kernels.SLOT_COUNT]))
    score, _ = state.update(np.zeros(1, np.int64), ts[-1:], np.array([val[-1] + 10]))
    assert score[0] == pytest.approx(abs(val[-1] + 10 - baseline) / sd, rel=1e-5)


def test_late_and_duplicate_readings_are_not_scored() -> None:
    ts, val = _healthy_room(2)
    state = SensorState(Kind.HEATING, 1, StreamSettings())
    state.update(np.zeros(len(ts), np.int64), ts, val)
    late = np.array([ts[-1], ts[-5]])
    score, _ = state.update(np.zeros(2, np.int64), late, np.array([30.0, 30.0]))
    assert np.isnan(score).all()
    assert state.last_ts[0] == ts[-1]


def test_a_large_batch_is_scored_like_a_small_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gathered path (large batches) gives the same scores and state as the direct one."""
    import stream.state as state_mod

    rng = np.random.default_rng(9)
    n, n_dev = 5_000, 40
    dev = rng.integers(0, n_dev, n).astype(np.int64)
    ts = np.sort(rng.integers(0, 3 * 86_400_000, n)).astype(np.int64) + T0
    val = np.round(21 + rng.normal(0, 0.3, n), 1)
    direct = SensorState(Kind.HEATING, n_dev, StreamSettings(anomaly_warmup=5))
    s1, c1 = direct.update(dev, ts, val)
    monkeypatch.setattr(state_mod, "GATHER_FROM", 1)
    gathered = SensorState(Kind.HEATING, n_dev, StreamSettings(anomaly_warmup=5))
    s2, c2 = gathered.update(dev, ts, val)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(direct.slots, gathered.slots)
    assert not np.isnan(s1).all()
