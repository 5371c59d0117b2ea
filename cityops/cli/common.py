"""What every command module shares: consoles and the settings from the context."""

from __future__ import annotations

import typer
from rich.console import Console

from cityops.errors import ConfigError
from cityops.settings import Settings

out = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root callback loaded for this invocation."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise ConfigError("settings were not loaded")
    return settings
