"""Migrations on an empty database, re-runs, edited files, concurrent migrators, existing data."""

from __future__ import annotations

import threading
from dataclasses import replace

import psycopg
import pytest

from cityops.db import migrate, storage
from cityops.errors import MigrationError
from tests.conftest import make_settings

pytestmark = pytest.mark.pg

EXPECTED_TABLES = {
    "areas",
    "devices",
    "complaints",
    "dead_letters",
    "rates_hourly",
    "schema_migrations",
    "cityops_storage",
    "timeseries_tables",
    "streetlight_readings",
    "manhole_readings",
    "heating_readings",
    "charger_readings",
}


def _conn(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")


def test_migrate_empty_database_then_rerun(empty_db: str) -> None:
    settings = make_settings(empty_db, timescaledb="off")
    with _conn(empty_db) as conn:
        ran = migrate.migrate(conn, settings.storage)
        assert [m.version for m in ran] == [m.version for m in migrate.discover()]
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        assert tables >= EXPECTED_TABLES
        assert storage.recorded_path(conn) is storage.StoragePath.PARTITIONED
        assert migrate.migrate(conn, settings.storage) == []
        assert migrate.pending(conn) == []


def test_migration_files_themselves_are_idempotent(empty_db: str) -> None:
    """Running every file a second time by hand changes nothing and raises nothing."""
    settings = make_settings(empty_db, timescaledb="off")
    with _conn(empty_db) as conn:
        migrate.migrate(conn, settings.storage)
        conn.execute(
            "INSERT INTO areas (code, name_zh, type, district) "
            "VALUES ('T-1', '测试', 'street', 'Test')"
        )
        with conn.transaction():
            for name, value in (
                ("cityops.partition_days", "1"),
                ("cityops.retention_days", "90"),
                ("cityops.compress_after_days", "7"),
            ):
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            for m in migrate.discover():
                conn.execute(m.sql.encode())
        assert conn.execute("SELECT count(*) FROM areas").fetchone() == (1,)


def test_edited_migration_is_refused(empty_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(empty_db, timescaledb="off")
    with _conn(empty_db) as conn:
        migrate.migrate(conn, settings.storage)
        shipped = migrate.discover()
        edited = [replace(shipped[0], sql=shipped[0].sql + "\n-- edited\n"), *shipped[1:]]
        monkeypatch.setattr(migrate, "discover", lambda: edited)
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate.migrate(conn, settings.storage)


def test_database_from_a_newer_cityops_is_refused(empty_db: str) -> None:
    settings = make_settings(empty_db, timescaledb="off")
    with _conn(empty_db) as conn:
        migrate.migrate(conn, settings.storage)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
        )
        with pytest.raises(MigrationError, match="newer cityops"):
            migrate.migrate(conn, settings.storage)


def test_concurrent_migrators_apply_each_file_once(empty_db: str) -> None:
    settings = make_settings(empty_db, timescaledb="off")
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with _conn(empty_db) as conn:
                results.append(len(migrate.migrate(conn, settings.storage)))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [0, 0, len(migrate.discover())]


def test_migrate_keeps_existing_data(migrated_db: str) -> None:
    settings = make_settings(migrated_db, timescaledb="off")
    with _conn(migrated_db) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, kind, area_code) VALUES ('H-1', 'heating', 'CY-JW')"
        )
        conn.execute(
            "INSERT INTO heating_readings (device_id, ts, temperature_c) "
            "VALUES ('H-1', now(), 20.5)"
        )
        migrate.migrate(conn, settings.storage)
        assert conn.execute("SELECT count(*) FROM heating_readings").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM areas").fetchone() == (43,)


def test_migrate_requires_autocommit(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn, pytest.raises(MigrationError, match="autocommit"):
        migrate.migrate(conn, make_settings(empty_db).storage)


def test_require_timescaledb_without_it_fails_clearly(empty_db: str) -> None:
    with _conn(empty_db) as conn:
        if storage.probe_timescaledb(conn).usable:
            pytest.skip("this server has TimescaleDB loaded")
        with pytest.raises(Exception, match=r"storage\.timescaledb is 'require'"):
            migrate.migrate(conn, make_settings(empty_db, timescaledb="require").storage)
