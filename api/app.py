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
        docs_url="/docs",
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
    return app
