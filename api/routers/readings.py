"""Readings history: raw rows (paged), server-side downsampling into time buckets, CSV export.

Every query needs a kind, one device or one area, and a time range. Nothing returns unbounded
rows: raw rows are keyset-paged, buckets are limited to ``api.readings_max_buckets`` per query
and paged too, an export stops at ``api.export_max_rows``. Buckets use ``date_bin`` aligned to
2000-01-01 UTC, which behaves the same with and without TimescaleDB.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from psycopg import sql
from pydantic import BaseModel

from api.deps import ConnDep, LimitQuery, SettingsDep, Viewer, get_pool, page_limit
from api.errors import bad_request, not_found
from api.routers.common import (
    CursorQuery,
    Page,
    check_range,
    make_cursor,
    split_cursor,
)
from cityops import catalog
from cityops.catalog import FieldType, KindSpec
from cityops.settings import Settings

router = APIRouter(tags=["readings"])

BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
MAX_BUCKET_S = 366 * 86_400


class Reading(BaseModel):
    """One stored reading."""

    device_id: str
    ts: datetime
    values: dict[str, Any]


class Bucket(BaseModel):
    """Readings of one time bucket, aggregated per field.

    Numbers get ``avg``/``min``/``max``, booleans ``share_true`` (0..1), text and enums ``last``.
    """

    bucket: datetime
    readings: int
    devices: int
    values: dict[str, dict[str, Any]]


DeviceQuery = Annotated[
    str | None, Query(max_length=64, description="One device (its kind is implied).")
]
AreaQuery = Annotated[
    str | None, Query(max_length=64, description="Every device of `kind` in this area.")
]
FieldsQuery = Annotated[
    str | None,
    Query(max_length=1000, description="Comma-separated reading fields; default: all of the kind."),
]


@dataclass(frozen=True, kw_only=True, slots=True)
class _Scope:
    spec: KindSpec
    device_id: str | None
    area_code: str | None
    fields: tuple[catalog.FieldSpec, ...]
    start: datetime
    end: datetime


def _scope(
    conn: psycopg.Connection[Any],
    settings: Settings,
    kind: catalog.Kind | None,
    device_id: str | None,
    area_code: str | None,
    fields: str | None,
    start: datetime,
    end: datetime,
) -> _Scope:
    """Validate the common parameters against the catalog and the registry."""
    if (device_id is None) == (area_code is None):
        raise bad_request("give exactly one of device_id and area_code", "device_id")
    lo, hi = check_range(start, end)
    if hi - lo > timedelta(days=settings.api.readings_max_span_days):
        raise bad_request(
            f"end: the range may span at most {settings.api.readings_max_span_days} days", "end"
        )
    if device_id is not None:
        row = conn.execute("SELECT kind FROM devices WHERE device_id = %s", (device_id,)).fetchone()
        if row is None:
            raise not_found(f"there is no device {device_id!r}")
        if kind is not None and kind.value != row[0]:
            raise bad_request(
                f"kind: device {device_id!r} is a {row[0]}, not a {kind.value}", "kind"
            )
        kind = catalog.Kind(row[0])
    else:
        if kind is None:
            raise bad_request("kind: required with area_code", "kind")
        if conn.execute("SELECT 1 FROM areas WHERE code = %s", (area_code,)).fetchone() is None:
            raise not_found(f"there is no area {area_code!r}")
    spec = catalog.KINDS[kind]
    return _Scope(
        spec=spec,
        device_id=device_id,
        area_code=area_code,
        fields=_fields(spec, fields),
        start=lo,
        end=hi,
    )


def _fields(spec: KindSpec, fields: str | None) -> tuple[catalog.FieldSpec, ...]:
    """The requested reading fields, checked against the catalog; all of them by default."""
    if fields is None or not fields.strip():
        return spec.readings
    picked: list[catalog.FieldSpec] = []
    for name in (n.strip() for n in fields.split(",")):
        field = spec.reading_field(name)
        if field is None:
            allowed = ", ".join(f.name for f in spec.readings)
            raise bad_request(
                f"fields: {name!r} is not a {spec.kind.value} field; use {allowed}", "fields"
            )
        if field not in picked:
            picked.append(field)
    return tuple(picked)


def _where(scope: _Scope) -> sql.Composable:
    if scope.device_id is not None:
        return sql.SQL("device_id = %(device)s")
    return sql.SQL(
        "device_id IN (SELECT device_id FROM devices "
        "WHERE area_code = %(area)s AND kind = %(kind)s)"
    )


def _raw_query(scope: _Scope, after: tuple[datetime, str] | None) -> sql.Composed:
    return sql.SQL(
        "SELECT device_id, ts, {cols} FROM {table} WHERE {where} "
        "AND ts >= %(start)s AND ts < %(end)s {after} ORDER BY ts, device_id LIMIT %(limit)s"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(f.name) for f in scope.fields),
        table=sql.Identifier(scope.spec.table),
        where=_where(scope),
        after=sql.SQL("AND (ts, device_id) > (%(after_ts)s, %(after_id)s)")
        if after
        else sql.SQL(""),
    )


def _params(scope: _Scope, **extra: Any) -> dict[str, Any]:
    return {
        "device": scope.device_id,
        "area": scope.area_code,
        "kind": scope.spec.kind.value,
        "start": scope.start,
        "end": scope.end,
        **extra,
    }


@router.get("/readings", response_model=Page[Reading])
def list_readings(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    start: datetime,
    end: datetime,
    kind: catalog.Kind | None = None,
    device_id: DeviceQuery = None,
    area_code: AreaQuery = None,
    fields: FieldsQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 1000,
) -> Page[Reading]:
    """Raw readings in [start, end) of one device or of an area's devices of a kind, by time."""
    limit = page_limit(settings, limit)
    scope = _scope(conn, settings, kind, device_id, area_code, fields, start, end)
    after = split_cursor(cursor)
    params = _params(scope, limit=limit)
    if after:
        params.update(after_ts=after[0], after_id=after[1])
    rows = conn.execute(_raw_query(scope, after), params).fetchall()
    names = [f.name for f in scope.fields]
    items = [
        Reading(device_id=r[0], ts=r[1], values=dict(zip(names, r[2:], strict=True))) for r in rows
    ]
    last = items[-1] if len(items) == limit else None
    return Page(items=items, next_cursor=make_cursor(last.ts, last.device_id) if last else None)


