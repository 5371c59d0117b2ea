"""Migrations on an empty database, re-runs, edited files, concurrent migrators, existing data."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from cityops.db import migrate, storage
from cityops.errors import MigrationError
from tests.conftest import _migrate_with_areas, clone_db, make_settings, require_tool

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


def _schema_dump(pg_dump: str, dsn: str) -> list[str]:
    """pg_dump's schema of ``dsn`` with its database grants, less the partitions made by day.

    The day partitions (``*_pYYYYMMDD``) depend on the day of migration, which is all a copy
    made earlier in the run may differ by; tests/integration/test_partitions.py covers them.
    """
    from psycopg.conninfo import conninfo_to_dict

    name = str(conninfo_to_dict(dsn)["dbname"])
    out = subprocess.run(
        [pg_dump, "--schema-only", "--create", "--exclude-table=public.*_p[0-9]*", "-d", dsn],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [
        line.replace(name, "<db>")
        for line in out.splitlines()
        # pg_dump 15.14+ fences its output with a random key each run.
        if not line.startswith(("\\restrict", "\\unrestrict"))
    ]


# The rows a migration and the area import leave, less the moments they were written at.
_SEEDED_SQL = (
    "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
    "SELECT singleton, path FROM cityops_storage",
    "SELECT to_jsonb(a) - 'updated_at' FROM areas a ORDER BY code",
    "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2",
)
_TABLES_SQL = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "ORDER BY 1"
)


def _row_counts(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (table,) in conn.execute(_TABLES_SQL).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(str(table)))
        row = conn.execute(query).fetchone()
        assert row is not None
        counts[str(table)] = int(str(row[0]))
    return counts


def test_copy_of_the_migrated_template_equals_a_fresh_migration(
    pg_admin_dsn: str, migrated_template: str, empty_db: str
) -> None:
    """Tests get ``migrated_db`` as a copy of one migrated template (tests/conftest.py).

    A copy must be what migrating an empty database gives: tables, indexes, functions,
    triggers, grants (the database's own too, which CREATE DATABASE does not copy) and the
    rows the migration and the area import leave.
    """
    pg_dump = require_tool("pg_dump", "postgresql-client")
    _migrate_with_areas(empty_db, "off")
    copies = clone_db(pg_admin_dsn, migrated_template)
    copy = next(copies)
    try:
        fresh_schema, copy_schema = _schema_dump(pg_dump, empty_db), _schema_dump(pg_dump, copy)
        assert any("GRANT CONNECT ON DATABASE <db> TO cityops_readonly" in s for s in fresh_schema)
        assert copy_schema == fresh_schema
        with _conn(empty_db) as fresh, _conn(copy) as copied:
            for query in _SEEDED_SQL:
                assert copied.execute(query).fetchall() == fresh.execute(query).fetchall(), query
            assert _row_counts(copied) == _row_counts(fresh)
    finally:
        copies.close()
