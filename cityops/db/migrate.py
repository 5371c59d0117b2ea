"""A minimal migration runner: numbered SQL files, a migrations table, checksums, one lock.

Files live in ``cityops/db/migrations`` as ``NNNN_name.sql``. Each pending file runs in its own
transaction and is recorded in ``schema_migrations`` with a SHA-256 of its text; an applied file
whose text changed afterwards stops the run (edit schemas by adding a file, never by editing one).
A session-level advisory lock lets several processes call ``migrate`` at start-up safely.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
import structlog

from cityops.db import storage
from cityops.errors import DatabaseError, MigrationError
from cityops.settings import StorageSettings

log = structlog.get_logger(__name__)

_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6369_7479  # "city": the advisory lock every migrator takes

MIGRATIONS_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""

APPLIED_SQL = "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
RECORD_SQL = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"
RECORD_PATH_SQL = (
    "INSERT INTO cityops_storage (path) VALUES (%s) ON CONFLICT (singleton) DO NOTHING"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class AppliedMigration:
    """A row of ``schema_migrations``."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


def discover() -> list[Migration]:
    """The migration files shipped with the package, in version order."""
    found: list[Migration] = []
    folder = resources.files("cityops.db") / "migrations"
    for entry in folder.iterdir():
        match = _NAME_RE.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(
                version=int(match.group(1)),
                name=match.group(2),
                sql=entry.read_text(encoding="utf-8"),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return found


def applied(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    """Migrations recorded in the database (empty before the first run)."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return []
    return [
        AppliedMigration(version=v, name=n, checksum=c, applied_at=a)
        for v, n, c, a in conn.execute(APPLIED_SQL).fetchall()
    ]


def migrate(conn: psycopg.Connection[Any], settings: StorageSettings) -> list[Migration]:
    """Apply every pending migration; return the ones applied. Safe to call repeatedly.

    ``conn`` must be in autocommit mode; each migration commits in its own transaction.
    """
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection")
    migrations = discover()
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        with conn.transaction():
            conn.execute(MIGRATIONS_TABLE_SQL)
            conn.execute(storage.BOOTSTRAP_SQL)
            path = storage.recorded_path(conn)
            if path is None:
                path, probe = storage.choose_path(conn, settings)
                conn.execute(RECORD_PATH_SQL, (path.value,))
                log.info(
                    "storage_path_chosen",
                    path=path.value,
                    timescaledb=probe.installed_version or probe.available_version,
                    loaded=probe.loaded,
                )
            else:
                _check_path_still_usable(conn, path)
        done = {m.version: m for m in applied(conn)}
        _check_checksums(migrations, done)
        ran: list[Migration] = []
        for migration in migrations:
            if migration.version in done:
                continue
            with conn.transaction():
                _set_storage_gucs(conn, settings)
                try:
                    conn.execute(migration.sql.encode("utf-8"))
                except psycopg.Error as err:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql failed: "
                        f"{str(err).strip()}"
                    ) from err
                conn.execute(RECORD_SQL, (migration.version, migration.name, migration.checksum))
            log.info("migration_applied", version=migration.version, name=migration.name)
            ran.append(migration)
        if path is storage.StoragePath.PARTITIONED:
            report = storage.maintain_partitions(conn, settings)
            if report.created:
                log.info("partitions_created", count=len(report.created))
        else:
            slots = storage.worker_slots(conn)
            if slots is not None and slots.short:
                log.warning("timescaledb_worker_slots_short", **slots.as_log())
        return ran
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _set_storage_gucs(conn: psycopg.Connection[Any], settings: StorageSettings) -> None:
    for name, value in (
        ("cityops.partition_days", settings.partition_days),
        ("cityops.retention_days", settings.retention_days),
        ("cityops.compress_after_days", settings.compress_after_days),
    ):
        conn.execute("SELECT set_config(%s, %s, true)", (name, str(value)))


def _check_checksums(migrations: list[Migration], done: dict[int, AppliedMigration]) -> None:
    shipped = {m.version: m for m in migrations}
    for version, row in done.items():
        migration = shipped.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{row.name} which this version of "
                "cityops does not ship; it was migrated by a newer cityops"
            )
        if migration.checksum != row.checksum:
            raise MigrationError(
                f"migration {version:04d}_{migration.name}.sql changed after it was applied; "
                "add a new migration instead of editing an applied one"
            )


def _check_path_still_usable(conn: psycopg.Connection[Any], path: storage.StoragePath) -> None:
    if path is storage.StoragePath.TIMESCALEDB:
        probe = storage.probe_timescaledb(conn)
        if not probe.loaded or probe.installed_version is None:
            raise MigrationError(
                "this database was set up on TimescaleDB but the extension is not loaded now; "
                "add timescaledb to shared_preload_libraries and restart PostgreSQL"
            )
        try:
            storage.check_timescaledb_version(probe.installed_version)
        except DatabaseError as err:
            raise MigrationError(str(err)) from err


def pending(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Shipped migrations not yet applied to this database."""
    done = {m.version for m in applied(conn)}
    return [m for m in discover() if m.version not in done]
