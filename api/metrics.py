"""Prometheus metrics of the API process: its own requests, plus gauges read from the database.

Each app has its own :class:`CollectorRegistry` (no import-time globals, so tests can build many
apps). The database gauges are read at scrape time by :class:`DatabaseCollector`; the metric
names are listed in docs/api.md, which the Prometheus rules and dashboards rely on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

_SCRAPE_SQL = {
    "alerts": "SELECT severity, state, count(*) FROM alerts "
    "WHERE state <> 'resolved' AND NOT cancelled GROUP BY 1, 2",
    "unacked": "SELECT severity, count(*) FROM alerts "
    "WHERE state = 'firing' AND acked_at IS NULL GROUP BY 1",
    "cases": "SELECT stage, count(*) FROM cases WHERE stage <> 'closed' GROUP BY 1",
    "dead_letters": "SELECT count(*) FROM dead_letters "
    "WHERE received_at > now() - interval '1 hour'",
    "notifications": "SELECT status, count(*) FROM notifications "
    "WHERE status IN ('pending', 'failed') GROUP BY 1",
    "given_up": "SELECT count(*) FROM notifications "
    "WHERE status = 'given_up' AND created_at > now() - interval '1 hour'",
    "keys": "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL",
}


class DatabaseCollector(Collector):
    """Operational gauges read from PostgreSQL at scrape time."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauges; when the database is down, only ``cityops_api_database_up 0``."""
        up = GaugeMetricFamily(
            "cityops_api_database_up", "1 when the API could read the database at this scrape."
        )
        try:
            with self.pool.connection(timeout=2.0) as conn:
                rows = {name: conn.execute(q).fetchall() for name, q in _SCRAPE_SQL.items()}
        except Exception as err:  # a failed scrape must still answer, with database_up 0
            log.warning("api_metrics_scrape_failed", error=str(err).strip())
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        alerts = GaugeMetricFamily(
            "cityops_alerts_open",
            "Open (pending or firing) alerts by severity and state.",
            labels=["severity", "state"],
        )
        for severity in ("info", "warning", "critical"):
            for state in ("pending", "firing"):
                n = sum(r[2] for r in rows["alerts"] if r[0] == severity and r[1] == state)
                alerts.add_metric([severity, state], n)
        yield alerts
        unacked = GaugeMetricFamily(
            "cityops_alerts_firing_unacknowledged",
            "Firing alerts nobody has acknowledged, by severity.",
            labels=["severity"],
        )
        for severity in ("info", "warning", "critical"):
            unacked.add_metric([severity], sum(r[1] for r in rows["unacked"] if r[0] == severity))
        yield unacked
        cases = GaugeMetricFamily(
            "cityops_cases_open", "Cases not closed yet, by stage.", labels=["stage"]
        )
        for stage in ("detected", "filed", "dispatched", "handled", "verified"):
            cases.add_metric([stage], sum(r[1] for r in rows["cases"] if r[0] == stage))
        yield cases
        yield GaugeMetricFamily(
            "cityops_dead_letters_last_hour",
            "Messages dead-lettered by ingest in the last hour.",
            value=rows["dead_letters"][0][0],
        )
        pending = GaugeMetricFamily(
            "cityops_notifications_undelivered",
            "Notifications waiting for delivery: pending (queued) or failed (retry scheduled).",
            labels=["status"],
        )
        for status in ("pending", "failed"):
            pending.add_metric([status], sum(r[1] for r in rows["notifications"] if r[0] == status))
        yield pending
        yield GaugeMetricFamily(
            "cityops_notifications_given_up_last_hour",
            "Notifications created in the last hour whose delivery was abandoned after retries.",
            value=rows["given_up"][0][0],
        )
        yield GaugeMetricFamily(
            "cityops_api_keys_active", "API keys not revoked.", value=rows["keys"][0][0]
        )


class ApiMetrics:
    """The API's registry and request instruments."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cityops_api_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cityops_api_request_duration_seconds",
            "Time to the response headers, by method and route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "cityops_api_requests_in_flight",
            "Requests being handled (live-feed streams included).",
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(pool))


def route_template(scope: Scope) -> str:
    """The full route template of a request (``/api/v1/alerts/{alert_id}``), or ``unmatched``.

    Routers included with a prefix keep their own relative path on ``scope["route"]``, so the
    prefix is taken from the request path: the leading segments the route itself did not match.
    """
    route: Any = scope.get("route")
    relative = getattr(route, "path", None)
    if not isinstance(relative, str):
        return "unmatched"
    if ":path}" in relative:  # a catch-all matches any number of segments: keep it relative
        return relative
    own = relative.strip("/").split("/") if relative.strip("/") else []
    actual = str(scope.get("path", "")).strip("/").split("/")
    prefix = actual[: max(len(actual) - len(own), 0)]
    return "/" + "/".join([*prefix, *own]) if (prefix or own) else "/"


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request.

    Pure ASGI (not BaseHTTPMiddleware) so streaming responses (CSV export, live feed) pass
    through untouched. Routes are labelled by template (``/api/v1/alerts/{alert_id}``), never
    by raw path, to keep label cardinality bounded.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Measure one request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        recorded = {"done": False}

        def record() -> None:
            if recorded["done"]:
                return
            recorded["done"] = True
            template = route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, template, str(status["code"])).inc()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                record()
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            record()
            self.metrics.in_flight.dec()
