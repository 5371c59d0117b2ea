"""The generated registry imports cleanly; ground truth lands in its table; the CLI end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from cityops import registry
from simulators import faults as faults_mod
from simulators import scenario
from simulators.engine import Simulation
from tests.unit.simulators.stream import decode_raw

pytestmark = pytest.mark.pg


def _cli(dsn: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}
    env["CITYOPS_DB_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "cityops", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def test_pilot_registry_imports_through_the_registry(migrated_db: str) -> None:
    scn = scenario.generate(scenario.scenario_spec("pilot"), seed=7)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        report = registry.import_devices(conn, scenario.registry_records(scn), "pilot")
        assert report.errors == []
        assert report.stored == scn.total
        counts = dict(conn.execute("SELECT kind, count(*) FROM devices GROUP BY kind").fetchall())
        lamp = conn.execute(
            "SELECT gateway_id, attributes FROM devices WHERE kind = 'streetlight' "
            "AND attributes->>'schedule_class' = 'mains' LIMIT 1"
        ).fetchone()
    assert counts == {k.value: len(t) for k, t in scn.tables.items()}
    assert lamp is not None
    assert lamp[0] == lamp[1]["cabinet_id"]
    assert set(lamp[1]) == {"road", "schedule_class", "rated_power_w", "cabinet_id"}


def test_ground_truth_table(migrated_db: str) -> None:
    scn = scenario.generate(scenario.scenario_spec("pilot", devices=400), seed=3)
    sim = Simulation(
        scn, start=datetime(2025, 12, 10, tzinfo=UTC), duration=timedelta(days=1), fault_rate=0.2
    )
    assert sim.faults
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        assert faults_mod.store_ground_truth(conn, "run-1", sim.faults) == len(sim.faults)
        faults_mod.store_ground_truth(conn, "run-1", sim.faults)  # idempotent per run
        rows = conn.execute(
            "SELECT fault_id, fault_type, device_id, group_id, device_ids, "
            "extract(epoch FROM starts_at) * 1000, extract(epoch FROM ends_at) * 1000 "
            "FROM sim_ground_truth WHERE run_id = 'run-1' ORDER BY fault_id"
        ).fetchall()
    assert len(rows) == len(sim.faults)
    by_id = {f.fault_id: f for f in sim.faults}
    for fault_id, ftype, device_id, group_id, members, start, end in rows:
        f = by_id[fault_id]
        assert ftype == f.fault_type.value
        assert tuple(members) == f.device_ids
        assert (device_id is None) == (f.group_id is not None) == (group_id is not None)
        assert (int(start), int(end)) == (f.start_ms, f.end_ms)


def test_cli_registry_then_devices_import(migrated_db: str, tmp_path: Path) -> None:
    out = tmp_path / "district.csv"
    r = _cli(migrated_db, "simulate", "registry", "--scenario", "district", "--devices", "2000",
             "--seed", "4", "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _cli(migrated_db, "devices", "import", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "2000 row(s) read, 2000 stored, 0 rejected" in r.stdout
    r = _cli(migrated_db, "simulate", "registry", "--scenario", "pilot", "--devices", "300",
             "--import", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "300 device(s) stored, 0 rejected" in r.stdout


@pytest.mark.slow
def test_cli_dry_run_writes_stream_and_truth(migrated_db: str, tmp_path: Path) -> None:
    stream_file = tmp_path / "stream.jsonl"
    truth = tmp_path / "truth.jsonl"
    args = ["simulate", "--scenario", "pilot", "--devices", "300", "--seed", "9", "--speed", "0",
            "--duration", "1d", "--start", "2025-12-10T08:00:00Z", "--faults", "0.5",
            "--truth", str(truth), "--dry-run", str(stream_file), "--truth-db"]  # fmt: skip
    r = _cli(migrated_db, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    records = faults_mod.read_ground_truth(truth)
    assert records
    import orjson

    lines = [orjson.loads(line) for line in stream_file.read_bytes().splitlines()]
    stream = decode_raw((x["topic"], orjson.dumps(x["payload"])) for x in lines)
    assert len(stream.readings) > 1000
    faulty = {d for rec in records for d in rec["device_ids"]}
    assert faulty & {r.device_id for r in stream.readings}
    with psycopg.connect(migrated_db) as conn:
        stored = conn.execute("SELECT count(*) FROM sim_ground_truth").fetchone()
        params = dict(conn.execute("SELECT fault_id, params FROM sim_ground_truth").fetchall())
    assert stored == (len(records),)
    # Both copies are rewritten after the run, so they carry what only the run learns.
    assert {rec["fault_id"]: rec["params"] for rec in records} == params
    assert any("effect_end_ms" in rec["params"] for rec in records)
    # Same seed and start: the same stream, byte for byte.
    again = tmp_path / "again.jsonl"
    args[args.index(str(stream_file))] = str(again)
    args.remove("--truth-db")
    r = _cli(migrated_db, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == stream_file.read_bytes()
