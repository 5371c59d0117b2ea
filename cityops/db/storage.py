"""Two storage paths for time series: TimescaleDB when present, native partitions otherwise.

Detection never attempts ``CREATE EXTENSION`` on a server that has not preloaded TimescaleDB: it
reads ``pg_available_extensions``, ``pg_extension`` and two settings that exist only when the
library is loaded: ``timescaledb.license`` (once the extension is created in the database) and
the preloaded loader's own ``timescaledb.disable_load`` (before that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from cityops.errors import DatabaseError
from cityops.settings import StorageSettings


class StoragePath(StrEnum):
    """How time-series tables are stored."""

    TIMESCALEDB = "timescaledb"
    PARTITIONED = "partitioned"


@dataclass(frozen=True, kw_only=True, slots=True)
class TimescaleProbe:
    """What the server says about TimescaleDB."""

    available_version: str | None
    installed_version: str | None
    loaded: bool

    @property
    def usable(self) -> bool:
        """Installed in this database, or available and preloaded so it can be created."""
        return self.loaded and (
            self.installed_version is not None or self.available_version is not None
        )


PROBE_SQL = """
SELECT
    (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
    (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
    current_setting('timescaledb.license', true) IS NOT NULL
        OR current_setting('timescaledb.disable_load', true) IS NOT NULL
"""

BOOTSTRAP_SQL = """
CREATE TABLE IF NOT EXISTS cityops_storage (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    path       text NOT NULL CHECK (path IN ('timescaledb', 'partitioned')),
    chosen_at  timestamptz NOT NULL DEFAULT now()
)
"""

RECORDED_PATH_SQL = "SELECT path FROM cityops_storage"

TIMESERIES_SQL = """
SELECT table_name, time_column, partition_days FROM timeseries_tables ORDER BY table_name
"""

PARTITIONS_SQL = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = %s::regclass
ORDER BY c.relname
"""

_BOUND_RE = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")

# Before 2.18.1, INSERT ... ON CONFLICT DO NOTHING into a compressed chunk stopped at the first
# conflicting row and inserted none of the new rows after it (timescale/timescaledb#7672, fixed
# by #7673). Ingest's redelivery path is exactly that statement, and the hypertables are always
# compressed, so an older TimescaleDB would silently lose readings redelivered after an outage
# longer than the compression age.
MIN_TIMESCALEDB = (2, 18, 1)
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """``'2.17.2'`` (or ``'2.18.0-dev'``) as a comparable (major, minor, patch)."""
    match = _VERSION_RE.match(text.strip())
    if match is None:
        raise DatabaseError(f"cannot read the TimescaleDB version {text!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def check_timescaledb_version(version: str) -> None:
    """Refuse a TimescaleDB that loses rows on ON CONFLICT DO NOTHING into compressed chunks."""
    if parse_version(version) >= MIN_TIMESCALEDB:
        return
    minimum = ".".join(map(str, MIN_TIMESCALEDB))
    raise DatabaseError(
        f"TimescaleDB {version} is older than {minimum}: on it INSERT ... ON CONFLICT DO NOTHING "
        "into a compressed chunk silently drops the new rows after the first conflict "
        "(timescale/timescaledb#7672), so readings redelivered after an outage would be lost. "
        f"Install TimescaleDB {minimum} or later and run ALTER EXTENSION timescaledb UPDATE in "
        "this database, or set CITYOPS_STORAGE_TIMESCALEDB=off (new databases only) to use "
        "native partitions"
    )


WORKER_SLOTS_SQL = """
SELECT current_setting('max_worker_processes')::int,
       current_setting('max_parallel_workers')::int,
       current_setting('timescaledb.max_background_workers', true)::int
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerSlots:
    """The server's background-worker settings as TimescaleDB's jobs see them.

    TimescaleDB runs each job in a PostgreSQL background worker taken from
    ``max_worker_processes``, which parallel queries share. With PostgreSQL's default of 8 the
    8 policies cityops creates per database (compression and retention on four tables) do not
    all get a worker when they fall due together (as they do right after ``db migrate``): the
    scheduler logs ``failed to launch job ...: failed to start a background worker`` and
    records the run as failed. TimescaleDB's guidance is ``max_worker_processes`` of at least
    ``timescaledb.max_background_workers + max_parallel_workers`` (``timescaledb-tune`` sets it).
    """

    max_worker_processes: int
    max_parallel_workers: int
    max_background_workers: int

    @property
    def wanted(self) -> int:
        """The smallest ``max_worker_processes`` TimescaleDB's guidance allows."""
        return self.max_background_workers + self.max_parallel_workers

    @property
    def short(self) -> bool:
        """True when background jobs can fail to start for lack of a worker."""
        return self.max_worker_processes < self.wanted

    def as_log(self) -> dict[str, int | str]:
        """Fields for the warning ``db migrate`` logs."""
        return {
            "max_worker_processes": self.max_worker_processes,
            "wanted": self.wanted,
            "hint": (
                "set max_worker_processes >= timescaledb.max_background_workers + "
                "max_parallel_workers (or run timescaledb-tune) and restart PostgreSQL; until "
                "then TimescaleDB jobs can fail to start (docs/storage.md)"
            ),
        }


def worker_slots(conn: psycopg.Connection[Any]) -> WorkerSlots | None:
    """The worker settings, or None when TimescaleDB is not loaded."""
    row = fetch_one(conn, WORKER_SLOTS_SQL)
    if row[2] is None:
        return None
    return WorkerSlots(
        max_worker_processes=int(row[0]),
        max_parallel_workers=int(row[1]),
        max_background_workers=int(row[2]),
    )


def fetch_one(
    conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()
) -> tuple[Any, ...]:
    """The single row a query must return."""
    row = conn.execute(query.encode(), params).fetchone()
    if row is None:
        raise DatabaseError(f"query returned no row: {query.strip().splitlines()[0]}")
    return tuple(row)


def probe_timescaledb(conn: psycopg.Connection[Any]) -> TimescaleProbe:
    """Ask the server whether TimescaleDB is available, installed and loaded."""
    row = fetch_one(conn, PROBE_SQL)
    available, installed, loaded = row
    return TimescaleProbe(
        available_version=available, installed_version=installed, loaded=bool(loaded)
    )


def choose_path(
    conn: psycopg.Connection[Any], storage: StorageSettings
) -> tuple[StoragePath, TimescaleProbe]:
    """Decide the path for a database being set up; create the extension when it will be used."""
    probe = probe_timescaledb(conn)
    if storage.timescaledb == "off":
        return StoragePath.PARTITIONED, probe
    if probe.usable:
        version = probe.installed_version or probe.available_version
        if version is not None:
            check_timescaledb_version(version)
        if probe.installed_version is None:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return StoragePath.TIMESCALEDB, probe_timescaledb(conn)
    if storage.timescaledb == "require":
        why = (
            "the extension is not available on the server"
            if probe.available_version is None
            else "the extension is available but not in shared_preload_libraries"
        )
        raise DatabaseError(f"storage.timescaledb is 'require' but {why}")
    return StoragePath.PARTITIONED, probe


def recorded_path(conn: psycopg.Connection[Any]) -> StoragePath | None:
    """The path this database was set up with, or None before the first migration."""
    if conn.execute("SELECT to_regclass('cityops_storage')").fetchone() == (None,):
        return None
    row = conn.execute(RECORDED_PATH_SQL).fetchone()
    return StoragePath(row[0]) if row else None


@dataclass(frozen=True, kw_only=True, slots=True)
class Partition:
    """One range partition of a time-series table (plain path)."""

    name: str
    start: datetime | None
    end: datetime | None

    @property
    def is_default(self) -> bool:
        """The DEFAULT partition, which catches rows no range partition covers."""
        return self.start is None


@dataclass(kw_only=True)
class MaintenanceReport:
    """What a maintenance run did."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_rows: int = 0
    expired_default_rows: int = 0
    policies: list[str] = field(default_factory=list)


def _parse_ts(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def list_partitions(conn: psycopg.Connection[Any], table: str) -> list[Partition]:
    """The partitions of ``table`` with their bounds (the session runs in UTC)."""
    out = []
    for name, bound in conn.execute(PARTITIONS_SQL, (table,)).fetchall():
        if bound == "DEFAULT":
            out.append(Partition(name=name, start=None, end=None))
            continue
        match = _BOUND_RE.search(bound)
        if match is None:
            raise DatabaseError(f"partition {name} of {table} has an unexpected bound: {bound}")
        out.append(
            Partition(name=name, start=_parse_ts(match.group(1)), end=_parse_ts(match.group(2)))
        )
    return out


def partition_start(ts: datetime, days: int) -> datetime:
    """Start of the partition holding ``ts``: epoch-aligned buckets of ``days`` UTC days."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    index = (ts - epoch) // timedelta(days=days)
    return epoch + index * timedelta(days=days)


def partition_name(table: str, start: datetime) -> str:
    """Partition naming convention: ``{table}_p{YYYYMMDD}`` of the UTC start day."""
    return f"{table}_p{start:%Y%m%d}"


def _create_partition(
    conn: psycopg.Connection[Any], table: str, time_column: str, start: datetime, end: datetime
) -> int:
    """Create one partition, moving any rows of its range out of the default partition first."""
    name = partition_name(table, start)
    default = f"{table}_default"
    ident, part, dflt, tcol = (sql.Identifier(n) for n in (table, name, default, time_column))
    conn.execute(
        sql.SQL("CREATE TABLE {part} (LIKE {tbl} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
            part=part, tbl=ident
        )
    )
    moved = conn.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {dflt} WHERE {t} >= %s AND {t} < %s RETURNING *) "
            "INSERT INTO {part} SELECT * FROM moved"
        ).format(dflt=dflt, t=tcol, part=part),
        (start, end),
    ).rowcount
    conn.execute(
        sql.SQL("ALTER TABLE {tbl} ATTACH PARTITION {part} FOR VALUES FROM ({a}) TO ({b})").format(
            tbl=ident, part=part, a=sql.Literal(start), b=sql.Literal(end)
        )
    )
    return max(moved, 0)


