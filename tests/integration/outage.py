"""A database outage for one test database, without stopping the shared server."""

from __future__ import annotations

import psycopg
import psycopg.sql


def set_connections(admin_dsn: str, dbname: str, allow: bool) -> None:
    """Refuse (and cut) or allow again connections to ``dbname``: an outage seen only by it."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                psycopg.sql.Identifier(dbname), psycopg.sql.SQL("true" if allow else "false")
            )
        )
        if not allow:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
