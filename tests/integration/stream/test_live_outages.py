"""Live rates survive database outages and restarts (issue 16): they equal a recompute, exactly.

The real ingest process's wiring (``build_pipeline``: stream core, catch-up point, alert engine)
behind an ``IngestService`` on a private broker from the project's config. The outages cut this
test's own database only (``ALLOW_CONNECTIONS false`` plus terminated backends, or the stream
core's own backends terminated); the shared server is never stopped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from cityops import heartbeat
from cityops.catalog import Kind
from cityops.cli.pipeline import Pipeline, build_pipeline
from cityops.settings import Settings
from ingest.metrics import IngestMetrics
from ingest.service import IngestService
from stream.live import LiveRates
from stream.recompute import recompute
from tests.integration.ingest.conftest import (  # noqa: F401 (fixtures)
    Publisher,
    SecureBroker,
    ingest_db,
    ingest_settings,
    publishers,
    secure_broker,
    wait_for,
)
from tests.integration.outage import set_connections
from tests.integration.stream import fleet

pytestmark = [pytest.mark.pg, pytest.mark.mqtt, pytest.mark.slow]

KINDS = {"SL": Kind.STREETLIGHT, "HT": Kind.HEATING, "CH": Kind.CHARGER}
DEVICES = ("SL-1", "SL-2", "SL-3", "SL-4", "HT-1", "HT-2", "CH-1", "CH-2")
START = datetime(2025, 1, 1, 8, 10, tzinfo=UTC)  # 16:10 in Beijing: across switch-on at dusk
STEP = timedelta(minutes=2)
TABLES = ("streetlight_readings", "heating_readings", "charger_readings")


def _readings(seed: int, n: int) -> list[tuple[str, int, dict[str, Any]]]:
    """``n`` readings per device every 2 minutes from START, in time order."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(n):
        t = int((START + step * STEP).timestamp() * 1000)
        for device in DEVICES:
            kind = KINDS[device[:2]]
            if kind is Kind.STREETLIGHT:
                values: dict[str, Any] = {
                    "power_state": str(rng.choice(["on", "off", "dimmed"], p=[0.6, 0.3, 0.1]))
                }
            elif kind is Kind.HEATING:
                values = {"temperature_c": float(np.round(rng.normal(18.5, 1.5), 1))}
            else:
                values = {"status": str(rng.choice(["Available", "Charging", "Faulted"]))}
            out.append((device, t + int(rng.integers(0, 30_000)), values))
    return out


def _settings(dsn: str, broker: SecureBroker, flush_every_s: float = 0.2) -> Settings:
    base = ingest_settings(dsn, broker, retry_initial_s=0.05, retry_max_s=0.5)
    stream = {"publish_interval_s": flush_every_s, "max_lag_s": 1.0}
    return base.model_copy(
        update={
            "stream": base.stream.model_copy(update=stream),
            "alerts": base.alerts.model_copy(update={"tick_s": 0.3}),
        }
    )


