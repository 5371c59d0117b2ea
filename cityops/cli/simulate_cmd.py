"""`cityops simulate`: field hardware stand-ins publishing over MQTT, and scenario registries."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from cityops.cli.common import err_console, out, settings_of
from cityops.errors import ConfigError

app = typer.Typer(
    help="Simulated devices and hotline: `cityops simulate --scenario pilot --speed 60`.",
    invoke_without_command=True,
)

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

ScenarioOpt = Annotated[
    str, typer.Option("--scenario", help="pilot (~4,500 devices), district (~48,000) or city.")
]
DevicesOpt = Annotated[
    int | None,
    typer.Option("--devices", help="Size of the city scenario (default 1,000,000); scales others."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Same seed, same registry and stream.")]


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1.5d`` as a timedelta."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ConfigError(f"duration {text!r}: use a number and s, m, h or d, e.g. 2h")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def parse_start(text: str | None) -> datetime:
    """An RFC 3339 instant (``Z`` allowed), or now (UTC, whole minute) when not given."""
    if not text:
        return datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as err:
        raise ConfigError(
            f"--start {text!r}: expected RFC 3339, e.g. 2025-12-01T00:00:00Z"
        ) from err
    if ts.tzinfo is None:
        raise ConfigError(f"--start {text!r}: give a time zone, e.g. Z or +08:00")
    return ts.astimezone(UTC)


def _scenario(name: str, devices: int | None, seed: int) -> Any:
    from simulators import scenario

    try:
        spec = scenario.scenario_spec(name, devices)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return scenario.generate(spec, seed)


def _import_registry(ctx: typer.Context, scn: Any) -> None:
    from cityops import registry
    from cityops.db import pool
    from simulators import scenario

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        known = conn.execute("SELECT count(*) FROM areas").fetchone()
        if not known or known[0] == 0:
            registry.import_areas(conn, registry.reference_area_records(), "reference")
        report = registry.import_devices(conn, scenario.registry_records(scn), scn.spec.name)
    for e in report.errors[:20]:
        err_console.print(f"{report.source}: {e.location}: {e.message}", highlight=False)
    out.print(f"registry: {report.stored} device(s) stored, {len(report.errors)} rejected")
    if report.errors:
        raise typer.Exit(1)


@app.callback()
def simulate(  # noqa: PLR0915 -- the run command wires every option; split when it grows
    ctx: typer.Context,
    scenario_name: ScenarioOpt = "pilot",
    devices: DevicesOpt = None,
    seed: SeedOpt = 7,
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per second; 0 = as fast as possible.")
    ] = 1.0,
    duration: Annotated[
        str, typer.Option(help="How much simulated time, e.g. 2h, 30m, 1d.")
    ] = "1h",
    start: Annotated[
        str | None,
        typer.Option(help="Simulated start (RFC 3339); default now. Fix it for repeatable runs."),
    ] = None,
    faults: Annotated[
        float, typer.Option("--faults", help="Faults per device per simulated day (0: none).")
    ] = 0.02,
    shapes: Annotated[
        float,
        typer.Option(
            "--shapes",
            help="Anomaly shapes (spike, step, drift, flatline, stuck, noisy) per device per "
            "simulated day, from --shapes-after on (0: none).",
        ),
    ] = 0.0,
    shapes_after: Annotated[
        str, typer.Option(help="Inject shapes only after this much simulated time (learning).")
    ] = "1d",
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth JSON Lines file (default sim-truth-*.jsonl).")
    ] = None,
    truth_db: Annotated[
        bool, typer.Option("--truth-db", help="Also store the ground truth in the database.")
    ] = False,
    import_registry: Annotated[
        bool, typer.Option("--import-registry", help="Import the scenario's registry first.")
    ] = False,
    connections: Annotated[
        str,
        typer.Option(help="shared (one connection) or per-device (own login, last will)."),
    ] = "auto",
    prefix: Annotated[str, typer.Option(help="Topic prefix.")] = "cityops/v1",
    max_rate: Annotated[
        float | None, typer.Option(help="At most this many messages per second.")
    ] = None,
    dry_run: Annotated[
        Path | None,
        typer.Option("--dry-run", help="Write messages to this JSON Lines file, not MQTT."),
    ] = None,
) -> None:
    """Run the simulators against the configured broker (mqtt.* settings)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from simulators import faults as faults_mod
    from simulators import runner
    from simulators.clock import rfc3339
    from simulators.engine import Simulation
    from simulators.publisher import Publisher, PublisherConfig

    settings = settings_of(ctx)
    span = parse_duration(duration)
    begin = parse_start(start)
    scn = _scenario(scenario_name, devices, seed)
    if import_registry:
        _import_registry(ctx, scn)
    sim = Simulation(
        scn,
        start=begin,
        duration=span,
        fault_rate=faults,
        shape_rate=shapes,
        shape_after=parse_duration(shapes_after),
        schedule=settings.schedule,
        timezone=settings.timezone,
    )
    truth_path = truth or Path(f"sim-truth-{scn.spec.name}-{seed}.jsonl")
    run_id = f"{scn.spec.name}-{seed}-{sim.start_ms}"

    def record_truth() -> int:
        # Written before the run (so a crash still leaves it) and again after it, when the
        # faults know their effect_end (a repaired room stays cold until it has warmed up).
        with truth_path.open("w", encoding="utf-8") as f:
            n = faults_mod.write_ground_truth(sim.faults, f)
        if truth_db:
            from cityops.db import pool

            with pool.connect(settings.db) as conn:
                faults_mod.store_ground_truth(conn, run_id, sim.faults)
        return n

    n_faults = record_truth()
    out.print(
        f"{scn.spec.name}: {scn.total} devices, seed {seed}, {rfc3339(sim.start_ms)} + {span}; "
        f"{n_faults} fault(s) -> {truth_path}, {len(sim.complaints)} complaint(s)"
    )
    if truth_db:
        out.print(f"ground truth stored in sim_ground_truth as run {run_id}")

    publisher: Publisher | None = None
    sink: runner.Sink
    dry_file = None
    if dry_run is not None:
        dry_file = dry_run.open("wb")
        sink = runner.FileSink(dry_file)
    else:
        secret = (
            settings.mqtt.device_secret.get_secret_value() if settings.mqtt.device_secret else None
        )
        mode = connections if connections != "auto" else ("per-device" if secret else "shared")
        if mode not in ("shared", "per-device"):
            raise ConfigError("--connections: use shared, per-device or auto")
        publisher = Publisher(
            PublisherConfig(
                host=settings.mqtt.host,
                port=settings.mqtt.port,
                prefix=prefix,
                mode="per_device" if mode == "per-device" else "shared",
                username=settings.mqtt.username,
                password=settings.mqtt.password.get_secret_value()
                if settings.mqtt.password
                else None,
                device_secret=secret,
                client_id=f"{settings.mqtt.client_id}-sim-{seed}",
                keepalive_s=settings.mqtt.keepalive_s,
                max_rate=max_rate,
            )
        )
        direct, gateways = runner.device_list(sim)
        publisher.connect(direct, gateways)
        sink = runner.MqttSink(publisher)

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ticks"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    interrupted = False
    result = None
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("simulating", total=sim.n_ticks, info="")

        def on_tick(p: runner.Progress, _out: object) -> None:
            acked = f", {publisher.stats.acked} acked" if publisher else ""
            bar.update(
                task,
                completed=p.tick,
                info=f"{rfc3339(p.sim_ms)} {p.messages} msgs{acked}, behind {p.behind_s:.1f}s",
            )

        try:
            result = runner.run(sim, sink, speed=speed, prefix=prefix, on_tick=on_tick)
        except KeyboardInterrupt:
            interrupted = True
    if publisher is not None:
        direct, _ = runner.device_list(sim)
        publisher.close(offline=direct, ts_ms=sim.end_ms)
    if dry_file is not None:
        dry_file.close()
    record_truth()
    if result is not None:
        out.print(
            f"done: {result.messages} message(s), {result.readings} reading(s), "
            f"{result.complaints} complaint(s)"
        )
    if interrupted:
        raise typer.Exit(130)


@app.command("registry")
def registry_cmd(
    ctx: typer.Context,
    scenario_name: ScenarioOpt = "pilot",
    devices: DevicesOpt = None,
    seed: SeedOpt = 7,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="CSV file for `cityops devices import` (- = stdout)."),
    ] = None,
    import_db: Annotated[
        bool, typer.Option("--import", help="Write the registry straight into the database.")
    ] = False,
) -> None:
    """Generate a scenario's device registry (CSV), optionally importing it."""
    from simulators import scenario

    if out_file is None and not import_db:
        raise ConfigError("give --out FILE and/or --import")
    scn = _scenario(scenario_name, devices, seed)
    if out_file is not None:
        if str(out_file) == "-":
            n = scenario.write_csv(scn, sys.stdout)
        else:
            n = scenario.write_csv_file(scn, out_file)
            out.print(f"{n} device(s) written to {out_file}")
    if import_db:
        _import_registry(ctx, scn)
