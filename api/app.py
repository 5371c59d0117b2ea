"""The app factory: ``create_app(settings)`` builds the FastAPI app with its pool, routers and hub.

Nothing is created at import time; every app (and every test) has its own pool, metrics registry
and live-feed hub. The pool is opened without waiting, so the API starts while the database is
still coming up — ``/readyz`` says when it is usable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from api import errors, live, page
from api.deps import ERROR_RESPONSES, authenticate_key, is_public, request_key
from api.metrics import ApiMetrics, MetricsMiddleware
from api.middleware import (
    IMPORT_PATHS,
    AuthThrottle,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
)
from api.routers import alerts, cases, health, rates, readings, registry, reports
from cityops.apikeys import Role
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

    docs_public = is_public(settings, "docs")
    app = FastAPI(
        title="cityops API",
        version="1",
        description=DESCRIPTION,
        docs_url=None,  # served from the package below (no CDN), with or without a key
        redoc_url=None,
        openapi_url="/openapi.json" if docs_public else None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.metrics = metrics
    app.state.auth_throttle = AuthThrottle(
        settings.api.auth_failures_max, settings.api.auth_failure_window_s
    )
    errors.install(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # added last = outermost: a too-large body is refused before anything else reads it, and
    # every response, the 413 included, gets the security headers
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings.api.max_body_bytes,
        limits=dict.fromkeys(IMPORT_PATHS, settings.api.max_import_bytes),
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if not docs_public:
        _protected_docs(app)

    app.include_router(health.router)
    for module in (registry, readings, rates, alerts, cases):
        app.include_router(module.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(reports.router, prefix=API_PREFIX)
    app.include_router(live.router, prefix=API_PREFIX)
    app.include_router(page.router)
    _serve_docs_offline(app, protected=not docs_public)
    return app


def _serve_docs_offline(app: FastAPI, *, protected: bool) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles served from this server.

    FastAPI's default pages load them from a CDN, and an operations centre's network often has
    no internet: the assets come from the ``fastapi-offline`` wheel (MIT; Swagger UI is
    Apache-2.0, ReDoc MIT) under ``/docs-assets``. With ``protected`` (``api.docs_public`` off)
    the pages need a viewer key, as a header or as ``?api_key=`` (a browser opening ``/docs``),
    and load the schema with the same key.
    """
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    def schema_url(request: Request) -> str:
        if not protected:
            return "/openapi.json"
        key = request_key(request)
        authenticate_key(request, key, Role.VIEWER)
        query = f"?{urlencode({'api_key': key})}" if request.query_params.get("api_key") else ""
        return f"/openapi.json{query}"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=schema_url(request),
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=schema_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )


def _protected_docs(app: FastAPI) -> None:
    """``/openapi.json`` that needs a viewer key (``api.docs_public`` off); the pages that read
    it are ``_serve_docs_offline``'s."""

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(request: Request) -> JSONResponse:
        authenticate_key(request, request_key(request), Role.VIEWER)
        return JSONResponse(app.openapi())