def maintain_partitions(
    conn: psycopg.Connection[Any], storage: StorageSettings, now: datetime | None = None
) -> MaintenanceReport:
    """Plain path: create partitions ahead, file stray rows from DEFAULT, drop expired ones.

    Runs each table in its own transaction so a long run never holds every lock at once;
    ``conn`` must be in autocommit mode.
    """
    if not conn.autocommit:
        raise DatabaseError("partition maintenance needs an autocommit connection")
    now = now or datetime.now(UTC)
    report = MaintenanceReport()
    cutoff = now - timedelta(days=storage.retention_days)
    tables = conn.execute(TIMESERIES_SQL).fetchall()
    for table, time_column, days in tables:
        with conn.transaction():
            # One maintainer at a time per table; ingest keeps writing meanwhile.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"maintain:{table}",))
            step = timedelta(days=days)
            existing = list_partitions(conn, table)
            have = {p.start for p in existing if not p.is_default}
            wanted: set[datetime] = set()
            first = partition_start(now, days) - step
            for i in range(storage.premake_partitions + 2):
                wanted.add(first + i * step)
            # Rows that landed in DEFAULT (late or backfilled data) get their own partitions.
            for (bucket,) in conn.execute(
                sql.SQL(
                    "SELECT DISTINCT to_timestamp(floor(extract(epoch FROM {t}) / %s) * %s) "
                    "FROM {dflt} WHERE {t} >= %s"
                ).format(t=sql.Identifier(time_column), dflt=sql.Identifier(f"{table}_default")),
                (days * 86400, days * 86400, cutoff),
            ).fetchall():
                wanted.add(bucket)
            for start in sorted(wanted - have):
                if start + step <= cutoff:
                    continue
                report.moved_rows += _create_partition(
                    conn, table, time_column, start, start + step
                )
                report.created.append(partition_name(table, start))
            for p in existing:
                if not p.is_default and p.end is not None and p.end <= cutoff:
                    conn.execute(
                        sql.SQL("ALTER TABLE {tbl} DETACH PARTITION {part}").format(
                            tbl=sql.Identifier(table), part=sql.Identifier(p.name)
                        )
                    )
                    conn.execute(sql.SQL("DROP TABLE {part}").format(part=sql.Identifier(p.name)))
                    report.dropped.append(p.name)
            report.expired_default_rows += max(
                conn.execute(
                    sql.SQL("DELETE FROM {dflt} WHERE {t} < %s").format(
                        dflt=sql.Identifier(f"{table}_default"), t=sql.Identifier(time_column)
                    ),
                    (cutoff,),
                ).rowcount,
                0,
            )
    return report


