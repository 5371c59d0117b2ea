"""Ground truth: every recorded fault's signature is found in the decoded stream."""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from simulators import faults as faults_mod
from simulators.clock import from_ms, rfc3339
from simulators.engine import Simulation
from simulators.faults import Fault, FaultType
from tests.unit.simulators.stream import Row, Stream

HOUR = 3_600_000


def _window(rows: list[Row], fault: Fault) -> list[Row]:
    return [r for r in rows if fault.start_ms <= r.ts_ms < fault.end_ms]


def _check(  # noqa: PLR0912 -- one branch per fault type
    fault: Fault, by_device: dict[str, list[Row]], stream: Stream, run_end: int
) -> None:
    t = fault.fault_type
    members = [_window(by_device.get(d, []), fault) for d in fault.device_ids]
    rows = [r for m in members for r in m]
    if t in faults_mod.SILENT_TYPES:
        assert rows == [], "an offline device must not report"
        offline = {(d, ts) for _, d, online, ts in stream.statuses if not online}
        assert all((d, fault.start_ms) in offline for d in fault.device_ids)
        if fault.end_ms < run_end:
            online = {(d, ts) for _, d, on, ts in stream.statuses if on}
            assert all((d, fault.end_ms) in online for d in fault.device_ids)
        return
    assert rows, "the fault window holds readings"
    if t is FaultType.LAMP_OUT:
        assert all(
            r.values["fault"] == "lamp_failure" and r.values["power_state"] == "off" for r in rows
        )
    elif t is FaultType.FLICKER:
        assert {r.values["power_state"] for r in rows} == {"on", "off"}
        assert all(r.values["fault"] == "driver_failure" for r in rows)
    elif t is FaultType.STUCK_ON:
        assert all(r.values["power_state"] == "on" for r in rows)
    elif t is FaultType.CABINET_OUTAGE:
        assert all(r.values["fault"] == "power_loss" for r in rows)
        assert all(r.values["voltage_v"] == 0 for r in rows)
        assert all(m for m in members), "every lamp on the cabinet reports the loss"
    elif t is FaultType.COVER_OPEN:
        assert rows[0].values["event"] == "open"
        assert rows[0].ts_ms < fault.start_ms + 60_000
        assert all(r.values["cover_open"] and r.values["tilt_deg"] > 45 for r in rows)
        if fault.end_ms < run_end:
            after = [r for r in by_device[fault.device_ids[0]] if r.ts_ms >= fault.end_ms]
            assert after[0].values["event"] == "close"
    elif t is FaultType.DISPLACED:
        assert rows[0].values["event"] == "displacement"
        assert all(r.values["displacement_mm"] >= 30 for r in rows)
    elif t is FaultType.OVERFLOW:
        assert any(r.values["overflow"] and r.values["event"] == "overflow" for r in rows)
    elif t in faults_mod.FROZEN_TYPES:
        assert len({json.dumps(r.values, sort_keys=True) for r in rows}) == 1
        assert len(rows) >= 2
    elif t in (FaultType.SUPPLY_FAILURE, FaultType.COLD_ROOM):
        for m in members:
            first = [r.values["temperature_c"] for r in m if r.ts_ms < fault.start_ms + HOUR]
            last = [r.values["temperature_c"] for r in m if r.ts_ms >= fault.end_ms - HOUR]
            assert first
            assert last
            assert min(last) < max(first) - 1.0, (first, last)
    elif t is FaultType.FAULTED:
        assert all(r.values["status"] == "Faulted" for r in rows)
        assert {r.values["error_code"] for r in rows} == {fault.params["error_code"]}
    elif t is FaultType.STUCK_FINISHING:
        statuses = [r.values["status"] for r in rows]
        assert "Finishing" in statuses
        first = statuses.index("Finishing")
        assert set(statuses[first:]) == {"Finishing"}
        assert rows[first].ts_ms < fault.start_ms + 30 * 60_000
    else:  # pragma: no cover - a new fault type needs its signature here
        raise AssertionError(f"no signature for {t}")


def test_every_fault_is_found_in_the_stream(faulty_run: tuple[Simulation, Stream]) -> None:
    sim, stream = faulty_run
    by_device = stream.by_device()
    types = Counter(f.fault_type for f in sim.faults)
    # every fault type the planner draws; the anomaly shapes have their own test (test_shapes.py)
    assert set(types) == set(faults_mod.FAULT_SPECS), f"the run should exercise every type: {types}"
    for fault in sim.faults:
        try:
            _check(fault, by_device, stream, sim.end_ms)
        except AssertionError as err:
            raise AssertionError(f"{fault.fault_id} {fault.fault_type}: {err}") from err


