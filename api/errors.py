"""One JSON error body for every 4xx/5xx: ``{"error": {"code", "message", "detail"}}``.

Library and domain errors are translated here, once. Bad input must come back as a 4xx that says
what was wrong; a 500 means a bug.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from cityops.errors import CityopsError, ImportFileError, ValidationError

log = structlog.get_logger(__name__)


class ErrorInfo(BaseModel):
    """What went wrong."""

    code: str
    message: str
    detail: Any = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message for the caller."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers


def bad_request(message: str, field: str | None = None) -> ApiError:
    """A 422 naming the offending field."""
    return ApiError(422, "invalid", message, {"field": field} if field else None)


def not_found(message: str) -> ApiError:
    """A 404."""
    return ApiError(404, "not_found", message)


def conflict(message: str) -> ApiError:
    """A 409: the request is well-formed but the resource's state does not allow it."""
    return ApiError(409, "conflict", message)


def from_domain(err: CityopsError) -> ApiError:
    """Translate an error from the owning package (alerts, cases, registry) into a response.

    The stores say "there is no ..." for a missing row; anything else is a refused state change
    (already acknowledged, not an allowed stage move) or a bad value.
    """
    message = str(err)
    if message.startswith("there is no"):
        return not_found(message)
    if isinstance(err, ValidationError | ImportFileError):
        return bad_request(message, getattr(err, "field", None))
    if ":" in message.split(" ", 1)[0]:  # "field: problem" — the caller sent a bad value
        return bad_request(message, message.split(":", 1)[0])
    return conflict(message)


def _body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": jsonable_encoder(detail)}}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the JSON error body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            _body(exc.code, exc.message, exc.detail), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            problems.append(
                {
                    "field": ".".join(loc[1:]) or ".".join(loc),
                    "in": loc[0] if loc else "",
                    "message": e.get("msg", ""),
                }
            )
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        return JSONResponse(
            _body("invalid", f"invalid request: {summary}", problems), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(
            _body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("api_db_unavailable", error=str(exc))
        return JSONResponse(
            _body("database_unavailable", "the database is not reachable; try again later"),
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(psycopg.OperationalError)
    async def _operational(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        if isinstance(exc, psycopg.errors.QueryCanceled):
            message = "the query took too long; narrow the time range or the filters"
        else:
            message = "the database is not reachable; try again later"
        log.warning("api_db_error", error=str(exc).strip())
        return JSONResponse(
            _body("database_unavailable", message), status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(psycopg.DataError)
    async def _data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # A safety net: inputs are validated before queries, but a value PostgreSQL cannot hold
        # (a NUL byte in text, an out-of-range number) is still the caller's mistake, not a 500.
        return JSONResponse(
            _body("invalid", f"invalid value: {str(exc).strip().splitlines()[0]}"),
            status_code=422,
        )