class Process:
    """One ``cityops ingest`` worker built like the command builds it (in this process)."""

    def __init__(self, settings: Settings, *, with_alerts: bool = True) -> None:
        self.metrics = IngestMetrics()
        self.pipeline: Pipeline = build_pipeline(
            settings, registry=self.metrics.registry, with_alerts=with_alerts
        )
        live = [c for c in self.pipeline.consumers if isinstance(c, LiveRates)]
        assert len(live) == 1
        self.live = live[0]
        self.service = IngestService(
            settings, self.pipeline.consumers, client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            metrics=self.metrics,
        )  # fmt: skip
        self.service.start(wait_subscribed_s=10)

    def gauge(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(name)
        assert value is not None, name
        return value

    def caught_up(self) -> bool:
        return not self.live.pending() and self.live.lag_s() == 0.0

    def flushed(self) -> bool:
        """Flush now (the test drives the flushes) and say whether nothing waits."""
        self.live.flush()
        return self.caught_up()

    def stop(self) -> None:
        try:
            self.service.stop()
        finally:
            self.pipeline.stop()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        p.stop()


def _publish(pubs: dict[str, Publisher], rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    for device, ts, values in rows:
        topic = f"cityops/v1/{KINDS[device[:2]].value}/{device}/telemetry"
        pubs[device].publish(topic, json.dumps([{"ts": ts, "values": values}]))


def _stored(dsn: str) -> int:
    total = 0
    with psycopg.connect(dsn) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            total += int(row[0]) if row else 0
    return total


def _terminate(admin_dsn: str, pids: list[int]) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def _live_equals_recompute(dsn: str, settings: Settings, rows: list[Any]) -> int:
    """Compare rates_hourly as live mode left it with a recompute of the same hours."""
    kinds = sorted({KINDS[d[:2]] for d, _, _ in rows}, key=lambda k: k.value)
    first = min(t for _, t, _ in rows)
    last = max(t for _, t, _ in rows)
    lo = datetime.fromtimestamp(first / 1000, UTC)
    hi = datetime.fromtimestamp(last / 1000, UTC)
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        live_table = fleet.rates_table(conn)
        conn.execute("DELETE FROM rates_hourly")
        conn.commit()
        recompute(conn, settings, lo, hi, kinds=kinds)
        batch_table = fleet.rates_table(conn)
    # the hours of the readings (live mode also holds the tentative hold past the last one)
    end = hi.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    live_in = {k: v for k, v in live_table.items() if k[3] < end}
    batch_in = {k: v for k, v in batch_table.items() if k[3] < end}
    assert live_in == batch_in
    return len(live_in)


def test_live_rates_after_database_outages_equal_recompute(
    ingest_db: str,  # noqa: F811
    secure_broker: SecureBroker,  # noqa: F811
    publishers: Callable[..., Publisher],  # noqa: F811
    pg_admin_dsn: str,
    processes: list[Process],
) -> None:
    dsn = ingest_db
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    assert isinstance(dbname, str)
    # the test drives the stream core's flushes (the thread's period is an hour)
    settings = _settings(dsn, secure_broker, flush_every_s=3600)
    proc = Process(settings)
    processes.append(proc)
    pubs = {d: publishers(d) for d in DEVICES}
    rows = _readings(seed=3, n=100)  # 100 steps of 2 min: 8:10 to 11:30
    parts = [rows[:200], rows[200:400], rows[400:560], rows[560:]]

    _publish(pubs, parts[0])
    assert wait_for(lambda: _stored(dsn) == 200, 60)
    assert wait_for(proc.flushed, 30)
    assert proc.gauge("cityops_stream_lag_seconds") == 0.0

    # 1. The stream core's own connections are cut while ingest keeps storing: the flush
    # fails, the connection is reopened with back-off, and the hours the failed flush could not
    # write are recomputed from the database at the next batch's catch-up point.
    pids = [c.info.backend_pid for c in (proc.live.conn, proc.live._read) if c is not None]
    _terminate(pg_admin_dsn, pids)
    _publish(pubs, parts[1][:100])
    assert wait_for(lambda: _stored(dsn) == 300, 60)
    assert wait_for(lambda: proc.live.batches >= 1 and proc.live.pending(), 30)
    proc.live.flush()
    assert proc.live.flush_failures >= 1
    assert proc.live.db_ok is False
    assert wait_for(lambda: (proc.live.flush(), proc.live.db_ok)[1], 30)  # reconnected
    _publish(pubs, parts[1][100:])
    assert wait_for(lambda: _stored(dsn) == 400, 60)
    assert wait_for(proc.flushed, 30)
    assert proc.live.recomputed_hours > 0

    # 2. The whole database goes away mid-stream: lag and readiness go bad, then recover.
    _publish(pubs, parts[2][:40])
    assert wait_for(lambda: _stored(dsn) == 440, 60)
    set_connections(pg_admin_dsn, dbname, allow=False)
    try:
        _publish(pubs, parts[2][40:])  # the broker takes them; ingest cannot store them yet
        assert wait_for(
            lambda: (proc.live.flush(), proc.gauge("cityops_stream_lag_seconds") > 1.0)[1], 30
        )
        assert wait_for(lambda: proc.gauge("cityops_alerts_lag_seconds") > 1.0, 30)
        state = proc.pipeline.readiness()
        assert state["consumers"] is False
        assert state["stream"]["ok"] is False
        assert state["alerts"]["ok"] is False
        assert state["stream"]["database"] is False
        assert proc.gauge("cityops_stream_db_up") == 0.0
    finally:
        set_connections(pg_admin_dsn, dbname, allow=True)
    assert wait_for(lambda: _stored(dsn) == 560, 90)
    _publish(pubs, parts[3])  # batches after the outage carry the catch-up point
    assert wait_for(lambda: _stored(dsn) == len(rows), 60)
    assert wait_for(proc.flushed, 30)
    assert wait_for(lambda: proc.pipeline.readiness()["consumers"] is True, 30)
    assert proc.gauge("cityops_stream_db_up") == 1.0
    assert proc.gauge("cityops_stream_lag_seconds") == 0.0
    assert proc.gauge("cityops_alerts_lag_seconds") == 0.0
    with psycopg.connect(dsn) as conn:
        beats = {b.consumer: b for b in heartbeat.read(conn)}
    assert not beats["stream/0of1"].stale(settings.stream.max_lag_s)
    proc.stop()
    processes.clear()
    assert proc.live.consumer_errors == 0
    assert _live_equals_recompute(dsn, settings, rows) > 20


def test_live_rates_after_a_restart_equal_recompute(
    ingest_db: str,  # noqa: F811
    secure_broker: SecureBroker,  # noqa: F811
    publishers: Callable[..., Publisher],  # noqa: F811
    processes: list[Process],
) -> None:
    dsn = ingest_db
    settings = _settings(dsn, secure_broker)
    pubs = {d: publishers(d) for d in DEVICES}
    rows = _readings(seed=4, n=60)  # 8:10 to 10:10; the restart at 9:10, mid-hour
    first, second = rows[: 30 * len(DEVICES)], rows[30 * len(DEVICES) :]

    proc = Process(settings, with_alerts=False)
    processes.append(proc)
    _publish(pubs, first)
    assert wait_for(lambda: _stored(dsn) == len(first), 60)
    assert wait_for(proc.caught_up, 30)
    proc.stop()
    processes.clear()
    with psycopg.connect(dsn) as conn:
        beat = {b.consumer: b for b in heartbeat.read(conn)}["stream/0of1"]
    assert beat.stopped_at is not None
    assert beat.resume_from is not None

    again = Process(settings, with_alerts=False)
    processes.append(again)
    assert again.live.hours_restored > 0  # the hours in progress, rebuilt from the stored rows
    _publish(pubs, second)
    assert wait_for(lambda: _stored(dsn) == len(rows), 60)
    assert wait_for(again.caught_up, 30)
    again.stop()
    processes.clear()
    assert _live_equals_recompute(dsn, settings, rows) > 10
