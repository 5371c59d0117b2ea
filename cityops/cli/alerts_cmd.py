"""`cityops rules`, `cityops alerts` and `cityops cases`: duty-staff work from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from alerts import cases, store
from alerts.rules import load_rules, parse_duration
from cityops.cli.common import out, settings_of

rules_app = typer.Typer(help="Alert rules files.", no_args_is_help=True)
alerts_app = typer.Typer(
    help="Alerts: list, acknowledge, assign, comment, silence.", no_args_is_help=True
)
cases_app = typer.Typer(help="Cases of the closed loop: list, show, advance.", no_args_is_help=True)

By = Annotated[str, typer.Option("--by", help="Who does this (recorded with the change).")]


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


@rules_app.command("check")
def rules_check(
    file: Annotated[
        Path | None, typer.Argument(help="Rules YAML (default: the shipped rules).")
    ] = None,
) -> None:
    """Validate a rules file; a bad file names the rule and the field."""
    rules = load_rules(file)
    by_type: dict[str, int] = {}
    for r in rules.rules:
        by_type[r.type] = by_type.get(r.type, 0) + 1
    kinds = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
    out.print(f"{file or 'default rules'}: {len(rules.rules)} rule(s) valid ({kinds})")


@alerts_app.command("list")
def alerts_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="pending, firing or resolved")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only pending or firing.")] = False,
    severity: Annotated[str | None, typer.Option(help="info, warning or critical")] = None,
    area: Annotated[str | None, typer.Option(help="Area code.")] = None,
    kind: Annotated[str | None, typer.Option(help="Device kind.")] = None,
    rule: Annotated[str | None, typer.Option(help="Rule name.")] = None,
    before: Annotated[int | None, typer.Option(help="Page: ids below this.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """List alerts, newest first."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        rows = store.list_alerts(
            conn,
            state=state,
            open_only=open_only,
            severity=severity,
            area=area,
            kind=kind,
            rule=rule,
            before=before,
            limit=limit,
        )
    if as_json:
        for r in rows:
            out.print_json(json.dumps(_alert_json(r), ensure_ascii=False))
        return
    table = Table("id", "state", "severity", "rule", "area", "device", "started", "ack", "summary")
    for r in rows:
        table.add_row(
            str(r.id),
            r.state,
            r.severity,
            r.rule,
            r.area_code or "",
            r.device_id or "",
            _ts(r.started_at),
            r.acked_by or "",
            r.summary,
        )
    out.print(table)


def _alert_json(r: store.AlertRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.state,
        "severity": r.severity,
        "rule": r.rule,
        "kind": r.kind,
        "area_code": r.area_code,
        "device_id": r.device_id,
        "summary": r.summary,
        "labels": r.labels,
        "started_at": r.started_at.isoformat(),
        "fired_at": r.fired_at.isoformat() if r.fired_at else None,
        "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None,
        "acked_by": r.acked_by,
        "assigned_to": r.assigned_to,
        "case_id": r.case_id,
    }


@alerts_app.command("show")
def alerts_show(ctx: typer.Context, alert_id: Annotated[int, typer.Argument()]) -> None:
    """One alert with its history."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        row, events = store.get_alert(conn, alert_id)
    out.print_json(json.dumps(_alert_json(row), ensure_ascii=False))
    table = Table("at", "event", "by", "detail")
    for e in events:
        table.add_row(_ts(e.at), e.event, e.actor, json.dumps(e.detail, ensure_ascii=False))
    out.print(table)


@alerts_app.command("ack")
def alerts_ack(
    ctx: typer.Context,
    alert_id: Annotated[int, typer.Argument()],
    by: By,
    comment: Annotated[str, typer.Option(help="Optional note.")] = "",
) -> None:
    """Acknowledge an alert: reminders and escalation stop."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        store.acknowledge(conn, alert_id, by, _now(), comment)
    out.print(f"alert {alert_id} acknowledged by {by}")


