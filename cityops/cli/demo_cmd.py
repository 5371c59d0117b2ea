"""`cityops demo`: everything in one command for a newcomer."""

from __future__ import annotations

import typer


def demo(ctx: typer.Context) -> None:
    """Run database, simulators, ingest, stream, alerts and the API together."""
    raise typer.Exit(1)
