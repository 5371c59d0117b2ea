"""`cityops report` (monthly reports) and `cityops indicators` (plan indicators)."""

from __future__ import annotations

import getpass
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cityops.cli.common import out, settings_of
from cityops.errors import ValidationError

report_app = typer.Typer(help="Monthly operations reports.", no_args_is_help=True)
indicators_app = typer.Typer(
    help="Plan indicators: catalog, observations, evaluation.", no_args_is_help=True
)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "cli"


def _day(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise ValidationError(f"{field}: {text!r} is not a date (YYYY-MM-DD)", field) from err


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValidationError(f"cannot read {path}: {err}") from err


@report_app.command("monthly")
def monthly(
    ctx: typer.Context,
    month: Annotated[str, typer.Option("--month", help="Local calendar month, YYYY-MM.")],
    area: Annotated[
        str | None, typer.Option("--area", help="One street/township code (else the district).")
    ] = None,
    district: Annotated[
        str | None, typer.Option("--district", help="District name when several are registered.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Comma list of json, csv, xlsx, html, pdf.")
    ] = "xlsx,html,json",
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for the files.")] = Path("."),
    stale_rates: Annotated[
        str | None,
        typer.Option(
            "--stale-rates",
            help="Hourly rates missing or older than their readings: recompute (default, "
            "setting report.stale_rates) or provisional (mark the figures, change nothing).",
        ),
    ] = None,
) -> None:
    """Produce the monthly operations report in the chosen formats."""
    from cityops.db import pool
    from reports import formats
    from reports import monthly as builder

    settings = settings_of(ctx)
    wanted = formats.parse_formats(fmt)
    steps = [
        "freshness of the hourly rates",
        "rates",
        "charging radius",
        "cases and hotline",
        "coverage and trends",
        "plan evaluation",
    ]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValidationError(f"--out: cannot create {out_dir}: {err}", "out") from err
    with (
        pool.connect(settings.db, autocommit=True) as conn,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=out,
        ) as progress,
    ):
        task = progress.add_task("gathering", total=len(steps) + len(wanted))

        def step(name: str) -> None:
            progress.update(task, description=name, advance=0 if name == steps[0] else 1)

        report = builder.build(
            conn,
            settings,
            month,
            area=area,
            district=district,
            progress=step,
            stale_rates=stale_rates,
        )
        progress.update(task, advance=1)
        written = []
        for f in wanted:
            progress.update(task, description=f"writing {f.value}")
            path = out_dir / formats.file_name(report, f)
            path.write_bytes(formats.render(report, f))
            written.append(path)
            progress.update(task, advance=1)
        digest = builder.record_run(conn, report, [f.value for f in wanted], _user())
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    out.print(f"catalog {report['catalog_version']}, content sha256 {digest[:16]}", highlight=False)
    completeness = report["completeness"]
    if completeness["partial"]:
        out.print(completeness["note"], highlight=False)
    if completeness["no_data"]:
        out.print(f"WARNING: {completeness['no_data_note']}", highlight=False)
    fresh = report["freshness"]
    if fresh["recomputed"]:
        windows = ", ".join(r["window"] for r in fresh["recomputed"])
        out.print(f"recomputed stale or missing hourly rates first: {windows}", highlight=False)
    if report["provisional"]:
        windows = ", ".join(fresh["provisional_windows"])
        out.print(
            f"PROVISIONAL: hourly rates missing or stale in {windows}; the affected figures are "
            "marked provisional (run `cityops rates recompute` or drop --stale-rates provisional)",
            highlight=False,
        )


@indicators_app.command("list")
def list_indicators(
    ctx: typer.Context,
    plan: Annotated[str | None, typer.Option("--plan", help="cy-gov, bj-cm or local.")] = None,
) -> None:
    """The indicator catalog in effect (shipped plus local), with its version."""
    from cityops.db import pool
    from reports import observations

    settings = settings_of(ctx)
    with pool.connect(settings.db, autocommit=True) as conn:
        cat = observations.load_catalog(conn)
    table = Table(title=f"indicator catalog {cat.version}")
    table.add_column("key", no_wrap=True)
    for col in ("name", "unit", "dir", "kind", "baseline", "target", "attribute", "sensor"):
        table.add_column(col)
    for i in cat.by_plan(plan):
        target = i.resolved_target
        table.add_row(
            i.key + (" (local)" if i.local else ""),
            f"{i.name_zh} {i.name_en}",
            i.unit,
            i.direction.value,
            i.kind.value,
            "" if i.baseline is None else f"{i.baseline:g}",
            i.target_text if target is None else f"{target:g}",
            i.attribute.value,
            i.sensor_metric.value if i.sensor_metric else "",
        )
    out.print(table)


@indicators_app.command("add-local")
def add_local(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV with the catalog's columns (key, direction…).")],
) -> None:
    """Add local indicators, or replace a shipped one (same key) e.g. with a local target."""
    from cityops.db import pool
    from reports import catalog, observations

    settings = settings_of(ctx)
    rows = catalog.parse_csv(_read(file), local=True)
    if not rows:
        raise ValidationError(f"{file} has no indicator rows")
    with pool.connect(settings.db) as conn:
        for indicator in rows:
            observations.save_local(conn, indicator, _user())
        conn.commit()
        version = observations.load_catalog(conn).version
    out.print(f"stored {len(rows)} local indicator(s); catalog version {version}", highlight=False)