@alerts_app.command("assign")
def alerts_assign(
    ctx: typer.Context,
    alert_id: Annotated[int, typer.Argument()],
    by: By,
    to: Annotated[str, typer.Option("--to", help="Person or team.")],
) -> None:
    """Assign an alert."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        store.assign(conn, alert_id, by, to, _now())
    out.print(f"alert {alert_id} assigned to {to}")


@alerts_app.command("comment")
def alerts_comment(
    ctx: typer.Context,
    alert_id: Annotated[int, typer.Argument()],
    by: By,
    text: Annotated[str, typer.Argument(help="The comment.")],
) -> None:
    """Add a comment to an alert."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        store.comment(conn, alert_id, by, text, _now())
    out.print(f"comment added to alert {alert_id}")


@alerts_app.command("silence")
def alerts_silence(
    ctx: typer.Context,
    by: By,
    match: Annotated[
        list[str],
        typer.Option(
            "--match", help="Label matcher, repeatable: name=value, name!=value, name=~regex."
        ),
    ],
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 2h.")] = "2h",
    start: Annotated[
        datetime | None, typer.Option(help="Start (default now), UTC if naive.")
    ] = None,
    comment: Annotated[str, typer.Option(help="Why (maintenance window, known issue).")] = "",
) -> None:
    """Silence matching alerts for a time (a maintenance window)."""
    from cityops.db import pool

    matchers = [store.Matcher.parse(m) for m in match]
    begins = start if start and start.tzinfo else (start.replace(tzinfo=UTC) if start else _now())
    try:
        length = parse_duration(duration)
    except ValueError as err:
        raise store.AlertError(f"--for: {err}") from err
    with pool.connect(settings_of(ctx).db) as conn:
        silence_id = store.create_silence(conn, matchers, begins, begins + length, by, comment)
    out.print(f"silence {silence_id} until {_ts(begins + length)} UTC")


@alerts_app.command("silences")
def alerts_silences(ctx: typer.Context) -> None:
    """Silences in force now."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        rows = store.active_silences(conn, _now())
    table = Table("id", "matchers", "from", "until", "by", "comment")
    for s in rows:
        table.add_row(
            str(s.id),
            ", ".join(f"{m.name}{m.op}{m.value}" for m in s.matchers),
            _ts(s.starts_at),
            _ts(s.ends_at),
            s.created_by,
            s.comment,
        )
    out.print(table)


@alerts_app.command("unsilence")
def alerts_unsilence(ctx: typer.Context, silence_id: Annotated[int, typer.Argument()]) -> None:
    """End a silence now."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        store.expire_silence(conn, silence_id, _now())
    out.print(f"silence {silence_id} ended")


@cases_app.command("list")
def cases_list(
    ctx: typer.Context,
    stage: Annotated[
        str | None, typer.Option(help="detected, filed, dispatched, handled, verified or closed")
    ] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Not closed.")] = False,
    area: Annotated[str | None, typer.Option(help="Area code.")] = None,
    kind: Annotated[str | None, typer.Option(help="Device kind.")] = None,
    before: Annotated[int | None, typer.Option(help="Page: ids below this.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List cases, newest first."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        rows = cases.list_cases(
            conn, stage=stage, open_only=open_only, area=area, kind=kind, before=before, limit=limit
        )
    table = Table("id", "stage", "source", "area", "device", "unit", "detected", "title")
    for c in rows:
        table.add_row(
            str(c.id),
            f"{c.stage} ({cases.Stage(c.stage).label_zh})",
            c.source,
            c.area_code or "",
            c.device_id or "",
            c.responsible_unit or "",
            _ts(c.detected_at),
            c.title,
        )
    out.print(table)


@cases_app.command("advance")
def cases_advance(
    ctx: typer.Context,
    case_id: Annotated[int, typer.Argument()],
    stage: Annotated[str, typer.Argument(help="Target stage.")],
    by: By,
    comment: Annotated[str, typer.Option(help="Note stored with the step.")] = "",
) -> None:
    """Move a case one step along the closed loop."""
    from cityops.db import pool

    with pool.connect(settings_of(ctx).db) as conn:
        new = cases.advance(conn, case_id, stage, by, _now(), comment)
    out.print(f"case {case_id} is now {new.value} ({new.label_zh})")