def _aggregates(
    fields: tuple[catalog.FieldSpec, ...],
) -> tuple[sql.Composable, list[tuple[str, str]]]:
    parts: list[sql.Composable] = []
    keys: list[tuple[str, str]] = []
    for f in fields:
        col = sql.Identifier(f.name)
        if f.type in (FieldType.FLOAT, FieldType.INT):
            for fn in ("avg", "min", "max"):
                parts.append(sql.SQL(fn + "({})::double precision").format(col))
                keys.append((f.name, fn))
        elif f.type is FieldType.BOOL:
            parts.append(sql.SQL("avg({}::int)::double precision").format(col))
            keys.append((f.name, "share_true"))
        else:
            parts.append(
                sql.SQL(
                    "(array_agg({c}::text ORDER BY ts DESC) FILTER (WHERE {c} IS NOT NULL))[1]"
                ).format(c=col)
            )
            keys.append((f.name, "last"))
    return sql.SQL(", ").join(parts), keys


@router.get("/readings/buckets", response_model=Page[Bucket])
def readings_buckets(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    start: datetime,
    end: datetime,
    bucket_s: Annotated[
        int, Query(ge=1, le=MAX_BUCKET_S, description="Bucket width in seconds (e.g. 3600).")
    ],
    kind: catalog.Kind | None = None,
    device_id: DeviceQuery = None,
    area_code: AreaQuery = None,
    fields: FieldsQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 1000,
) -> Page[Bucket]:
    """Readings downsampled into ``bucket_s`` buckets.

    One series: the device's readings, or all readings of the area's devices of ``kind``.
    """
    limit = page_limit(settings, limit)
    scope = _scope(conn, settings, kind, device_id, area_code, fields, start, end)
    span_s = (scope.end - scope.start).total_seconds()
    if span_s / bucket_s > settings.api.readings_max_buckets:
        need = int(span_s // settings.api.readings_max_buckets) + 1
        raise bad_request(
            f"bucket_s: {span_s / bucket_s:.0f} buckets exceed the limit of "
            f"{settings.api.readings_max_buckets}; use bucket_s >= {need} or a shorter range",
            "bucket_s",
        )
    lo = scope.start
    after = split_cursor(cursor)
    if after:
        lo = max(lo, after[0] + timedelta(seconds=bucket_s))
    aggs, keys = _aggregates(scope.fields)
    query = sql.SQL(
        "SELECT date_bin(make_interval(secs => %(bucket)s), ts, %(origin)s) AS b, count(*), "
        "count(DISTINCT device_id), {aggs} FROM {table} WHERE {where} "
        "AND ts >= %(start)s AND ts < %(end)s GROUP BY b ORDER BY b LIMIT %(limit)s"
    ).format(aggs=aggs, table=sql.Identifier(scope.spec.table), where=_where(scope))
    params = _params(scope, bucket=bucket_s, origin=BUCKET_ORIGIN, limit=limit)
    params["start"] = lo
    items: list[Bucket] = []
    for row in conn.execute(query, params).fetchall():
        values: dict[str, dict[str, Any]] = {}
        for (name, agg), value in zip(keys, row[3:], strict=True):
            values.setdefault(name, {})[agg] = value
        items.append(Bucket(bucket=row[0], readings=row[1], devices=row[2], values=values))
    last = items[-1] if len(items) == limit else None
    return Page(items=items, next_cursor=make_cursor(last.bucket, "b") if last else None)


@router.get(
    "/readings/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def export_readings(
    _: Viewer,
    request: Request,
    settings: SettingsDep,
    start: datetime,
    end: datetime,
    kind: catalog.Kind | None = None,
    device_id: DeviceQuery = None,
    area_code: AreaQuery = None,
    fields: FieldsQuery = None,
) -> StreamingResponse:
    """Raw readings in [start, end) as CSV, streamed (at most ``api.export_max_rows`` rows)."""
    pool = get_pool(request)
    # No request-scoped connection here: the body streams after the handler returns, and holding
    # one connection while the stream takes another could exhaust the pool under load.
    with pool.connection() as conn:
        scope = _scope(conn, settings, kind, device_id, area_code, fields, start, end)
    query = _raw_query(scope, None)
    params = _params(scope, limit=settings.api.export_max_rows)
    header = ["device_id", "ts", *(f.name for f in scope.fields)]

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        # A named (server-side) cursor keeps memory flat on big exports.
        with pool.connection() as own, own.cursor(name="readings_export") as cur:
            cur.itersize = 5000
            cur.execute(query, params)
            for n, row in enumerate(cur, start=1):
                writer.writerow(
                    [row[0], row[1].isoformat(), *("" if v is None else v for v in row[2:])]
                )
                if n % 1000 == 0:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{scope.device_id or scope.area_code}")
    name = f"{stem}-{scope.spec.kind.value}.csv"  # headers are latin-1: keep the name ASCII
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
