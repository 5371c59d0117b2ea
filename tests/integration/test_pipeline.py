"""The whole ingest process: simulator -> mosquitto -> ingest -> stream -> alerts, in process.

The simulated afternoon-to-evening carries injected faults; the faults that state rules catch at
once (cover open, overflow, charger Faulted) must all become alerts, rates must be written, and
every reading must be stored once.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from alerts.quality import FiredAlert, score
from benchmarks.alerts import truth_of
from cityops import registry
from cityops.cli.pipeline import build_pipeline
from cityops.settings import DatabaseSettings, MqttSettings, Settings, StorageSettings
from ingest.service import IngestService
from simulators import runner, scenario
from simulators.engine import Simulation
from simulators.publisher import Publisher, PublisherConfig
from tests.conftest import PLAIN_BROKER_CONF, start_mosquitto

pytestmark = [pytest.mark.pg, pytest.mark.mqtt]

IMMEDIATE = ("cover_open", "overflow", "faulted")


@pytest.mark.slow
def test_simulated_faults_become_alerts_and_rates(migrated_db: str, tmp_path: Path) -> None:
    start = datetime(2025, 12, 10, 6, tzinfo=UTC)  # 14:00 in Beijing, into the night
    sim = Simulation(
        scenario.generate(scenario.scenario_spec("pilot", devices=300), seed=21),
        start=start,
        duration=timedelta(hours=6),
        fault_rate=1.0,
    )
    truth = truth_of(sim)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        report = registry.import_devices(conn, scenario.registry_records(sim.scenario), "e2e")
        assert report.errors == []
    proc, port = start_mosquitto(PLAIN_BROKER_CONF, tmp_path / "broker")
    settings = Settings(
        db=DatabaseSettings(dsn=migrated_db),
        mqtt=MqttSettings(port=port, client_id=f"pipe-{uuid.uuid4().hex[:6]}"),
        storage=StorageSettings(timescaledb="off"),
    )
    pipeline = build_pipeline(settings)
    service = IngestService(settings, consumers=pipeline.consumers)
    try:
        service.start(wait_subscribed_s=15)
        publisher = Publisher(PublisherConfig(port=port, client_id=f"sim-{uuid.uuid4().hex[:6]}"))
        publisher.connect()
        progress = runner.run(sim, runner.MqttSink(publisher), speed=0, prefix="cityops/v1")
        assert publisher.flush(30)
        publisher.close()
        deadline = time.monotonic() + 90
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            last = -1
            while time.monotonic() < deadline:
                stored = sum(
                    conn.execute(f"SELECT count(*) FROM {k}_readings").fetchone()[0]  # type: ignore[index]
                    for k in ("streetlight", "manhole", "heating", "charger")
                )
                if stored == last and stored > 0:
                    break
                last = stored
                time.sleep(1.0)
    finally:
        service.request_stop()
        service.stop()
        pipeline.stop()
        proc.terminate()
        proc.wait(timeout=10)
    with psycopg.connect(migrated_db) as conn:
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
        fired = [
            FiredAlert(
                rule=r,
                device_id=d,
                group=(labels or {}).get("cabinet_id")
                or (labels or {}).get("site_id")
                or (labels or {}).get("compound"),
                fired_at=f,
            )
            for r, d, labels, f in conn.execute(
                "SELECT rule, device_id, labels, fired_at FROM alerts WHERE fired_at IS NOT NULL"
            ).fetchall()
        ]
        rates = dict(
            conn.execute("SELECT metric, count(*) FROM rates_hourly GROUP BY metric").fetchall()
        )
        cases_n = conn.execute("SELECT count(*) FROM cases").fetchone()
    assert progress.messages > 0
    assert dead == (0,)
    assert rates.get("lighting_rate", 0) > 0
    assert rates.get("charger_availability", 0) > 0
    scores = score(truth, fired)
    checked = 0
    for fault_type in IMMEDIATE:
        s = scores[fault_type]
        if s.faults:
            checked += 1
            assert s.recall == 1.0, (fault_type, s.as_json())
    assert checked >= 2
    assert cases_n is not None
    assert cases_n[0] > 0
