"""Shared fixtures for the simulator unit tests: a small scenario and its decoded stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from simulators import scenario
from simulators.engine import Simulation
from simulators.messages import encode
from tests.unit.simulators.stream import Stream, decode

START = datetime(2025, 12, 10, 4, 0, tzinfo=UTC)  # noon in Beijing, heating season


@pytest.fixture(scope="session")
def small_scenario() -> scenario.Scenario:
    """The pilot scaled to about 600 devices."""
    return scenario.generate(scenario.scenario_spec("pilot", devices=600), seed=11)


@pytest.fixture(scope="session")
def faulty_run(small_scenario: scenario.Scenario) -> tuple[Simulation, Stream]:
    """Two simulated days with many faults, encoded to MQTT messages and decoded back."""
    sim = Simulation(small_scenario, start=START, duration=timedelta(days=2), fault_rate=0.3)
    messages = [m for out in sim.ticks() for m in encode(out)]
    return sim, decode(messages)
