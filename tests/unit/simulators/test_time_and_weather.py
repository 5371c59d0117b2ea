"""Simulated time, pacing, durations on the command line, and the weather model."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from cityops.cli.simulate_cmd import parse_duration, parse_start
from cityops.errors import ConfigError
from simulators import runner, scenario
from simulators.clock import from_ms, rfc3339, to_ms
from simulators.engine import Simulation
from simulators.weather import Weather, local_hour


def test_durations_and_starts() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1.5d") == timedelta(hours=36)
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("2 hours")
    assert parse_start("2025-12-10T08:00:00+08:00") == datetime(2025, 12, 10, tzinfo=UTC)
    with pytest.raises(ConfigError, match="time zone"):
        parse_start("2025-12-10T08:00:00")


def test_clock_conversions() -> None:
    ts = datetime(2025, 12, 10, 1, 2, 3, 456_000, tzinfo=UTC)
    assert from_ms(to_ms(ts)) == ts
    assert rfc3339(to_ms(ts)) == "2025-12-10T01:02:03.456Z"
    assert local_hour(to_ms(datetime(2025, 12, 10, 16, tzinfo=UTC))) == 0.0
    with pytest.raises(ValueError, match="naive"):
        to_ms(datetime(2025, 12, 10))  # noqa: DTZ001 -- the point of the test


def test_seasons_cold_snaps_and_rain() -> None:
    w = Weather(seed=3)
    jan = [w.outdoor_c(to_ms(datetime(2026, 1, d, 6, tzinfo=UTC))) for d in range(1, 29)]
    jul = [w.outdoor_c(to_ms(datetime(2025, 7, d, 6, tzinfo=UTC))) for d in range(1, 29)]
    assert max(jan) < min(jul)
    assert -20 < min(jan) < 5
    assert 20 < max(jul) < 40
    # Over a whole winter the seed yields cold snaps: some days far below the seasonal curve.
    snaps = [
        w._episodes(to_ms(datetime(2025, 12, 1, tzinfo=UTC) + timedelta(days=d)), 0, 6)
        for d in range(120)
    ]
    assert any(snaps)
    summer = w.rain_events(
        to_ms(datetime(2025, 6, 1, tzinfo=UTC)), to_ms(datetime(2025, 9, 1, tzinfo=UTC))
    )
    winter = w.rain_events(
        to_ms(datetime(2025, 12, 1, tzinfo=UTC)), to_ms(datetime(2026, 3, 1, tzinfo=UTC))
    )
    assert len(summer) > 3 * len(winter)
    assert Weather(seed=3).outdoor_c(to_ms(datetime(2026, 1, 5, tzinfo=UTC))) == w.outdoor_c(
        to_ms(datetime(2026, 1, 5, tzinfo=UTC))
    )


class _RecordingSink:
    """Records when each tick is released and what was sent after it; never sleeps."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []
        self.sent_after: list[int] = []

    def send(self, message: object) -> None:
        self.sent_after[-1] += 1

    def idle_until(self, deadline: float) -> None:
        self.deadlines.append(deadline)
        self.sent_after.append(0)


def test_speed_paces_ticks_in_simulated_time() -> None:
    spec = scenario.ScenarioSpec(
        name="one", mains_lamps=0, solar_lamps=1, manholes=1, heating=1, chargers=1
    )
    sim = Simulation(
        scenario.generate(spec, seed=1),
        start=datetime(2025, 12, 10, tzinfo=UTC),
        duration=timedelta(minutes=20),
    )
    sink = _RecordingSink()
    progress = runner.run(sim, sink, speed=1200, prefix="cityops/v1")  # type: ignore[arg-type]
    # Every tick is held back until its simulated minute is due: 60 s / 1200 = 50 ms apart.
    assert progress.tick == 20
    assert len(sink.deadlines) == 20
    gaps = [b - a for a, b in itertools.pairwise(sink.deadlines)]
    assert all(abs(g - 60 / 1200) < 1e-9 for g in gaps)
    # Messages of a tick leave only after that tick's release.
    assert sum(sink.sent_after) == progress.messages
