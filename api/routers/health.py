"""``/healthz`` (the process answers), ``/readyz`` (database and broker reachable, ingest's stream
core and alert engine keeping up), ``/metrics``."""

from __future__ import annotations

import socket
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from api.deps import authenticate_key, get_pool, get_settings, is_public, request_key
from cityops import heartbeat
from cityops.apikeys import Role

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 2.0


class Health(BaseModel):
    """The process is up."""

    status: str


class ConsumerProgress(BaseModel):
    """The stored progress of one of ingest's consumers (stream core, alert engine)."""

    age_s: float
    lag_s: float
    stopped: bool
    stale: bool


class Readiness(BaseModel):
    """Whether each dependency answered, and why not when it did not."""

    status: str
    database: bool
    broker: bool
    consumers: dict[str, ConsumerProgress] = {}
    errors: dict[str, str]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Cheap liveness probe: no I/O."""
    return Health(status="ok")


def _check_database(request: Request) -> str | None:
    try:
        with get_pool(request).connection(timeout=READY_TIMEOUT_S) as conn:
            conn.execute("SELECT 1").fetchone()
    except Exception as err:  # any failure means not ready; the reason goes in the body
        return str(err).strip() or type(err).__name__
    return None


def _check_consumers(request: Request) -> tuple[dict[str, ConsumerProgress], str | None]:
    """ingest's stream core and alert engine write a heartbeat row after each flush/commit.

    A running consumer (not stopped gracefully) whose row is older than ``stream.max_lag_s``,
    or that stored a lag above it, is stale: live rates or alerts are not being stored.
    """
    limit = get_settings(request).stream.max_lag_s
    try:
        with get_pool(request).connection(timeout=READY_TIMEOUT_S) as conn:
            beats = heartbeat.read(conn)
    except Exception as err:  # the database check reports the cause
        return {}, str(err).strip() or type(err).__name__
    found = {
        b.consumer: ConsumerProgress(
            age_s=round(b.age_s, 3),
            lag_s=round(b.lag_s, 3),
            stopped=b.stopped_at is not None,
            stale=b.stale(limit),
        )
        for b in beats
    }
    stale = [
        f"{name}: last progress {p.age_s:.0f} s ago, lag {p.lag_s:.0f} s (limit {limit:.0f} s)"
        for name, p in found.items()
        if p.stale
    ]
    return found, "; ".join(stale) or None


def _check_broker(request: Request) -> str | None:
    """A TCP connect plus an MQTT CONNECT; any CONNACK (even a refusal) means the broker is up.

    The API has no broker account of its own to prove; a refused CONNACK still shows that the
    broker is reachable and speaking MQTT, which is what readiness needs.
    """
    mqtt = get_settings(request).mqtt
    try:
        with socket.create_connection((mqtt.host, mqtt.port), timeout=READY_TIMEOUT_S) as sock:
            if mqtt.tls:
                return None  # TLS handshake needs the CA setup of ingest; TCP reachability suffices
            client_id = b"cityops-readyz"
            variable = b"\x00\x04MQTT\x04\x02\x00\x05"  # MQTT 3.1.1, clean session, keepalive 5 s
            payload = len(client_id).to_bytes(2, "big") + client_id
            body = variable + payload
            sock.sendall(b"\x10" + bytes([len(body)]) + body)
            reply = sock.recv(4)
            if len(reply) < 2 or reply[0] != 0x20:
                return f"{mqtt.host}:{mqtt.port} did not answer with an MQTT CONNACK"
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError as err:
        return f"{mqtt.host}:{mqtt.port}: {err}"
    return None


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is not reachable."}},
)
def readyz(request: Request) -> Any:
    """Ready when the database answers ``SELECT 1``, the broker answers an MQTT CONNECT and
    every running stream core and alert engine stored progress within ``stream.max_lag_s``."""
    errors: dict[str, str] = {}
    consumers: dict[str, ConsumerProgress] = {}
    db = _check_database(request)
    if db:
        errors["database"] = db
    else:
        consumers, stale = _check_consumers(request)
        if stale:
            errors["consumers"] = stale
    broker = _check_broker(request)
    if broker:
        errors["broker"] = broker
    body = Readiness(
        status="not ready" if errors else "ready",
        database=db is None,
        broker=broker is None,
        consumers=consumers,
        errors=errors,
    )
    return JSONResponse(body.model_dump(), status_code=503 if errors else 200)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    },
)
def metrics(request: Request) -> Response:
    """Prometheus exposition: request metrics and database gauges (see docs/api.md).

    Needs a viewer key unless ``api.metrics_public`` (default: public only in development).

    A sync endpoint rather than ``make_asgi_app``: the database gauges query PostgreSQL, which
    must not run on the event loop.
    """
    settings = get_settings(request)
    if not is_public(settings, "metrics"):
        authenticate_key(request, request_key(request), Role.VIEWER)
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
