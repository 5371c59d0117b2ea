"""The registry's change counter (migration 0017), so a copy of the registry is re-read only when
it changed."""

from __future__ import annotations

from typing import Any

import psycopg

VERSION_SQL = "SELECT version FROM registry_version"


def read(conn: psycopg.Connection[Any]) -> int | None:
    """The counter now (None if the row is missing); read it *before* the registry it guards, so
    what is read is at least that version."""
    row = conn.execute(VERSION_SQL).fetchone()
    return None if row is None else int(row[0])
