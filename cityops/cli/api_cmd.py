"""`cityops api` (the HTTP API process) and `cityops keys` (API key administration)."""

from __future__ import annotations

import typer

keys_app = typer.Typer(help="API keys: create, list and revoke.", no_args_is_help=True)


def api(ctx: typer.Context) -> None:
    """Run the HTTP API (FastAPI under /api/v1, live feed, operations page)."""
    raise typer.Exit(1)
