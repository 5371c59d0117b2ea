"""`cityops areas` and `cityops devices`: registry import and listing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cityops import registry
from cityops.cli.common import err_console, out, settings_of

areas_app = typer.Typer(help="Street/township registry.", no_args_is_help=True)
devices_app = typer.Typer(help="Device registry.", no_args_is_help=True)


def _print_report(report: registry.ImportReport) -> None:
    for e in report.errors:
        err_console.print(f"{report.source}: {e.location}: {e.message}", highlight=False)
    out.print(
        f"{report.source}: {report.total} row(s) read, {report.stored} stored, "
        f"{len(report.errors)} rejected"
    )


@areas_app.command("import")
def areas_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV, JSON or JSON Lines file.", exists=True, dir_okay=False)
    ],
    fmt: Annotated[str | None, typer.Option("--format", help="csv, json or jsonl.")] = None,
) -> None:
    """Import streets/townships; bad rows are reported with their line and the rest stored."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        report = registry.import_areas(conn, registry.read_records(file, fmt), str(file))
    _print_report(report)
    if report.errors:
        raise typer.Exit(1)


@areas_app.command("reference")
def areas_reference(ctx: typer.Context) -> None:
    """Load the shipped Chaoyang reference units (43 streets/townships)."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        report = registry.import_areas(
            conn, registry.reference_area_records(), registry.REFERENCE_AREAS
        )
    _print_report(report)
    if report.errors:
        raise typer.Exit(1)


@areas_app.command("list")
def areas_list(ctx: typer.Context) -> None:
    """List registered areas with their device counts."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        rows = conn.execute(
            "SELECT a.code, a.name_zh, a.name_en, a.type, count(d.device_id) "
            "FROM areas a LEFT JOIN devices d ON d.area_code = a.code "
            "GROUP BY a.code ORDER BY a.code"
        ).fetchall()
    table = Table("code", "name", "name_en", "type", "devices")
    for code, zh, en, typ, n in rows:
        table.add_row(code, zh, en or "", typ, str(n))
    out.print(table)


@devices_app.command("import")
def devices_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV, JSON or JSON Lines file.", exists=True, dir_okay=False)
    ],
    fmt: Annotated[str | None, typer.Option("--format", help="csv, json or jsonl.")] = None,
) -> None:
    """Import devices; bad rows are reported with their line and the rest stored."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        report = registry.import_devices(conn, registry.read_records(file, fmt), str(file))
    _print_report(report)
    if report.errors:
        raise typer.Exit(1)


@devices_app.command("history")
def devices_history(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV, JSON or JSON Lines file.", exists=True, dir_okay=False)
    ],
    fmt: Annotated[str | None, typer.Option("--format", help="csv, json or jsonl.")] = None,
) -> None:
    """Import dated registry history: device_id,event,on_date[,to_area][,from_area][,note].

    event is install, commission, decommission or move (a move names to_area). Reports and
    recomputed rates for a past period count the devices registered then.
    """
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        report = registry.import_events(conn, registry.read_records(file, fmt), str(file))
    _print_report(report)
    if report.errors:
        raise typer.Exit(1)


@devices_app.command("list")
def devices_list(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="streetlight, manhole, heating, charger")] = None,
    area: Annotated[str | None, typer.Option(help="Area code, e.g. CY-JW.")] = None,
    status: Annotated[str | None, typer.Option(help="in_service, maintenance, retired")] = None,
    gateway: Annotated[str | None, typer.Option(help="Gateway id.")] = None,
    after: Annotated[str | None, typer.Option(help="Start after this device id (paging).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List registered devices, filtered, in id order."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        rows = registry.list_devices(
            conn, kind=kind, area=area, status=status, gateway=gateway, after=after, limit=limit
        )
    if as_json:
        for r in rows:
            sys.stdout.write(
                json.dumps(
                    {
                        "device_id": r.device_id,
                        "kind": r.kind,
                        "area_code": r.area_code,
                        "lat": r.lat,
                        "lon": r.lon,
                        "gateway_id": r.gateway_id,
                        "install_date": r.install_date.isoformat() if r.install_date else None,
                        "status": r.status,
                        "attributes": r.attributes,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        return
    table = Table("device_id", "kind", "area", "gateway", "status", "attributes")
    for r in rows:
        table.add_row(
            r.device_id,
            r.kind,
            r.area_code,
            r.gateway_id or "",
            r.status,
            json.dumps(r.attributes, ensure_ascii=False),
        )
    out.print(table)
    out.print(f"{len(rows)} device(s)")