TSDB_JOBS_SQL = """
SELECT proc_name, config FROM timescaledb_information.jobs
WHERE hypertable_name = %s AND proc_name IN ('policy_retention', 'policy_compression')
"""


def maintain_timescaledb(
    conn: psycopg.Connection[Any], storage: StorageSettings
) -> MaintenanceReport:
    """TimescaleDB path: bring retention and compression policies in line with the settings."""
    report = MaintenanceReport()
    tables = conn.execute(TIMESERIES_SQL).fetchall()
    for table, _time_column, _days in tables:
        with conn.transaction():
            jobs = dict(conn.execute(TSDB_JOBS_SQL, (table,)).fetchall())
            want = {
                "policy_retention": ("drop_after", f"{storage.retention_days} days"),
                "policy_compression": ("compress_after", f"{storage.compress_after_days} days"),
            }
            for proc, (key, interval) in want.items():
                current = (jobs.get(proc) or {}).get(key)
                if current is not None and _same_interval(conn, current, interval):
                    continue
                remove, add = (
                    ("remove_retention_policy", "add_retention_policy")
                    if proc == "policy_retention"
                    else ("remove_compression_policy", "add_compression_policy")
                )
                conn.execute(
                    sql.SQL("SELECT {f}(%s::regclass, if_exists => true)").format(
                        f=sql.Identifier(remove)
                    ),
                    (table,),
                )
                conn.execute(
                    sql.SQL("SELECT {f}(%s::regclass, %s::interval)").format(f=sql.Identifier(add)),
                    (table, interval),
                )
                report.policies.append(f"{table}: {proc} {key}={interval}")
    return report


def _same_interval(conn: psycopg.Connection[Any], a: str, b: str) -> bool:
    row = conn.execute("SELECT %s::interval = %s::interval", (a, b)).fetchone()
    return bool(row and row[0])


def maintain(
    conn: psycopg.Connection[Any], storage: StorageSettings, now: datetime | None = None
) -> MaintenanceReport:
    """Run the maintenance that fits the database's recorded storage path."""
    path = recorded_path(conn)
    if path is None:
        raise DatabaseError("the database has no cityops schema yet; run `cityops db migrate`")
    if path is StoragePath.TIMESCALEDB:
        return maintain_timescaledb(conn, storage)
    return maintain_partitions(conn, storage, now)
