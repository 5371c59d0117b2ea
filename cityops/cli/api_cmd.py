"""`cityops api` (the HTTP API process) and `cityops keys` (API key administration)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cityops import apikeys
from cityops.cli.common import err_console, out, settings_of

keys_app = typer.Typer(help="API keys: create, list and revoke.", no_args_is_help=True)


def api(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (default api.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Listen port (default api.port).")
    ] = None,
    migrate: Annotated[
        bool, typer.Option(help="Apply pending schema migrations before serving.")
    ] = False,
) -> None:
    """Run the HTTP API (FastAPI under /api/v1, live feed, operations page).

    Runs until SIGTERM/SIGINT. OpenAPI is at /docs; /healthz, /readyz and /metrics at the root.
    """
    import uvicorn

    from api.app import create_app
    from cityops.db import pool

    settings = settings_of(ctx)
    if migrate:
        from cityops.db import migrate as migrations

        with pool.connect(settings.db, autocommit=True) as conn:
            migrations.migrate(conn, settings.storage)
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    err_console.print(f"cityops API on http://{bind_host}:{bind_port} (docs at /docs)")
    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=bind_port,
        log_config=None,  # structlog (cityops.logging) already owns the log output
        access_log=False,  # request counts and latency are in /metrics
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Who or what uses the key (unique), e.g. grafana.")],
    role: Annotated[apikeys.Role, typer.Option(help="viewer, duty or admin.")],
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        key_id, plaintext = apikeys.create_key(conn, name, role)
    err_console.print(
        f"created key {key_id} ({name}, {role.value}); store it now, it is not shown again:"
    )
    out.print(plaintext, highlight=False)


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table.")] = False,
    revoked: Annotated[bool, typer.Option(help="Include revoked keys.")] = True,
) -> None:
    """List keys (never their secrets)."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        rows = apikeys.list_keys(conn, include_revoked=revoked)
    if as_json:
        for r in rows:
            out.print(
                json.dumps(
                    {
                        "id": r.id,
                        "name": r.name,
                        "role": r.role,
                        "prefix": r.prefix,
                        "created_at": r.created_at.isoformat(),
                        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                        "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
                    },
                    ensure_ascii=False,
                ),
                highlight=False,
                soft_wrap=True,
            )
        return
    table = Table("id", "name", "role", "prefix", "created", "last used", "revoked")
    for r in rows:
        table.add_row(
            str(r.id),
            r.name,
            r.role,
            r.prefix + "…",
            f"{r.created_at:%Y-%m-%d %H:%M}",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "",
            f"{r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Key id or name.")],
) -> None:
    """Revoke a key: requests with it get 401 from now on."""
    from cityops.db import pool

    settings = settings_of(ctx)
    with pool.connect(settings.db) as conn:
        key_id = apikeys.revoke_key(conn, key)
    out.print(f"revoked key {key_id}")
