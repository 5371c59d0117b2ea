"""The write path on both storage paths: the fast COPY, and the fallback on redelivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
def test_write_path(migrated_db: str) -> None:
    """On each storage path (hypertables too when CITYOPS_TEST_TIMESCALE_DSN is set)."""
    _check(migrated_db)


def _old_batch(base_ms: int, first: int, n: int) -> PendingBatch:
    b = PendingBatch()
    for i in range(first, first + n):
        b.add_reading(Kind.HEATING, ("HT-1", base_ms + i * 60_000, 20.0, None, None, base_ms))
    return b


@pytest.mark.timescaledb
def test_redelivery_into_a_compressed_chunk_stores_the_new_rows(timescale_db: str) -> None:
    """A redelivery mixing stored and new readings into a compressed chunk stores the new ones.

    On TimescaleDB before 2.18.1 the ON CONFLICT DO NOTHING fallback stopped at the first
    conflict: stored 0, duplicates 10 for 5 new readings (timescale/timescaledb#7672).
    """
    settings = make_settings(timescale_db, timescaledb="require", compress_after_days=3)
    with psycopg.connect(timescale_db, autocommit=True, options="-c TimeZone=UTC") as conn:
        migrate.migrate(conn, settings.storage)
    base = int((datetime.now(UTC) - timedelta(days=10)).timestamp()) * 1000
    with psycopg.connect(timescale_db, options="-c TimeZone=UTC") as conn:
        prepare_connection(conn)
        assert write_batch(conn, _old_batch(base, 0, 10)).stored == {Kind.HEATING: 10}
        conn.autocommit = True
        chunks = conn.execute(
            "SELECT show_chunks('heating_readings', older_than => now() - interval '3 days')"
        ).fetchall()
        assert chunks
        for (chunk,) in chunks:
            conn.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)", (chunk,))
        compressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'heating_readings' AND is_compressed"
        ).fetchone()
        assert compressed is not None
        assert compressed[0] >= 1
        conn.autocommit = False
        # 5 stored + 5 new, the stored ones first: the case the bug lost
        again = write_batch(conn, _old_batch(base, 5, 10), want_keys=True)
        assert again.stored == {Kind.HEATING: 5}
        assert again.duplicates == {Kind.HEATING: 5}
        assert again.new_keys == {
            Kind.HEATING: {("HT-1", base + i * 60_000) for i in range(10, 15)}
        }
        total = conn.execute("SELECT count(*) FROM heating_readings").fetchone()
    assert total == (15,)
