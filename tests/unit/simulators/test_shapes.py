"""Anomaly shapes (simulators/shapes.py): planned after the learning day, on free devices, into
the detector's field, and recorded in the ground truth with the readings they reached."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from cityops import catalog
from cityops.catalog import Kind
from simulators import scenario
from simulators.engine import Simulation
from simulators.faults import FaultType
from simulators.shapes import SHAPES

START = datetime(2025, 12, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def shaped() -> tuple[Simulation, dict[str, list[tuple[int, dict[str, object]]]]]:
    spec = scenario.ScenarioSpec(
        name="shapes", mains_lamps=60, solar_lamps=60, manholes=0, heating=120, chargers=80
    )
    sim = Simulation(
        scenario.generate(spec, seed=5),
        start=START,
        duration=timedelta(days=2),
        fault_rate=0.1,
        shape_rate=0.4,
        shape_after=timedelta(days=1),
    )
    by_device: dict[str, list[tuple[int, dict[str, object]]]] = {}
    for out in sim.ticks():
        for r in out.readings:
            ts = r.ts if isinstance(r.ts, int) else int(
                datetime.fromisoformat(r.ts.replace("Z", "+00:00")).timestamp() * 1000
            )  # fmt: skip
            by_device.setdefault(r.device_id, []).append((ts, r.values))
    return sim, by_device


def test_every_shape_on_every_kind_it_makes_sense_for(shaped: tuple[Simulation, dict]) -> None:  # type: ignore[type-arg]
    sim, _ = shaped
    planned = Counter((f.kind, f.fault_type) for f in sim.faults if "shape" in f.params)
    for ftype, spec in SHAPES.items():
        for kind in spec.kinds:
            assert planned[(kind, ftype)] > 0, (kind, ftype)
    # shapes come after the learning day, one fault per device
    shapes = [f for f in sim.faults if "shape" in f.params]
    assert min(f.start_ms for f in shapes) >= sim.start_ms + 86_400_000
    devices = [d for f in sim.faults for d in f.device_ids]
    assert len(devices) == len(set(devices))


def test_shapes_reach_the_readings_they_claim(shaped: tuple[Simulation, dict]) -> None:  # type: ignore[type-arg]
    sim, by_device = shaped
    for f in (f for f in sim.faults if "shape" in f.params):
        field = catalog.ANOMALY_FIELD[f.kind]
        assert f.params["field"] == field
        rows = [v for t, v in by_device.get(f.device_ids[0], []) if f.start_ms <= t < f.end_ms]
        values = [v[field] for v in rows if field in v]
        readings = int(f.params.get("readings", 0))
        if f.fault_type is FaultType.SPIKE:
            assert readings == min(len(values), f.params["spike_readings"])
        elif f.fault_type is FaultType.FLATLINE:
            assert readings == len(rows)
            assert len(set(values)) <= 1
        else:
            assert readings == len(values)
        if f.fault_type is FaultType.STUCK:
            assert len(set(values)) <= 1
        spec = catalog.KINDS[f.kind].reading_field(field)
        assert spec is not None
        for x in values:
            assert spec.minimum is None or x >= spec.minimum
            assert spec.maximum is None or x <= spec.maximum


def test_a_lamp_step_shows_in_its_power(shaped: tuple[Simulation, dict]) -> None:  # type: ignore[type-arg]
    sim, by_device = shaped
    steps = [f for f in sim.faults if f.kind is Kind.STREETLIGHT and f.fault_type is FaultType.STEP]
    assert steps
    for f in steps:
        before = [
            v["power_w"]
            for t, v in by_device[f.device_ids[0]]
            if t < f.start_ms and v["power_state"] == "off"
        ]
        during = [
            v["power_w"]
            for t, v in by_device[f.device_ids[0]]
            if f.start_ms <= t < f.end_ms and v["power_state"] == "off"
        ]
        if before and during:
            assert min(during) >= max(before) + 0.3 * float(f.params["magnitude"])