@indicators_app.command("import-observations")
def import_observations(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV: indicator,observed_on,value,status,source,note,scope")
    ],
) -> None:
    """Import dated observations (all rows or none)."""
    from cityops.db import pool
    from reports import observations

    settings = settings_of(ctx)
    text = _read(file)
    with pool.connect(settings.db, autocommit=True) as conn:
        cat = observations.load_catalog(conn)
        result = observations.import_observations(conn, cat, text, _user())
    out.print(
        f"stored {result.stored} observation(s) of {result.indicators} indicator(s)",
        highlight=False,
    )


@indicators_app.command("add-observation")
def add_observation(
    ctx: typer.Context,
    indicator: Annotated[str, typer.Option("--indicator", help="Indicator key, e.g. cy-gov-09.")],
    on: Annotated[str, typer.Option("--date", help="Date the value refers to, YYYY-MM-DD.")],
    source: Annotated[str, typer.Option("--source", help="Who supplied it (e.g. 区统计局).")],
    value: Annotated[float | None, typer.Option("--value", help="The value in its unit.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Authority's status: achieved_early, on_track, adjust."),
    ] = None,
    note: Annotated[str, typer.Option("--note")] = "",
    scope: Annotated[str, typer.Option("--scope", help="district (default) or an area code.")] = (
        "district"
    ),
) -> None:
    """Enter one observation."""
    from cityops.db import pool
    from reports import observations

    settings = settings_of(ctx)
    with pool.connect(settings.db, autocommit=True) as conn:
        cat = observations.load_catalog(conn)
        obs = observations.make_observation(
            cat,
            indicator=indicator,
            observed_on=_day(on, "date"),
            value=value,
            source=source,
            status=observations.parse_status(status),
            note=note,
            scope=scope,
        )
        obs_id = observations.save_observation(conn, obs, _user())
    out.print(f"observation {obs_id} stored", highlight=False)


@indicators_app.command("add-forecast")
def add_forecast(
    ctx: typer.Context,
    indicator: Annotated[str, typer.Option("--indicator", help="Indicator key.")],
    value: Annotated[float, typer.Option("--value", help="Forecast value at 2025-12-31.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (required).")],
    made_on: Annotated[str | None, typer.Option("--made-on", help="YYYY-MM-DD; today.")] = None,
    proposed_target: Annotated[
        float | None, typer.Option("--proposed-target", help="Target to propose if behind.")
    ] = None,
) -> None:
    """Enter a forecast of the end-of-plan value, with its reason."""
    from cityops.db import pool
    from reports import observations
    from reports.evaluation import Forecast

    settings = settings_of(ctx)
    day = _day(made_on, "made-on") if made_on else date.today()  # noqa: DTZ011 - a local calendar day
    with pool.connect(settings.db, autocommit=True) as conn:
        cat = observations.load_catalog(conn)
        fc = Forecast(
            indicator=indicator,
            made_on=day,
            value=value,
            reason=reason,
            proposed_target=proposed_target,
        )
        fid = observations.save_forecast(conn, cat, fc, _user())
    out.print(f"forecast {fid} stored", highlight=False)


@indicators_app.command("evaluate")
def evaluate(
    ctx: typer.Context,
    as_of: Annotated[str, typer.Option("--as-of", help="Evaluation date, YYYY-MM-DD.")],
    plan: Annotated[str | None, typer.Option("--plan", help="Only this plan.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify every indicator at a date from stored observations and forecasts."""
    import orjson

    from cityops.db import pool
    from reports import monthly

    settings = settings_of(ctx)
    day = _day(as_of, "as-of")
    with pool.connect(settings.db, autocommit=True) as conn:
        section = monthly.evaluate_stored(conn, day, plan, monthly.rules_from(settings))
    if as_json:
        out.print(
            orjson.dumps(section, option=orjson.OPT_INDENT_2).decode(),
            highlight=False,
            markup=False,
        )
        return
    table = Table(
        title=f"evaluation as of {section['as_of']} (time share {section['time_share']:.1%}), "
        f"catalog {section['catalog_version']}"
    )
    table.add_column("key", no_wrap=True)
    for col in ("indicator", "current", "target", "task", "status", "预期", "rule", "reason"):
        table.add_column(col)
    for r in section["rows"]:
        table.add_row(
            r["key"],
            r["name_zh"],
            "" if r["current"] is None else f"{r['current']:g}",
            "" if r["target"] is None else f"{r['target']:g}",
            "" if r["task_share"] is None else f"{r['task_share']:.0%}",
            f"{r['report_zh']} {r['status_en']}",
            r["pace_zh"],
            r["rule"],
            r["reason"],
        )
    out.print(table)
    for attr, counts in section["counts"].items():
        shown = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        out.print(f"{attr}: {shown or 'none'}", highlight=False)
