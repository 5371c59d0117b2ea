"""The process clock (cityops.clock): wall time by default, simulated time in the demo."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from cityops import clock
from cityops.batch import CommittedBatch, KindBatch
from cityops.catalog import Kind
from cityops.cli.pipeline import ClockDriver, ProcessClock

START = datetime(2026, 12, 1, 10, tzinfo=UTC)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.fixture
def sim() -> Iterator[clock.SimulatedClock]:
    c = clock.SimulatedClock(START)
    previous = clock.install(c)
    try:
        yield c
    finally:
        clock.install(previous)


def test_wall_clock_by_default() -> None:
    assert isinstance(clock.current(), clock.WallClock)
    before = datetime.now(UTC)
    now = clock.now()
    assert now.tzinfo is not None
    assert before - timedelta(seconds=5) <= now <= datetime.now(UTC)
    assert abs(clock.now_ms() - ms(datetime.now(UTC))) < 5000


def test_simulated_time_waits_for_the_data(sim: clock.SimulatedClock) -> None:
    assert clock.now() == START  # before any data
    sim.release(ms(START + timedelta(minutes=10)))
    assert clock.now() == START  # sent, but nothing committed yet: time does not run ahead
    sim.observe(ms(START + timedelta(minutes=4)))
    assert clock.now() == START + timedelta(minutes=4)
    assert clock.now_ms() == ms(START + timedelta(minutes=4))
    assert clock.seconds() == pytest.approx(ms(START + timedelta(minutes=4)) / 1000)
    sim.observe(ms(START + timedelta(minutes=2)))  # an older batch: never backwards
    assert clock.now() == START + timedelta(minutes=4)
    # A device with a clock an hour fast cannot move time past what the simulator sent.
    sim.observe(ms(START + timedelta(hours=1)))
    assert clock.now() == START + timedelta(minutes=10)
    assert ProcessClock().now() == START + timedelta(minutes=10)


def test_the_pipeline_moves_simulated_time_with_each_committed_batch(
    sim: clock.SimulatedClock,
) -> None:
    sim.release(ms(START + timedelta(hours=1)))
    t = ms(START + timedelta(minutes=7))
    kb = KindBatch(
        kind=Kind.MANHOLE,
        device_ids=np.array(["MH-1", "MH-2"], dtype=object),
        ts_ms=np.array([t - 60_000, t], dtype=np.int64),
        received_ms=np.array([t, t], dtype=np.int64),
        columns={},
    )
    driver = ClockDriver(sim)
    driver.on_batch(CommittedBatch(seq=1, committed_at=START, readings={}))  # nothing: no move
    assert clock.now() == START
    driver.on_batch(CommittedBatch(seq=2, committed_at=START, readings={Kind.MANHOLE: kb}))
    assert clock.now() == START + timedelta(minutes=7)


def test_a_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        clock.SimulatedClock(datetime(2026, 12, 1))  # noqa: DTZ001
