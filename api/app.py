"""The app factory: ``create_app(settings)`` builds the FastAPI app with its pool, routers and hub.

Nothing is created at import time; every app (and every test) has its own pool, metrics registry
and live-feed hub. The pool is opened without waiting, so the API starts while the database is
still coming up — ``/readyz`` says when it is usable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api import errors, live, page
from api.deps import ERROR_RESPONSES
from api.metrics import ApiMetrics, MetricsMiddleware
from api.routers import alerts, cases, health, rates, readings, registry, reports
from cityops.db.pool import make_pool
from cityops.settings import Settings

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"

DESCRIPTION = """\
Registry, history, latest state, rates, alerts, cases, complaints, reports and a live feed of the
city operations center. Every `/api/v1` endpoint needs an API key (`cityops keys create`), sent as
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Roles: **viewer** reads, **duty**
acknowledges alerts and moves cases, **admin** changes the registry. Errors are
`{"error": {"code", "message", "detail"}}`. See docs/api.md.
"""


def create_app(settings: Settings) -> FastAPI:
    """Build the API app for ``settings`` (the pool opens in the lifespan)."""
    pool = make_pool(settings.db, name="cityops-api")
    # Fail a request with 503 after 10 s without a connection rather than the pool's 30 s.
    pool.timeout = 10.0
    metrics = ApiMetrics(pool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(pool.open, wait=False)
        hub = live.LiveHub(settings, pool)
        app.state.live = hub
        await hub.start()
        log.info("api_started")
        try:
            yield
        finally:
            await hub.stop()
            await run_in_threadpool(pool.close)
            log.info("api_stopped")

    app = FastAPI(
        title="cityops API",
        version="1",
        description=DESCRIPTION,
        docs_url=None,  # served from the package below (no CDN)
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.metrics = metrics
    errors.install(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    app.include_router(health.router)
    for module in (registry, readings, rates, alerts, cases):
        app.include_router(module.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(reports.router, prefix=API_PREFIX)
    app.include_router(live.router, prefix=API_PREFIX)
    app.include_router(page.router)
    _serve_docs_offline(app)
    return app


def _serve_docs_offline(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles served from this server.

    FastAPI's default pages load them from a CDN, and an operations centre's network often has
    no internet: the assets come from the ``fastapi-offline`` wheel (MIT; Swagger UI is
    Apache-2.0, ReDoc MIT) under ``/docs-assets``.
    """
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )
