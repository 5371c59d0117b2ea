"""Simulator -> mosquitto -> ingest -> PostgreSQL: ingest stores every simulated message."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from cityops import registry
from cityops.settings import DatabaseSettings, MqttSettings, Settings, StorageSettings
from ingest import service as ingest_service
from simulators import runner, scenario
from simulators.engine import Simulation
from simulators.messages import encode
from simulators.publisher import Publisher, PublisherConfig
from tests.conftest import PLAIN_BROKER_CONF, start_mosquitto
from tests.unit.simulators.stream import decode

pytestmark = [pytest.mark.pg, pytest.mark.mqtt]


def _sim() -> Simulation:
    scn = scenario.generate(scenario.scenario_spec("pilot", devices=200), seed=13)
    return Simulation(
        scn,
        start=datetime(2025, 12, 10, 8, tzinfo=UTC),
        duration=timedelta(hours=4),
        fault_rate=1.0,
    )


def test_ingest_stores_the_simulated_stream(migrated_db: str, tmp_path: Path) -> None:
    sim = _sim()
    expected = decode(m for out in _sim().ticks() for m in encode(out))
    per_kind = Counter(r.kind for r in expected.readings)
    assert sim.faults
    assert expected.complaints
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        report = registry.import_devices(conn, scenario.registry_records(sim.scenario), "e2e")
        assert report.errors == []
    proc, port = start_mosquitto(PLAIN_BROKER_CONF, tmp_path / "broker")
    settings = Settings(
        db=DatabaseSettings(dsn=migrated_db),
        mqtt=MqttSettings(port=port, client_id=f"e2e-{uuid.uuid4().hex[:6]}"),
        storage=StorageSettings(timescaledb="off"),
    )
    service = ingest_service.IngestService(settings)
    try:
        service.start(wait_subscribed_s=15)
        publisher = Publisher(PublisherConfig(port=port, client_id=f"sim-{uuid.uuid4().hex[:6]}"))
        publisher.connect()
        runner.run(sim, runner.MqttSink(publisher), speed=0, prefix="cityops/v1")
        assert publisher.flush(30)
        publisher.close()
        deadline = time.monotonic() + 60
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            while True:
                stored = {
                    kind: conn.execute(f"SELECT count(*) FROM {kind}_readings").fetchone()[0]
                    for kind in per_kind
                }
                complaints = conn.execute("SELECT count(*) FROM complaints").fetchone()[0]
                if (stored == dict(per_kind) and complaints == len(expected.complaints)) or (
                    time.monotonic() > deadline
                ):
                    break
                time.sleep(0.3)
            dead = conn.execute("SELECT topic, reason, detail FROM dead_letters LIMIT 5").fetchall()
            lamp = expected.by_device()["sl-00001"][-1]
            row = conn.execute(
                "SELECT power_state, energy_kwh FROM streetlight_readings "
                "WHERE device_id = 'sl-00001' ORDER BY ts DESC LIMIT 1"
            ).fetchone()
    finally:
        service.request_stop()
        service.stop()
        proc.terminate()
        proc.wait(timeout=10)
    assert dead == []
    assert stored == dict(per_kind)
    assert complaints == len(expected.complaints)
    assert row == (lamp.values["power_state"], lamp.values["energy_kwh"])
