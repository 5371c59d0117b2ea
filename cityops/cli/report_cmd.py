"""`cityops report` (monthly reports) and `cityops indicators` (plan indicators)."""

from __future__ import annotations

import typer

report_app = typer.Typer(help="Monthly operations reports.", no_args_is_help=True)
indicators_app = typer.Typer(
    help="Plan indicators: catalog, observations, evaluation.", no_args_is_help=True
)