def test_ground_truth_file_round_trips(
    faulty_run: tuple[Simulation, Stream], tmp_path: Path
) -> None:
    sim, _ = faulty_run
    path = tmp_path / "truth.jsonl"
    with path.open("w", encoding="utf-8") as f:
        n = faults_mod.write_ground_truth(sim.faults, f)
    records = faults_mod.read_ground_truth(path)
    assert n == len(records) == len(sim.faults)
    for record, fault in zip(records, sim.faults, strict=True):
        assert set(record) == {
            "fault_id", "kind", "fault_type", "device_id", "group_id", "device_ids",
            "start", "end", "start_ms", "end_ms", "params",
        }  # fmt: skip
        assert (record["device_id"] is None) == (record["group_id"] is not None)
        back = faults_mod.fault_from_json(record)
        assert back.device_ids == fault.device_ids
        assert (back.start_ms, back.end_ms) == (fault.start_ms, fault.end_ms)
        assert record["start"].endswith("Z")


def test_group_faults_take_whole_groups(faulty_run: tuple[Simulation, Stream]) -> None:
    sim, _ = faulty_run
    kinds = sim.kinds()
    for fault in sim.faults:
        if fault.group_id is None:
            assert len(fault.device_ids) == 1
            continue
        table = kinds[fault.kind].table
        g = table.group_ids.index(fault.group_id)
        assert sorted(fault.indices) == [i for i in range(len(table)) if table.group[i] == g]


def test_no_device_has_two_faults(faulty_run: tuple[Simulation, Stream]) -> None:
    sim, _ = faulty_run
    seen = Counter(d for f in sim.faults for d in f.device_ids)
    assert max(seen.values()) == 1


def test_complaints_follow_faults(faulty_run: tuple[Simulation, Stream]) -> None:
    sim, stream = faulty_run
    by_id = {c["complaint_id"]: c for c in stream.complaints}
    category = {
        "streetlight": "streetlight",
        "manhole": "manhole",
        "heating": "heating",
        "charger": "charging",
    }
    linked = 0
    for fault in sim.faults:
        for cid in fault.params["complaints"]:
            c = by_id[cid]
            linked += 1
            assert c["category"] == category[fault.kind.value]
            assert c["received_at"] >= rfc3339(fault.start_ms)
            if "device_id" in c:
                assert c["device_id"] in fault.device_ids
    assert linked >= 5
    background = [
        c
        for c in stream.complaints
        if not any(c["complaint_id"] in f.params["complaints"] for f in sim.faults)
    ]
    assert background, "the hotline also carries unrelated complaints"
    assert all("device_id" not in c for c in background)
    assert len(by_id) == len(stream.complaints)


@pytest.mark.slow
def test_plan_is_deterministic_and_rate_scaled(faulty_run: tuple[Simulation, Stream]) -> None:
    sim, _ = faulty_run
    again = Simulation(
        sim.scenario, start=from_ms(sim.start_ms), duration=timedelta(days=2), fault_rate=0.3
    )
    # The plan, and after the run the effect ends it records, are the same for the same seed.
    planned = {f.fault_id: f.to_json() for f in again.faults}
    for record in planned.values():
        record["params"] = {k: v for k, v in record["params"].items() if "effect_end" not in k}
    ran = {f.fault_id: f.to_json() for f in sim.faults}
    for fault_id, record in ran.items():
        params = {k: v for k, v in record["params"].items() if "effect_end" not in k}
        assert {**record, "params": params} == planned[fault_id]
    assert len(planned) == len(ran)
    for _ in again.ticks():
        pass
    assert [f.to_json() for f in again.faults] == [f.to_json() for f in sim.faults]
    assert any("effect_end_ms" in f.params for f in sim.faults)
    none = Simulation(
        sim.scenario, start=from_ms(sim.start_ms), duration=timedelta(days=2), fault_rate=0.0
    )
    assert none.faults == []
    out = io.StringIO()
    assert faults_mod.write_ground_truth(none.faults, out) == 0
    per_type = defaultdict(int)
    for f in sim.faults:
        per_type[f.kind] += len(f.device_ids)
    assert sum(per_type.values()) > 20
