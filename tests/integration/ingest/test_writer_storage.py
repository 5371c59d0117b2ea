"""The write path on both storage paths: the fast COPY, and the fallback on redelivery."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from cityops.catalog import Kind
from cityops.db import migrate
from ingest.batcher import PendingBatch
from ingest.writer import prepare_connection, write_batch
from tests.conftest import make_settings

T0 = 1_735_689_600_000


def _batch(first: int, n: int) -> PendingBatch:
    b = PendingBatch()
    for i in range(first, first + n):
        b.add_reading(Kind.HEATING, ("HT-1", T0 + i * 1000, 20.0 + i, None, 90.0, T0))
    return b


def _check(dsn: str) -> None:
    with psycopg.connect(dsn, options="-c TimeZone=UTC") as conn:
        prepare_connection(conn)
        first = write_batch(conn, _batch(0, 10), want_keys=True)
        assert first.stored == {Kind.HEATING: 10}
        assert first.new_keys == {Kind.HEATING: {("HT-1", T0 + i * 1000) for i in range(10)}}
        # overlapping redelivery: the fast COPY fails, the fallback stores only the new rows
        again = write_batch(conn, _batch(5, 10), want_keys=True)
        assert again.stored == {Kind.HEATING: 5}
        assert again.duplicates == {Kind.HEATING: 5}
        assert again.new_keys == {Kind.HEATING: {("HT-1", T0 + i * 1000) for i in range(10, 15)}}
        rows = conn.execute(
            "SELECT ts, temperature_c, received_at FROM heating_readings ORDER BY ts"
        ).fetchall()
    assert len(rows) == 15
    assert rows[0] == (
        datetime(2025, 1, 1, tzinfo=UTC),
        20.0,
        datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert rows[14][1] == 34.0


@pytest.mark.pg
def test_write_path_on_partitioned_tables(migrated_db: str) -> None:
    _check(migrated_db)


@pytest.mark.timescaledb
def test_write_path_on_hypertables(timescale_db: str) -> None:
    settings = make_settings(timescale_db, timescaledb="require")
    with psycopg.connect(timescale_db, autocommit=True, options="-c TimeZone=UTC") as conn:
        migrate.migrate(conn, settings.storage)
    _check(timescale_db)
