"""Dependencies every router uses: settings, the database pool, a connection, auth and paging.

``app.state.pool`` is a **synchronous** :class:`psycopg_pool.ConnectionPool` (opened in the app's
lifespan, closed at shutdown). Endpoints are plain ``def`` functions, which FastAPI runs in its
thread pool, so a slow query never blocks the event loop; async code (the live feed) must use it
through ``starlette.concurrency.run_in_threadpool`` or a thread of its own.

Keys are accepted as ``Authorization: Bearer <key>``, ``X-API-Key: <key>`` or, for EventSource
clients that cannot set headers, the ``api_key`` query parameter.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from api.errors import ApiError, ErrorBody
from api.middleware import AuthThrottle
from cityops import apikeys
from cityops.apikeys import Principal, Role
from cityops.settings import Settings

__all__ = [
    "Admin",
    "ConnDep",
    "Duty",
    "Principal",
    "Role",
    "SettingsDep",
    "Viewer",
    "get_conn",
    "get_pool",
    "get_settings",
    "is_public",
    "page_limit",
    "require_role",
]

WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="cityops"'}

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`")
_query = APIKeyQuery(
    name="api_key", auto_error=False, description="`?api_key=<key>` (for EventSource clients)"
)


def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


def get_pool(request: Request) -> ConnectionPool:
    """The app's connection pool."""
    pool: ConnectionPool = request.app.state.pool
    return pool


def get_conn(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection for one request; rolled back on error. Writers commit explicitly."""
    with get_pool(request).connection() as conn:
        yield conn


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers=WWW_AUTHENTICATE)


def _client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def authenticate_key(request: Request, key: str | None, role: Role) -> Principal:
    """The principal of ``key`` if it has at least ``role``; else 401/403/429 as ApiError.

    Failed checks (unknown or revoked keys) are counted per client address and per presented
    key (``api.auth_failures_max`` within ``api.auth_failure_window_s``); over the limit the
    answer is 429 with ``Retry-After`` before the database is asked.
    """
    if not key:
        raise _unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
            "(keys are created with `cityops keys create`)"
        )
    throttle: AuthThrottle | None = getattr(request.app.state, "auth_throttle", None)
    address = _client_address(request)
    if throttle is not None:
        wait = throttle.retry_after(address, key)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "too_many_requests",
                f"too many failed API key checks from this address or for this key; "
                f"try again in {seconds} s",
                {"retry_after_s": seconds},
                headers={"Retry-After": str(seconds)},
            )
    with get_pool(request).connection() as conn:
        principal = apikeys.authenticate(conn, key)
    if principal is None:
        if throttle is not None:
            throttle.failed(address, key)
        raise _unauthorized("the API key is not valid or has been revoked")
    if principal.role < role:
        raise ApiError(
            403,
            "forbidden",
            f"this needs the {role.value} role; key {principal.name!r} has {principal.role.value}",
        )
    request.state.principal = principal
    return principal


def request_key(request: Request) -> str | None:
    """The key a request presents (Bearer, X-API-Key or ``api_key``), if any."""
    auth = request.headers.get("authorization", "")
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key") or request.query_params.get("api_key") or None


@functools.cache
def require_role(role: Role) -> Callable[..., Principal]:
    """A dependency that authenticates the caller's key and requires at least ``role``.

    401 (with ``WWW-Authenticate``) when the key is missing, unknown or revoked; 403 when its role
    is too low; 429 after too many failed checks (:func:`authenticate_key`). The principal is
    also left on ``request.state.principal``. One callable per role (cached), so FastAPI
    authenticates once per request.
    """

    def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_header)],
        query: Annotated[str | None, Depends(_query)],
    ) -> Principal:
        key = (bearer.credentials if bearer else None) or header or query
        return authenticate_key(request, key, role)

    dependency.__name__ = f"require_{role.value}"
    return dependency


def is_public(settings: Settings, which: str) -> bool:
    """Whether ``/metrics`` (``which="metrics"``) or the docs are served without a key."""
    value: bool | None = getattr(settings.api, f"{which}_public")
    return settings.environment != "production" if value is None else value


Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Duty = Annotated[Principal, Depends(require_role(Role.DUTY))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[psycopg.Connection[Any], Depends(get_conn)]

LimitQuery = Annotated[
    int,
    Query(ge=1, le=100_000, description="Page size (at most the server's api.page_size_max)."),
]


def page_limit(settings: Settings, limit: int, hard_max: int | None = None) -> int:
    """``limit`` checked against the configured page size cap (and an endpoint's own cap)."""
    cap = (
        settings.api.page_size_max
        if hard_max is None
        else min(hard_max, settings.api.page_size_max)
    )
    if limit > cap:
        raise ApiError(
            422,
            "invalid",
            f"limit: at most {cap} rows per page; follow next_cursor for more",
            {"field": "limit"},
        )
    return limit


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be parsed (not JSON/UTF-8)."},
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "The key's role is too low."},
    404: {"model": ErrorBody, "description": "No such resource."},
    409: {"model": ErrorBody, "description": "The resource's state does not allow this."},
    422: {"model": ErrorBody, "description": "Invalid input; the message names the field."},
    503: {"model": ErrorBody, "description": "The database is unreachable or too slow."},
}
