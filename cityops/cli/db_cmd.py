"""`cityops db`: schema migrations, storage status and partition maintenance."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cityops.cli.common import out, settings_of

app = typer.Typer(
    help="Database schema, storage path and partition maintenance.", no_args_is_help=True
)


@app.command("migrate")
def db_migrate(ctx: typer.Context) -> None:
    """Apply pending schema migrations (safe to re-run) and create partitions ahead."""
    from cityops.db import migrate, pool, storage

    settings = settings_of(ctx)
    with pool.connect(settings.db, autocommit=True) as conn:
        ran = migrate.migrate(conn, settings.storage)
        path = storage.recorded_path(conn)
    if ran:
        for m in ran:
            out.print(f"applied {m.version:04d}_{m.name}")
    else:
        out.print("schema is up to date")
    out.print(f"storage path: {path.value if path else '?'}")


@app.command("status")
def db_status(
    ctx: typer.Context,
    exact: Annotated[bool, typer.Option(help="Count rows exactly instead of estimating.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the storage path, migration level, partitions/chunks and row counts."""
    from cityops.db import pool, status

    settings = settings_of(ctx)
    with pool.connect(settings.db, autocommit=True) as conn:
        st = status.collect(conn, exact=exact)
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "server_version": st.server_version,
                    "database": st.database,
                    "storage_path": st.path.value if st.path else None,
                    "timescaledb_version": st.timescaledb_version,
                    "migration_version": st.migration_version,
                    "pending_migrations": st.pending,
                    "tables": [
                        {
                            "name": t.name,
                            "rows": t.rows,
                            "exact": t.exact,
                            "partitions": t.partitions,
                            "compressed": t.compressed,
                            "range_start": t.range_start.isoformat() if t.range_start else None,
                            "range_end": t.range_end.isoformat() if t.range_end else None,
                        }
                        for t in st.tables
                    ],
                }
            )
        )
        return
    out.print(f"database: {st.database} (PostgreSQL {st.server_version})")
    if st.path is None:
        out.print("storage path: none yet (run `cityops db migrate`)")
    else:
        detail = (
            f"TimescaleDB {st.timescaledb_version}"
            if st.timescaledb_version
            else "native range partitioning"
            + (
                f"; TimescaleDB {st.timescaledb_available} available but not loaded"
                if st.timescaledb_available
                else ""
            )
        )
        out.print(f"storage path: {st.path.value} ({detail})")
    level = f"{st.migration_version:04d}_{st.migration_name}" if st.migration_version else "none"
    out.print(f"migration level: {level}; pending: {', '.join(st.pending) or 'none'}")
    if not st.tables:
        return
    table = Table("table", "rows", "partitions/chunks", "compressed", "range (UTC)")
    for t in st.tables:
        rows = f"{t.rows:,}" if t.exact else f"~{t.rows:,}"
        span = (
            f"{t.range_start:%Y-%m-%d} .. {t.range_end:%Y-%m-%d}"
            if t.range_start and t.range_end
            else ""
        )
        table.add_row(
            t.name,
            rows,
            "" if t.partitions is None else str(t.partitions),
            "" if t.compressed is None else str(t.compressed),
            span,
        )
    out.print(table)


@app.command("maintain")
def db_maintain(ctx: typer.Context) -> None:
    """Create partitions ahead and drop expired ones (plain path); sync policies (TimescaleDB)."""
    from cityops.db import pool, storage

    settings = settings_of(ctx)
    with pool.connect(settings.db, autocommit=True) as conn:
        report = storage.maintain(conn, settings.storage)
    out.print(
        f"created {len(report.created)} partition(s), dropped {len(report.dropped)}, "
        f"moved {report.moved_rows} row(s) out of DEFAULT, expired "
        f"{report.expired_default_rows} DEFAULT row(s)"
    )
    for name in report.created:
        out.print(f"  + {name}")
    for name in report.dropped:
        out.print(f"  - {name}")
    for line in report.policies:
        out.print(f"  policy {line}")
