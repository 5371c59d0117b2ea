"""Migration 0010: the read-only group role -- SELECT only, no API key hashes, idempotent, and
safe when several databases of one server migrate at the same moment (roles are cluster-wide)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from importlib import resources

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from cityops.db import migrate
from tests.conftest import _create_db, make_settings

pytestmark = pytest.mark.pg

MIGRATION = (resources.files("cityops.db") / "migrations" / "0010_readonly_role.sql").read_text(
    encoding="utf-8"
)


@pytest.fixture
def reader(migrated_db: str) -> Iterator[str]:
    """DSN of a fresh login role that is a member of cityops_readonly."""
    role = f"reader_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE cityops_readonly").format(sql.Identifier(role))
        )
    try:
        yield make_conninfo(migrated_db, user=role)
    finally:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_group_role_is_nologin_and_reads_only(migrated_db: str, reader: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        row = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole FROM pg_roles "
            "WHERE rolname = 'cityops_readonly'"
        ).fetchone()
        assert row == (False, False, False)
        conn.execute("INSERT INTO devices (device_id, kind, area_code) VALUES ('SL-1', "
                     "'streetlight', 'CY-JW')")  # fmt: skip
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM areas").fetchone() == (43,)
        # partitioned readings: the parent's grant covers every partition
        conn.execute("SELECT count(*) FROM streetlight_readings")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO dead_letters (topic, payload, reason) VALUES ('t', 'x', 'r')")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE devices SET status = 'retired'")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT key_hash FROM api_keys")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE public.sneaky (x int)")


def test_tables_created_later_are_readable(migrated_db: str, reader: str) -> None:
    """Default privileges: a table a later migration creates is readable without a new grant."""
    with psycopg.connect(migrated_db) as conn:
        conn.execute("CREATE TABLE later_table (x int)")
        conn.execute("INSERT INTO later_table VALUES (1)")
    with psycopg.connect(reader) as conn:
        assert conn.execute("SELECT x FROM later_table").fetchone() == (1,)


def test_migration_is_idempotent(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(MIGRATION.encode())  # type: ignore[call-overload]
        conn.execute(MIGRATION.encode())  # type: ignore[call-overload]
        assert conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'cityops_readonly'"
        ).fetchone() == (1,)


@pytest.mark.slow
def test_concurrent_migrations_of_several_databases(pg_admin_dsn: str) -> None:
    """The role may be created by another database's migration at the same moment."""
    gens = [_create_db(pg_admin_dsn) for _ in range(4)]
    dsns = [next(g) for g in gens]
    errors_seen: list[BaseException] = []
    barrier = threading.Barrier(len(dsns))

    def run(dsn: str) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                barrier.wait(30)
                migrate.migrate(conn, make_settings(dsn, timescaledb="off").storage)
        except BaseException as err:  # collected and re-raised in the test thread
            errors_seen.append(err)

    try:
        threads = [threading.Thread(target=run, args=(d,)) for d in dsns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors_seen, errors_seen
        for dsn in dsns:
            with psycopg.connect(dsn) as conn:
                ok = conn.execute(
                    "SELECT has_table_privilege('cityops_readonly', 'devices', 'SELECT'), "
                    "has_database_privilege('cityops_readonly', current_database(), 'CONNECT')"
                ).fetchone()
                assert ok == (True, True)
    finally:
        for g in gens:
            for _ in g:  # runs the generator's DROP DATABASE
                pass


def test_role_creation_block_survives_a_race(pg_admin_dsn: str) -> None:
    """The migration's CREATE ROLE block, run by 6 sessions at once for a role nobody has yet.

    (cityops_readonly itself usually exists already on a shared test server, so the race is
    exercised with the same block under a fresh name.)
    """
    block = MIGRATION[MIGRATION.index("DO $$") : MIGRATION.index("$$;") + 3]
    assert "CREATE ROLE cityops_readonly NOLOGIN" in block
    role = f"ro_race_{uuid.uuid4().hex[:10]}"
    racing = block.replace("cityops_readonly", role)
    barrier = threading.Barrier(6)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
                barrier.wait(30)
                conn.execute(racing.encode())  # type: ignore[call-overload]
        except BaseException as err:  # collected and re-raised in the test thread
            failures.append(err)

    threads = [threading.Thread(target=run) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not failures, failures
        with psycopg.connect(pg_admin_dsn) as conn:
            assert conn.execute(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)
            ).fetchall() == [(False,)]
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
