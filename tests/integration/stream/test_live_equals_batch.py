"""Live mode and batch mode write the same rates_hourly for the same readings; recompute is
idempotent; late readings re-open their hours."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg
import pytest

from cityops.batch import CommittedBatch, KindBatch
from cityops.catalog import Kind
from cityops.settings import DatabaseSettings, Settings
from stream.live import LiveRates
from stream.recompute import recompute
from stream.registry import load_areas, load_devices
from tests.integration.stream import fleet

pytestmark = pytest.mark.pg


def _settings(dsn: str) -> Settings:
    return Settings(db=DatabaseSettings(dsn=dsn))


def _live(conn: psycopg.Connection, settings: Settings) -> LiveRates:  # type: ignore[type-arg]
    areas = load_areas(conn)
    devices = {k: load_devices(conn, k, areas) for k in Kind}
    return LiveRates(settings, areas, devices, conn=conn)


def _feed(
    conn: psycopg.Connection,  # type: ignore[type-arg]
    live: LiveRates,
    rows: dict[Kind, list[fleet.Row]],
    complaints: list[dict[str, object]],
    *,
    seed: int,
    batch_size: int = 40,
) -> None:
    """Commit readings in arrival batches, hand each to the consumer, flush now and then."""
    rng = np.random.default_rng(seed)
    merged = sorted(
        [(r[1], k, r) for k, rs in rows.items() for r in rs], key=lambda x: (x[0], x[1].value)
    )
    merged_c = sorted(complaints, key=lambda c: c["received_at"])  # type: ignore[arg-type,return-value]
    for seq, lo in enumerate(range(0, len(merged), batch_size)):
        part = merged[lo : lo + batch_size]
        by_kind: dict[Kind, list[fleet.Row]] = {}
        for _, kind, row in part:
            by_kind.setdefault(kind, []).append(row)
        for kind, krows in by_kind.items():
            rng.shuffle(krows)  # arrival order inside a batch is arbitrary
            fleet.store(conn, kind, krows)
        until = part[-1][0]
        due = [c for c in merged_c if int(c["received_at"].timestamp() * 1000) <= until]  # type: ignore[attr-defined]
        merged_c = merged_c[len(due) :]
        if due:
            fleet.store_complaints(conn, due)
        live.on_batch(
            CommittedBatch(
                seq=seq,
                committed_at=datetime.now(UTC),
                readings={k: KindBatch.from_rows(k, v) for k, v in by_kind.items()},
                complaints=due,
            )
        )
        if seq % 7 == 0:
            live.flush()
    live.flush()


def test_live_and_batch_write_the_same_rates(migrated_db: str) -> None:
    settings = _settings(migrated_db)
    rows = fleet.random_rows(seed=5)
    complaints = fleet.complaint_rows(seed=5)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        fleet.register(conn)
        conn.commit()
        live = _live(conn, settings)
        _feed(conn, live, rows, complaints, seed=5)
        assert live.consumer_errors == 0
        live_table = fleet.rates_table(conn)
        conn.execute("DELETE FROM rates_hourly")
        conn.commit()
        written = recompute(conn, settings, fleet.START, fleet.END)
        batch_table = fleet.rates_table(conn)
        # Recomputing again changes nothing.
        assert recompute(conn, settings, fleet.START, fleet.END) == written
        assert fleet.rates_table(conn) == batch_table

    in_range = {k: v for k, v in live_table.items() if fleet.START <= k[3] < fleet.END}
    assert len(in_range) > 500
    metrics = {(k[1], k[2]) for k in in_range}
    assert ("streetlight", "lighting_rate") in metrics
    assert ("streetlight", "lighting_snapshot") in metrics
    assert ("heating", "complaint_density") in metrics
    assert ("charger", "charger_availability") in metrics
    assert ("manhole", "manhole_alarm_opening") in metrics
    assert in_range == batch_table


def test_late_reading_reopens_its_hours(migrated_db: str) -> None:
    settings = _settings(migrated_db)
    rows = fleet.random_rows(seed=9)
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        fleet.register(conn)
        conn.commit()
        live = _live(conn, settings)
        lamp_rows = rows[Kind.STREETLIGHT]
        # Hold back some readings of one lamp in the night and deliver them at the end.
        night = int(datetime(2026, 1, 31, 14, tzinfo=UTC).timestamp() * 1000)
        held_back = [r for r in lamp_rows if r[0] == "SL-0-0" and night <= r[1] < night + 7_200_000]
        assert held_back
        rest = {k: [r for r in v if r not in held_back] for k, v in rows.items()}
        _feed(conn, live, rest, [], seed=9)
        fleet.store(conn, Kind.STREETLIGHT, held_back)
        live.on_batch(
            CommittedBatch(
                seq=10_000,
                committed_at=datetime.now(UTC),
                readings={Kind.STREETLIGHT: KindBatch.from_rows(Kind.STREETLIGHT, held_back)},
            )
        )
        live.flush()
        assert live.late_readings()[Kind.STREETLIGHT] == len(held_back)
        live_table = fleet.rates_table(conn)
        conn.execute("DELETE FROM rates_hourly")
        conn.commit()
        recompute(conn, settings, fleet.START, fleet.END, kinds=[Kind.STREETLIGHT])
        batch_table = fleet.rates_table(conn)
    lamps_live = {k: v for k, v in live_table.items() if k[1] == "streetlight" and k[3] < fleet.END}
    assert lamps_live == batch_table


def test_reading_into_an_evicted_hour_is_recomputed(migrated_db: str) -> None:
    """A long-silent lamp reports (in its own order) into an hour live mode no longer holds."""
    settings = _settings(migrated_db)
    t0 = int(datetime(2026, 1, 31, 10, tzinfo=UTC).timestamp() * 1000)
    on = {"power_state": "on", "fault": "none"}
    first = [("SL-0-1", t0, t0, on)] + [
        ("SL-0-0", t0 + k * 600_000, t0, on) for k in range(0, 6 * 12)
    ]
    later = [("SL-0-1", t0 + 3_600_000 + 300_000, t0, {"power_state": "off", "fault": "none"})]
    with psycopg.connect(migrated_db, options="-c TimeZone=UTC") as conn:
        fleet.register(conn)
        conn.commit()
        areas = load_areas(conn)
        live = LiveRates(
            settings,
            areas,
            {Kind.STREETLIGHT: load_devices(conn, Kind.STREETLIGHT, areas)},
            conn=conn,
            keep_hours=2,
        )
        for seq, rows in enumerate((first, later)):
            fleet.store(conn, Kind.STREETLIGHT, rows)
            live.on_batch(
                CommittedBatch(
                    seq=seq,
                    committed_at=datetime.now(UTC),
                    readings={Kind.STREETLIGHT: KindBatch.from_rows(Kind.STREETLIGHT, rows)},
                )
            )
            live.flush()
        live_table = fleet.rates_table(conn)
        conn.execute("DELETE FROM rates_hourly")
        conn.commit()
        end = datetime.fromtimestamp((t0 + 13 * 3_600_000) / 1000, UTC)
        recompute(conn, settings, datetime.fromtimestamp(t0 / 1000, UTC), end)
        batch_table = fleet.rates_table(conn)
    assert live.late_readings()[Kind.STREETLIGHT] == 0
    hour11 = datetime(2026, 1, 31, 11, tzinfo=UTC)
    assert live_table[("CY-JW", "streetlight", "lighting_coverage", hour11)][2] == 7
    assert live.recomputed_hours == 1  # hour 11 only: 11:05 + 20' hold stays in it
    assert {k: v for k, v in live_table.items() if k[1] == "streetlight"} == {
        k: v for k, v in batch_table.items() if k[1] == "streetlight"
    }
