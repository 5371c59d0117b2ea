"""cityops shared kernel: settings, device catalog, database, registry and the CLI."""
