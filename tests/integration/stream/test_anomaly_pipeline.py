"""The stream core's detector in the pipeline: state through the database, a restart that keeps
what was learnt, and the alert engine's episodes on the stream core's scores.

Rooms are synthesised (21 °C, a daily swing, 0.1 °C noise and resolution, a reading every 20
minutes) and handed as committed batches to ``LiveRates`` and then the ``AlertEngine``, in that
order, as ``cityops ingest`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from alerts.engine import AlertEngine
from alerts.rules import RuleHolder
from cityops.batch import CommittedBatch, KindBatch
from cityops.catalog import Kind
from cityops.schedule import HeatingCalendar, LightingSchedule
from cityops.settings import ScheduleSettings
from stream.live import LiveRates
from tests.conftest import make_settings

pytestmark = pytest.mark.pg

MIN = 60_000
HOUR = 60 * MIN
T0 = int(datetime(2025, 12, 1, tzinfo=UTC).timestamp() * 1000)
ROOMS = [f"ht-a{i:02d}" for i in range(6)]
RULES = """
version: 1
rules:
  - name: room_temperature_anomaly
    type: anomaly
    kind: heating
    field: temperature_c
    score: 7
    clear: 3.5
    hold: 1h
    severity: info
"""


def _room_value(i: int, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    local_h = ((t + 8 * HOUR) % (24 * HOUR)) / HOUR
    swing = 0.4 * np.cos(2 * np.pi * (local_h - 20) / 24)
    return np.round(20.5 + 0.3 * i + swing + rng.normal(0, 0.1, len(t)), 1)


def _readings(days: float, faults: dict[str, tuple[int, int, float]] | None = None
              ) -> list[tuple[str, int, float]]:  # fmt: skip
    """(device, ts, value) sorted by time; ``faults`` adds ``offset`` to a room in [start, end)."""
    rng = np.random.default_rng(3)
    out = []
    for i, d in enumerate(ROOMS):
        t = T0 + np.arange(0, int(days * 24 * 60), 20, dtype=np.int64) * MIN + i * 7_000
        v = _room_value(i, t, rng)
        if faults and d in faults:
            start, end, offset = faults[d]
            v = np.where((t >= start) & (t < end), np.round(v + offset, 1), v)
        out += [(d, int(a), float(b)) for a, b in zip(t, v, strict=True)]
    return sorted(out, key=lambda r: r[1])


def _batches(
    rows: list[tuple[str, int, float]], since: int, until: int
) -> Iterator[CommittedBatch]:
    """One committed batch per 10 minutes of readings in [since, until)."""
    chunk: list[tuple[str, int, int, dict[str, Any]]] = []
    edge = since + 10 * MIN
    seq = 0
    for d, t, v in rows:
        if not since <= t < until:
            continue
        while t >= edge:
            if chunk:
                seq += 1
                yield _batch(seq, chunk)
                chunk = []
            edge += 10 * MIN
        chunk.append((d, t, t, {"temperature_c": v}))
    if chunk:
        yield _batch(seq + 1, chunk)


def _batch(seq: int, rows: list[tuple[str, int, int, dict[str, Any]]]) -> CommittedBatch:
    kb = KindBatch.from_rows(Kind.HEATING, rows)
    at = datetime.fromtimestamp(rows[-1][1] / 1000, UTC)
    return CommittedBatch(seq=seq, committed_at=at, readings={Kind.HEATING: kb})


@dataclass
class _Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def _register(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for d in ROOMS:
            conn.execute(
                "INSERT INTO devices (device_id, kind, area_code) VALUES (%s, 'heating', 'CY-JW')",
                (d,),
            )


class _Stage:
    """LiveRates then AlertEngine on one database, as the ingest process wires them."""

    def __init__(self, dsn: str, rules: Path) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")
        self.live = LiveRates.from_db(make_settings(dsn), self.conn)
        self.pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True,
                                   kwargs={"options": "-c TimeZone=UTC"})  # fmt: skip
        self.clock = _Clock(datetime.fromtimestamp(T0 / 1000, UTC))
        s = ScheduleSettings()
        self.engine = AlertEngine(
            rules=RuleHolder(rules), pool=self.pool, schedule=LightingSchedule(s),
            calendar=HeatingCalendar(s), clock=self.clock,
        )  # fmt: skip

    def feed(self, batches: Iterator[CommittedBatch]) -> None:
        for b in batches:
            self.clock.now = b.committed_at
            self.live.on_batch(b)
            self.engine.process_batch(b)

    def close(self) -> None:
        self.pool.close()
        self.conn.close()


def _alerts(dsn: str) -> list[tuple[str, datetime, datetime | None]]:
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT device_id, fired_at, resolved_at FROM alerts "
                "WHERE fired_at IS NOT NULL ORDER BY fired_at"
            )
        ]


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return path


def test_one_alert_per_episode_resolved_after_the_hold(migrated_db: str, rules_file: Path) -> None:
    """A 3-hour step in one room: one alert, at its first reading, resolved once the scores have
    stayed calm for the hold; the healthy rooms raise nothing."""
    _register(migrated_db)
    start, end = T0 + 50 * HOUR, T0 + 53 * HOUR
    rows = _readings(3, {"ht-a02": (start, end, 4.0)})
    stage = _Stage(migrated_db, rules_file)
    try:
        stage.feed(_batches(rows, T0, T0 + 72 * HOUR))
    finally:
        stage.close()
    alerts = _alerts(migrated_db)
    assert [a[0] for a in alerts] == ["ht-a02"]
    _, fired, resolved = alerts[0]
    first_step = min(t for d, t, _ in rows if d == "ht-a02" and t >= start)
    assert fired == datetime.fromtimestamp(first_step / 1000, UTC)
    assert resolved is not None
    assert resolved >= datetime.fromtimestamp(end / 1000, UTC) + timedelta(hours=1) - timedelta(
        minutes=20
    )


def test_state_round_trips_through_the_database(migrated_db: str) -> None:
    _register(migrated_db)
    rows = _readings(2)
    with psycopg.connect(migrated_db, autocommit=True, options="-c TimeZone=UTC") as conn:
        live = LiveRates.from_db(make_settings(migrated_db), conn)
        for b in _batches(rows, T0, T0 + 48 * HOUR):
            live.on_batch(b)
        assert live.save_state() == len(ROOMS)
        before = live.sensor_state(Kind.HEATING)
        again = LiveRates.from_db(make_settings(migrated_db), conn)
        after = again.sensor_state(Kind.HEATING)
        assert again.states_restored == len(ROOMS)
        for name in ("last_ts", "count", "start_ts", "last_slot", "flat_since"):
            assert getattr(after, name).tolist() == getattr(before, name).tolist(), name
        for name in ("last_val", "level", "var", "fvar", "surprise"):
            np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
        np.testing.assert_array_equal(after.slots, before.slots)
        # a saved state of another layout is not restored
        conn.execute("UPDATE sensor_state SET model = 'v0:other'")
        assert LiveRates.from_db(make_settings(migrated_db), conn).states_restored == 0


def test_a_restart_keeps_what_was_learnt(
    migrated_db: str, pg_admin_dsn: str, rules_file: Path, request: pytest.FixtureRequest
) -> None:
    """Day 3's first hour after a restart raises exactly the alerts of the uninterrupted run:
    nothing more, and the spike 20 minutes after the restart is still caught (a detector that
    re-learnt from nothing would still be warming up)."""
    restart = T0 + 50 * HOUR
    spike = restart + 20 * MIN
    rows = _readings(3, {"ht-a04": (spike, spike + 10 * MIN, 6.0)})
    runs = {}
    for name in ("straight", "restarted"):
        dsn = migrated_db if name == "straight" else _second_db(pg_admin_dsn, request)
        _register(dsn)
        stage = _Stage(dsn, rules_file)
        try:
            if name == "straight":
                stage.feed(_batches(rows, T0, restart + HOUR))
            else:
                stage.feed(_batches(rows, T0, restart))
                stage.live.stop()  # flushes and saves the state, as at shutdown
        finally:
            stage.close()
        if name == "restarted":
            stage = _Stage(dsn, rules_file)
            try:
                assert stage.live.states_restored == len(ROOMS)
                stage.feed(_batches(rows, restart, restart + HOUR))
            finally:
                stage.close()
        hour = [
            (d, f) for d, f, _ in _alerts(dsn)
            if datetime.fromtimestamp(restart / 1000, UTC) <= f
        ]  # fmt: skip
        runs[name] = hour
    assert runs["straight"] == [("ht-a04", datetime.fromtimestamp(
        min(t for d, t, _ in rows if d == "ht-a04" and t >= spike) / 1000, UTC))]  # fmt: skip
    assert runs["restarted"] == runs["straight"]


def _second_db(admin: str, request: pytest.FixtureRequest) -> str:
    """Another migrated database (the fixture gives one per test)."""
    from tests.conftest import _create_db, _migrate_with_areas

    gen = _create_db(admin)
    dsn = next(gen)
    request.addfinalizer(lambda: next(gen, None))
    _migrate_with_areas(dsn, "off")
    return dsn
