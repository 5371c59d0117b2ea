"""Run the CLI with `python -m cityops`."""

from cityops.cli import main

main()
