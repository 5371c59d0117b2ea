"""`cityops rates`: recompute hourly rates from stored readings, and show rates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cityops.catalog import Kind
from cityops.cli.common import out, settings_of
from cityops.errors import ValidationError

rates_app = typer.Typer(help="Hourly rates (numerators and denominators).", no_args_is_help=True)


def _when(text: str, zone: str) -> datetime:
    """An ISO date or date-time; without a zone it is local time (the configured zone)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as err:
        raise ValidationError(
            f"{text!r} is not an ISO date or date-time (e.g. 2026-01-31 or 2026-01-31T18:00+08:00)"
        ) from err
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(zone))
    return value.astimezone(UTC)


@rates_app.command("recompute")
def recompute(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="Start (ISO; local time without a zone).")],
    end: Annotated[str, typer.Option("--to", help="End, exclusive (ISO).")],
    area: Annotated[str | None, typer.Option("--area", help="Only this area code.")] = None,
    kind: Annotated[list[Kind] | None, typer.Option("--kind", help="Only this kind.")] = None,
    chunk_hours: Annotated[int, typer.Option(min=1, max=24 * 31, help="Hours per chunk.")] = 24,
) -> None:
    """Recompute the hours in [--from, --to) from stored readings (idempotent)."""
    from cityops.db import pool
    from stream import recompute as batch

    settings = settings_of(ctx)
    lo, hi = _when(start, settings.timezone), _when(end, settings.timezone)
    if hi <= lo:
        raise ValidationError("--to must be after --from")
    kinds = tuple(kind) if kind else tuple(Kind)
    hours = (batch.ceil_hour(hi) - batch.floor_hour(lo)) // 3_600_000
    with (
        pool.connect(settings.db, autocommit=True) as conn,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} h"),
            TextColumn("{task.fields[readings]} readings, {task.fields[rows]} rows"),
            TimeElapsedColumn(),
            console=out,
        ) as progress,
    ):
        tasks = {k: progress.add_task(k.value, total=hours, readings=0, rows=0) for k in kinds}

        def advance(done: batch.ChunkDone) -> None:
            task = progress.tasks[tasks[done.kind]]
            progress.update(
                tasks[done.kind],
                advance=(done.end_ms - done.start_ms) // 3_600_000,
                readings=task.fields["readings"] + done.readings,
                rows=task.fields["rows"] + done.rows,
            )

        written = batch.recompute(
            conn,
            settings,
            lo,
            hi,
            kinds=kinds,
            area=area,
            chunk_hours=chunk_hours,
            progress=advance,
        )
    out.print(f"{written} rate rows written for {hours} hour(s)")


@rates_app.command("show")
def show(
    ctx: typer.Context,
    kind: Annotated[Kind, typer.Argument(help="Device kind.")],
    start: Annotated[str, typer.Option("--from", help="Start (ISO; local time without a zone).")],
    end: Annotated[str, typer.Option("--to", help="End, exclusive (ISO).")],
    metric: Annotated[str | None, typer.Option(help="Only this metric.")] = None,
    grain: Annotated[str, typer.Option(help="hour, day or month (local days/months).")] = "day",
    level: Annotated[str, typer.Option(help="area, district or city.")] = "district",
    area: Annotated[str | None, typer.Option(help="Only this area code.")] = None,
) -> None:
    """Show rates as Σnumerator ÷ Σdenominator per period and area/district/city."""
    from cityops.db import pool
    from stream.queries import Grain, Level, rates

    settings = settings_of(ctx)
    try:
        g, lv = Grain(grain), Level(level)
    except ValueError as err:
        raise ValidationError(f"{err}; grain is hour/day/month, level area/district/city") from err
    zone = ZoneInfo(settings.timezone)
    with pool.connect(settings.db) as conn:
        values = rates(
            conn,
            kind=kind.value,
            start=_when(start, settings.timezone),
            end=_when(end, settings.timezone),
            metric=metric,
            grain=g,
            level=lv,
            area=area,
            timezone=settings.timezone,
        )
    table = Table("period (local)", "scope", "metric", "value", "numerator", "denominator")
    for v in values:
        table.add_row(
            v.period.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            v.scope,
            v.metric,
            "-" if v.value is None else f"{v.value:.4f}",
            f"{v.numerator:.2f}",
            f"{v.denominator:.2f}",
        )
    out.print(table)


@rates_app.command("radius")
def radius(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="Start (ISO; local time without a zone).")],
    end: Annotated[str, typer.Option("--to", help="End, exclusive (ISO).")],
    cell_km: Annotated[float, typer.Option(min=0.1, max=10, help="Grid cell size.")] = 0.5,
) -> None:
    """Charging service radius per area and district: area-equivalent and effective (grid)."""
    from cityops.db import pool
    from stream import radius as r
    from stream.registry import load_areas, load_devices

    settings = settings_of(ctx)
    lo, hi = _when(start, settings.timezone), _when(end, settings.timezone)
    with pool.connect(settings.db) as conn:
        areas = load_areas(conn)
        chargers = load_devices(conn, Kind.CHARGER, areas)
        usable = r.available_connectors(conn, chargers, lo, hi)
    table = Table("scope", "public sites", "area-equivalent km", "effective km (grid)", "cells")
    for v in r.service_radius(areas, chargers, usable, cell_km=cell_km):
        table.add_row(
            v.scope,
            str(v.sites),
            "-" if v.equivalent_km is None else f"{v.equivalent_km:.2f}",
            "-" if v.effective_km is None else f"{v.effective_km:.2f}",
            str(v.cells),
        )
    out.print(table)
    out.print(
        "area-equivalent: sqrt(A / (pi * N sites)); effective: mean distance from grid cells to "
        "the nearest public site with an available connector in the period (cells assigned to "
        "the nearest area centroid). See docs/rates.md."
    )
