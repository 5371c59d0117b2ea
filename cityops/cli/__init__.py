"""The ``cityops`` command line: the composition root that builds settings and wires the parts.

Each command group lives in its own ``*_cmd`` module and is registered here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cityops.cli import (
    alerts_cmd,
    api_cmd,
    catalog_cmd,
    db_cmd,
    demo_cmd,
    ingest_cmd,
    rates_cmd,
    registry_cmd,
    report_cmd,
    simulate_cmd,
)
from cityops.cli.common import err_console
from cityops.errors import CityopsError, ConfigError
from cityops.settings import load_settings

app = typer.Typer(
    help="cityops: monitoring backend of a city operations center.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_cmd.app, name="db")
app.add_typer(registry_cmd.areas_app, name="areas")
app.add_typer(registry_cmd.devices_app, name="devices")
app.add_typer(catalog_cmd.catalog_app, name="catalog")
app.add_typer(catalog_cmd.config_app, name="config")
app.command("ingest")(ingest_cmd.ingest)
app.add_typer(ingest_cmd.deadletters_app, name="deadletters")
app.add_typer(ingest_cmd.broker_app, name="broker")
app.add_typer(alerts_cmd.rules_app, name="rules")
app.add_typer(alerts_cmd.alerts_app, name="alerts")
app.add_typer(alerts_cmd.cases_app, name="cases")
app.add_typer(simulate_cmd.app, name="simulate")
app.add_typer(rates_cmd.rates_app, name="rates")
app.command("api")(api_cmd.api)
app.add_typer(api_cmd.keys_app, name="keys")
app.command("demo")(demo_cmd.demo)
app.add_typer(report_cmd.report_app, name="report")
app.add_typer(report_cmd.indicators_app, name="indicators")


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML config file (else $CITYOPS_CONFIG)."),
    ] = None,
) -> None:
    """Load the settings once; every command gets them through the context."""
    from cityops.logging import configure

    settings = load_settings(config)
    configure(settings.log)
    ctx.obj = settings


def main() -> None:
    """Entry point: run the CLI, turning cityops errors into one clear line and an exit code."""
    try:
        app()
    except ConfigError as err:
        err_console.print(f"configuration error: {err}", highlight=False)
        sys.exit(2)
    except CityopsError as err:
        err_console.print(f"error: {err}", highlight=False)
        sys.exit(1)
