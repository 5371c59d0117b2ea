"""`cityops ingest`, `cityops deadletters ...` and `cityops broker credentials`."""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated

import structlog
import typer
from rich.table import Table

from cityops.cli.common import err_console, out, settings_of
from cityops.errors import ConfigError

log = structlog.get_logger(__name__)

deadletters_app = typer.Typer(help="Inspect and replay rejected messages.", no_args_is_help=True)
broker_app = typer.Typer(help="Broker accounts and ACLs.", no_args_is_help=True)


def ingest(
    ctx: typer.Context,
    client_id: Annotated[
        str | None,
        typer.Option(
            help="MQTT client id; must be stable per worker (its persistent session). "
            "Default: <mqtt.client_id>-ingest."
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(help="Port of /metrics, /healthz, /readyz (default ingest.http_port)."),
    ] = None,
    stream: Annotated[
        bool, typer.Option(help="Run the stream core (live rates, snapshots) in process.")
    ] = True,
    alerts: Annotated[
        bool, typer.Option(help="Run the alert engine and notifications in process.")
    ] = True,
) -> None:
    """Run the ingest process: MQTT -> validated batches -> PostgreSQL -> stream -> alerts.

    Runs until SIGTERM/SIGINT, then flushes and acknowledges the open batch.
    """
    from cityops.cli.pipeline import build_pipeline
    from ingest.broker_check import check_broker
    from ingest.health import HealthServer
    from ingest.metrics import IngestMetrics
    from ingest.service import IngestService

    settings = settings_of(ctx)
    # before anything else: a broker that will drop a burst is worth a warning at every start
    check_broker(settings)
    metrics = IngestMetrics()
    pipeline = build_pipeline(
        settings, registry=metrics.registry, with_stream=stream, with_alerts=alerts
    )
    try:
        service = IngestService(
            settings, consumers=pipeline.consumers, client_id=client_id, metrics=metrics
        )
    except BaseException:
        pipeline.stop()
        raise

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("ingest_stop_requested", signal=signal.Signals(signum).name)
        service.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    port = settings.ingest.http_port if http_port is None else http_port
    health = None
    if port:
        try:
            health = HealthServer(
                settings.ingest.http_host,
                port,
                service.metrics.registry,
                lambda: {**service.readiness(), **pipeline.readiness()},
            )
        except OSError as err:
            raise ConfigError(
                f"ingest.http_port: cannot listen on {settings.ingest.http_host}:{port}: {err}"
            ) from err
        health.start()
    try:
        service.start()
        log.info("ingest_started", http_port=port or None, consumers=len(pipeline.consumers))
        while not service.wait(0.5):
            pass
        requested = service.stop_requested
        service.stop()
    finally:
        pipeline.stop()
        if health is not None:
            health.close()
    if not requested:
        err_console.print("error: the ingest worker stopped unexpectedly (see the log)")
        raise typer.Exit(1)


@deadletters_app.command("list")
def deadletters_list(
    ctx: typer.Context,
    reason: Annotated[str | None, typer.Option(help='e.g. "unknown device".')] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only dead letters received at or after this time.")
    ] = None,
    pending: Annotated[bool, typer.Option(help="Only those not yet replayed successfully.")] = (
        False
    ),
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Newest dead letters first: id, time, reason, topic, detail."""
    from cityops.db import pool
    from ingest.deadletters import list_dead_letters

    settings = settings_of(ctx)
    if since is not None and since.tzinfo is None:
        raise ConfigError("--since needs a UTC offset, e.g. 2025-01-31T08:00:00+08:00")
    with pool.connect(settings.db) as conn:
        rows = list_dead_letters(
            conn, reason=reason, since=since, pending_only=pending, limit=limit
        )
    if as_json:
        for r in rows:
            record = {
                "id": r.id,
                "received_at": r.received_at.isoformat(),
                "reason": r.reason,
                "topic": r.topic,
                "detail": r.detail,
                "payload_bytes": len(r.payload),
                "replayed_at": r.replayed_at.isoformat() if r.replayed_at else None,
                "replay_result": r.replay_result,
            }
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    table = Table("id", "received", "reason", "topic", "detail", "replay")
    for r in rows:
        table.add_row(
            str(r.id),
            r.received_at.isoformat(timespec="seconds"),
            r.reason,
            r.topic,
            (r.detail or "")[:120],
            r.replay_result or "",
        )
    out.print(table)


@deadletters_app.command("show")
def deadletters_show(
    ctx: typer.Context,
    dead_letter_id: Annotated[int, typer.Argument(help="Dead letter id.")],
) -> None:
    """One dead letter in full, with its raw payload."""
    from cityops.db import pool
    from ingest.deadletters import get_dead_letter

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        row = get_dead_letter(conn, dead_letter_id)
    if row is None:
        err_console.print(f"error: no dead letter {dead_letter_id}")
        raise typer.Exit(1)
    payload = bytes(row.payload)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = payload.hex()
    out.print(f"id:           {row.id}", highlight=False)
    out.print(f"received_at:  {row.received_at.isoformat()}", highlight=False)
    out.print(f"topic:        {row.topic}", highlight=False)
    out.print(f"reason:       {row.reason}", highlight=False)
    out.print(f"detail:       {row.detail or ''}", highlight=False)
    out.print(f"replayed_at:  {row.replayed_at.isoformat() if row.replayed_at else ''}")
    out.print(f"replay:       {row.replay_result or ''}", highlight=False)
    out.print(f"payload ({len(payload)} bytes):", highlight=False)
    sys.stdout.write(text + "\n")


@deadletters_app.command("replay")
def deadletters_replay(
    ctx: typer.Context,
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    reason: Annotated[
        str | None, typer.Option(help="Replay every pending dead letter with this reason.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1_000_000)] = 10_000,
) -> None:
    """Re-ingest dead letters (after fixing the registry); each outcome is recorded."""
    from cityops.db import pool
    from ingest.deadletters import list_dead_letters, replay
    from ingest.decode import Decoder
    from ingest.registry_cache import RegistryCache, load_snapshot

    settings = settings_of(ctx)
    if not ids and reason is None:
        raise ConfigError("give dead letter ids or --reason")
    cfg = settings.ingest
    with pool.connect(settings.db) as conn:
        chosen = list(ids or [])
        if reason is not None:
            rows = list_dead_letters(conn, reason=reason, pending_only=True, limit=limit)
            chosen.extend(sorted(r.id for r in rows))
        conn.commit()
        cache = RegistryCache(lambda: load_snapshot(conn))
        cache.reload()
        decoder = Decoder(
            cache,
            root=cfg.topic_root,
            max_payload_bytes=cfg.max_payload_bytes,
            auto_register_area=cfg.auto_register_area if cfg.auto_register else None,
        )
        outcomes = replay(conn, decoder, chosen)
    failed = 0
    for o in outcomes:
        out.print(f"{o.id}: {o.result}", highlight=False)
        failed += not o.stored
    out.print(f"{len(outcomes) - failed} replayed, {failed} still rejected")
    if failed:
        raise typer.Exit(1)


@broker_app.command("credentials")
def broker_credentials(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for passwd and acl.")],
    service_password: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PASSWORD for a service account (cityops-ingest, cityops-hotline, "
            "cityops-publisher, cityops-api, cityops-monitor); others get random passwords "
            "written to service-passwords.txt."
        ),
    ] = None,
) -> None:
    """Write mosquitto's password file and ACL for every registered device and gateway."""
    from cityops.db import pool
    from ingest.broker import SERVICE_NAMES, registered_identities, write_credentials

    settings = settings_of(ctx)
    secret = settings.mqtt.device_secret
    if secret is None:
        raise ConfigError("mqtt.device_secret (CITYOPS_MQTT_DEVICE_SECRET) is not set")
    given: dict[str, str] = {}
    for item in service_password or []:
        name, sep, password = item.partition("=")
        if not sep or name not in SERVICE_NAMES or not password:
            raise ConfigError(
                f"--service-password {name!r}: expected NAME=PASSWORD with NAME one of "
                + ", ".join(sorted(SERVICE_NAMES))
            )
        given[name] = password
    with pool.connect(settings.db) as conn:
        try:
            report = write_credentials(
                out_dir,
                registered_identities(conn),
                secret=secret.get_secret_value(),
                service_passwords=given,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err
    out.print(
        f"{report.users} device/gateway account(s) written to {report.password_file} (device "
        f"listener), {report.services} service account(s) to {report.service_password_file} "
        f"(services listener); ACL in {report.acl_file}"
    )
    for name, reason in report.refused:
        err_console.print(
            f"refused {name!r}: it {reason}; fix it in the registry (no login written)",
            highlight=False,
        )
    if report.service_passwords_file is not None:
        out.print(f"generated service passwords in {report.service_passwords_file}")
