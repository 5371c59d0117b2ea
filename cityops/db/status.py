"""What `cityops db status` reports: storage path, migration level, partitions, row counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from cityops.db import migrate, storage

SERVER_SQL = "SELECT current_setting('server_version'), current_database()"

# Tables whose size an operator wants at a glance, besides the time-series ones.
REGISTRY_TABLES = ("areas", "devices", "complaints", "dead_letters", "rates_hourly")

ESTIMATE_SQL = """
SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, bool_or(c.reltuples < 0)
FROM pg_class c
WHERE c.oid = %s::regclass
   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = %s::regclass)
"""

CHUNKS_SQL = """
SELECT count(*), count(*) FILTER (WHERE is_compressed), min(range_start), max(range_end)
FROM timescaledb_information.chunks WHERE hypertable_name = %s
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class TableStatus:
    """Size and layout of one table."""

    name: str
    rows: int
    exact: bool
    partitions: int | None = None
    compressed: int | None = None
    range_start: datetime | None = None
    range_end: datetime | None = None


@dataclass(kw_only=True)
class DatabaseStatus:
    """Everything `cityops db status` prints."""

    server_version: str
    database: str
    path: storage.StoragePath | None
    timescaledb_version: str | None
    timescaledb_available: str | None
    migration_version: int | None
    migration_name: str | None
    pending: list[str] = field(default_factory=list)
    tables: list[TableStatus] = field(default_factory=list)


# A hypertable's rows live in its chunks, and a compressed chunk's in its compressed table: the
# statistics of the parent (and of the chunks' heaps) miss them. TimescaleDB's own estimate
# counts compressed rows too; it is 0 before any ANALYZE, and then the plain estimate (or an
# exact count, when the statistics say they were never gathered) decides.
APPROXIMATE_SQL = "SELECT approximate_row_count(%s::regclass)"


def _count(
    conn: psycopg.Connection[Any], table: str, exact: bool, *, hypertable: bool = False
) -> tuple[int, bool]:
    if not exact and hypertable:
        row = conn.execute(APPROXIMATE_SQL, (table,)).fetchone()
        if row is not None and row[0] is not None and row[0] > 0:
            return int(row[0]), False
    if not exact:
        row = conn.execute(ESTIMATE_SQL, (table, table)).fetchone()
        if row is not None and not row[1]:
            return int(row[0]), False
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return (int(row[0]) if row else 0), True


def collect(conn: psycopg.Connection[Any], *, exact: bool = False) -> DatabaseStatus:
    """Gather the status of the database ``conn`` points at."""
    server_row = storage.fetch_one(conn, SERVER_SQL)
    probe = storage.probe_timescaledb(conn)
    path = storage.recorded_path(conn)
    done = migrate.applied(conn)
    status = DatabaseStatus(
        server_version=server_row[0],
        database=server_row[1],
        path=path,
        timescaledb_version=probe.installed_version,
        timescaledb_available=probe.available_version,
        migration_version=done[-1].version if done else None,
        migration_name=done[-1].name if done else None,
        pending=[f"{m.version:04d}_{m.name}" for m in migrate.pending(conn)],
    )
    if path is None:
        return status
    for table, _time_column, _days in conn.execute(storage.TIMESERIES_SQL).fetchall():
        hypertable = path is storage.StoragePath.TIMESCALEDB
        rows, was_exact = _count(conn, table, exact, hypertable=hypertable)
        if hypertable:
            chunks_row = storage.fetch_one(conn, CHUNKS_SQL, (table,))
            status.tables.append(
                TableStatus(
                    name=table,
                    rows=rows,
                    exact=was_exact,
                    partitions=int(chunks_row[0]),
                    compressed=int(chunks_row[1]),
                    range_start=chunks_row[2],
                    range_end=chunks_row[3],
                )
            )
        else:
            parts = [p for p in storage.list_partitions(conn, table) if not p.is_default]
            status.tables.append(
                TableStatus(
                    name=table,
                    rows=rows,
                    exact=was_exact,
                    partitions=len(parts),
                    range_start=min((p.start for p in parts if p.start), default=None),
                    range_end=max((p.end for p in parts if p.end), default=None),
                )
            )
    for table in REGISTRY_TABLES:
        rows, was_exact = _count(conn, table, exact)
        status.tables.append(TableStatus(name=table, rows=rows, exact=was_exact))
    return status
