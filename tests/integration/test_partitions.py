"""Plain path: partitions created ahead, stray rows filed out of DEFAULT, expired ones dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from cityops.db import status, storage
from tests.conftest import make_settings

pytestmark = pytest.mark.pg


def _conn(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")


def _ranges(conn: psycopg.Connection[tuple[object, ...]], table: str) -> list[datetime]:
    return sorted(p.start for p in storage.list_partitions(conn, table) if p.start is not None)


def test_migrate_premakes_partitions_around_now(partitioned_db: str) -> None:
    settings = make_settings(partitioned_db, timescaledb="off")
    today = storage.partition_start(datetime.now(UTC), 1)
    with _conn(partitioned_db) as conn:
        starts = _ranges(conn, "heating_readings")
        assert today in starts
        assert today + timedelta(days=settings.storage.premake_partitions) in starts
        assert today - timedelta(days=1) in starts


def test_maintenance_creates_ahead_files_default_rows_and_drops_expired(
    partitioned_db: str,
) -> None:
    settings = make_settings(
        partitioned_db, timescaledb="off", retention_days=30, premake_partitions=3
    )
    now = datetime.now(UTC)
    with _conn(partitioned_db) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) VALUES ('H-1', 'heating', 'CY-JW')"
        )
        # Backfilled rows 10 days ago and 20 days ahead have no partition yet: they land in
        # DEFAULT and are never refused.
        old, ahead = now - timedelta(days=10), now + timedelta(days=20)
        conn.execute(
            "INSERT INTO heating_readings (device_id, ts, temperature_c) "
            "VALUES ('H-1', %s, 19.0), ('H-1', %s, 21.0)",
            (old, ahead),
        )
        assert conn.execute("SELECT count(*) FROM heating_readings_default").fetchone() == (2,)

        report = storage.maintain(conn, settings.storage, now)
        assert report.moved_rows == 2
        assert conn.execute("SELECT count(*) FROM heating_readings_default").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM heating_readings").fetchone() == (2,)
        starts = _ranges(conn, "heating_readings")
        assert storage.partition_start(old, 1) in starts
        assert storage.partition_start(ahead, 1) in starts
        # The moved rows still obey the primary key.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO heating_readings (device_id, ts, temperature_c) "
                "VALUES ('H-1', %s, 19.0)",
                (old,),
            )

        # 25 days later the partition of `old` is past the 30-day retention and is dropped.
        later = now + timedelta(days=25)
        report = storage.maintain(conn, settings.storage, later)
        old_name = storage.partition_name("heating_readings", storage.partition_start(old, 1))
        assert old_name in report.dropped
        assert storage.partition_start(old, 1) not in _ranges(conn, "heating_readings")
        assert conn.execute("SELECT count(*) FROM heating_readings").fetchone() == (1,)
        assert storage.partition_start(later + timedelta(days=3), 1) in _ranges(
            conn, "heating_readings"
        )
        # A second run in the same instant has nothing to do.
        again = storage.maintain(conn, settings.storage, later)
        assert (again.created, again.dropped, again.moved_rows) == ([], [], 0)


def test_rows_older_than_retention_in_default_are_expired(partitioned_db: str) -> None:
    settings = make_settings(partitioned_db, timescaledb="off", retention_days=5)
    now = datetime.now(UTC)
    with _conn(partitioned_db) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) VALUES ('C-1', 'charger', 'CY-JW')"
        )
        conn.execute(
            "INSERT INTO charger_readings (device_id, ts, status) VALUES ('C-1', %s, 'Available')",
            (now - timedelta(days=40),),
        )
        report = storage.maintain(conn, settings.storage, now)
        assert report.expired_default_rows == 1
        assert conn.execute("SELECT count(*) FROM charger_readings").fetchone() == (0,)


def test_status_reports_path_level_partitions_and_rows(partitioned_db: str) -> None:
    with _conn(partitioned_db) as conn:
        st = status.collect(conn, exact=True)
    assert st.path is storage.StoragePath.PARTITIONED
    assert st.migration_version is not None
    assert st.pending == []
    by_name = {t.name: t for t in st.tables}
    assert by_name["areas"].rows == 43
    assert by_name["streetlight_readings"].partitions is not None
    assert by_name["streetlight_readings"].partitions >= 8
    assert by_name["streetlight_readings"].rows == 0
