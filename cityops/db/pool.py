"""Connections and the pool; every session runs in UTC with the configured statement timeout."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from cityops.errors import DatabaseError
from cityops.settings import DatabaseSettings


def _conn_kwargs(db: DatabaseSettings) -> dict[str, Any]:
    options = "-c TimeZone=UTC"
    if db.statement_timeout_ms:
        options += f" -c statement_timeout={db.statement_timeout_ms}"
    return {"options": options, "connect_timeout": max(1, round(db.connect_timeout_s))}


def connect(db: DatabaseSettings, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """Open one connection; raise DatabaseError saying where it tried when that fails."""
    try:
        return psycopg.connect(db.dsn, autocommit=autocommit, **_conn_kwargs(db))
    except psycopg.OperationalError as err:
        raise DatabaseError(
            f"cannot connect to PostgreSQL ({describe_dsn(db.dsn)}): {str(err).strip()}; "
            "check CITYOPS_DB_DSN and that the server is running"
        ) from err


def make_pool(db: DatabaseSettings, *, name: str = "cityops") -> ConnectionPool:
    """A pool that is not opened yet; the caller opens it (and may wait for the database)."""
    return ConnectionPool(
        db.dsn,
        min_size=db.pool_min,
        max_size=db.pool_max,
        kwargs=_conn_kwargs(db),
        name=name,
        open=False,
    )


def describe_dsn(dsn: str) -> str:
    """The DSN with any password removed, for messages and logs."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    parts.pop("password", None)
    return make_conninfo("", **{k: v for k, v in parts.items() if v is not None})
