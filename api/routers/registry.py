"""Areas and devices: list, filter, page, detail, create/update, bulk import, latest state.

Writes go through cityops.registry, the same validation and upsert the `cityops areas|devices
import` commands use, so a row the CLI rejects the API rejects with the same message.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Path, Query, Request
from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import Admin, ConnDep, LimitQuery, SettingsDep, Viewer, get_pool, page_limit
from api.errors import ApiError, bad_request, from_domain, not_found
from api.routers.common import CursorQuery, ImportResult, ImportRowError, Page
from cityops import catalog, registry
from cityops.errors import CityopsError

router = APIRouter(tags=["registry"])

MAX_IMPORT_BYTES = 20 * 1024 * 1024
ID_PATTERN = r"^[^\x00-\x1f/]{1,64}$"
AreaCode = Annotated[str, Path(pattern=ID_PATTERN, description="Street/township code.")]
DeviceId = Annotated[str, Path(pattern=ID_PATTERN, description="Device id.")]


class Area(BaseModel):
    """A street or township, the unit of aggregation."""

    code: str
    name_zh: str
    name_en: str | None
    type: str
    district: str
    lon: float | None
    lat: float | None
    land_area_km2: float | None
    population: int | None
    heated_area_m2: float | None
    generated: list[str] = Field(description="Attributes that are generated, not surveyed.")


class AreaIn(BaseModel):
    """An area to create or replace (the code is in the path)."""

    model_config = ConfigDict(extra="forbid")

    name_zh: str
    name_en: str | None = None
    type: catalog.AreaType
    district: str
    lon: float | None = None
    lat: float | None = None
    land_area_km2: float | None = None
    population: int | None = None
    heated_area_m2: float | None = None
    generated: list[str] = Field(default_factory=list)


class Device(BaseModel):
    """A registered device."""

    device_id: str
    kind: catalog.Kind
    area_code: str
    lat: float | None
    lon: float | None
    gateway_id: str | None
    install_date: date | None
    status: str
    attributes: dict[str, Any]


class DeviceIn(BaseModel):
    """A device to create or update (the id is in the path; a device never changes kind)."""

    model_config = ConfigDict(extra="forbid")

    kind: catalog.Kind
    area_code: str
    lat: float | None = None
    lon: float | None = None
    gateway_id: str | None = None
    install_date: date | None = None
    status: catalog.DeviceStatus = catalog.DeviceStatus.IN_SERVICE
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="Kind-specific attributes (see docs/catalog.md)."
    )


class LatestReading(BaseModel):
    """The newest stored reading of a device."""

    ts: datetime
    received_at: datetime
    values: dict[str, Any]


class DeviceLatest(BaseModel):
    """A device's latest reading and online state."""

    device_id: str
    kind: catalog.Kind
    reading: LatestReading | None
    online: bool | None = Field(description="From the last status message; null if none came.")
    status_ts: datetime | None


# --- areas -----------------------------------------------------------------------------------

AREA_COLUMNS = (
    "code, name_zh, name_en, type, district, lon, lat, land_area_km2, population, "
    "heated_area_m2, generated"
)
LIST_AREAS_SQL = f"""
SELECT {AREA_COLUMNS} FROM areas
WHERE (%(district)s::text IS NULL OR district = %(district)s)
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(after)s::text IS NULL OR code > %(after)s)
ORDER BY code
LIMIT %(limit)s
"""


def _area(row: tuple[Any, ...]) -> Area:
    return Area(**dict(zip(AREA_COLUMNS.split(", "), row, strict=True)))


@router.get("/areas", response_model=Page[Area])
def list_areas(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    district: Annotated[str | None, Query(max_length=100)] = None,
    type: Annotated[catalog.AreaType | None, Query()] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[Area]:
    """Areas by code, filtered by district and type."""
    limit = page_limit(settings, limit)
    rows = conn.execute(
        LIST_AREAS_SQL,
        {
            "district": district,
            "type": type.value if type else None,
            "after": cursor,
            "limit": limit,
        },
    ).fetchall()
    items = [_area(r) for r in rows]
    return Page(items=items, next_cursor=items[-1].code if len(items) == limit else None)


@router.get("/areas/{code}", response_model=Area)
def get_area(_: Viewer, conn: ConnDep, code: AreaCode) -> Area:
    """One area."""
    row = conn.execute(f"SELECT {AREA_COLUMNS} FROM areas WHERE code = %s", (code,)).fetchone()
    if row is None:
        raise not_found(f"there is no area {code!r}")
    return _area(row)


@router.put("/areas/{code}", response_model=Area)
def put_area(_: Admin, conn: ConnDep, code: AreaCode, body: AreaIn) -> Area:
    """Create or replace an area."""
    values = body.model_dump(mode="json")
    values["code"] = code
    values["generated"] = ";".join(body.generated) or None
    record = registry.Record(location="body", values=values, from_text=False)
    report = registry.import_areas(conn, [record], "api")
    if report.errors:
        raise bad_request(report.errors[0].message, report.errors[0].message.split(":", 1)[0])
    conn.commit()
    return get_area(_, conn, code)


# --- devices ---------------------------------------------------------------------------------


@router.get("/devices", response_model=Page[Device])
def list_devices(
    _: Viewer,
    conn: ConnDep,
    settings: SettingsDep,
    kind: catalog.Kind | None = None,
    area_code: Annotated[str | None, Query(max_length=64)] = None,
    status: catalog.DeviceStatus | None = None,
    gateway_id: Annotated[str | None, Query(max_length=64)] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[Device]:
    """Devices by id, filtered by kind, area, service status and gateway."""
    limit = page_limit(settings, limit)
    try:
        rows = registry.list_devices(
            conn,
            kind=kind.value if kind else None,
            area=area_code,
            status=status.value if status else None,
            gateway=gateway_id,
            after=cursor,
            limit=limit,
        )
    except CityopsError as err:
        raise from_domain(err) from err
    items = [Device.model_validate(r, from_attributes=True) for r in rows]
    return Page(items=items, next_cursor=items[-1].device_id if len(items) == limit else None)


def _device(conn: psycopg.Connection[Any], device_id: str) -> registry.DeviceRow:
    row = conn.execute(
        "SELECT device_id, kind, area_code, lat, lon, gateway_id, install_date, status, "
        "attributes FROM devices WHERE device_id = %s",
        (device_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"there is no device {device_id!r}")
    return registry.DeviceRow(
        device_id=row[0],
        kind=row[1],
        area_code=row[2],
        lat=row[3],
        lon=row[4],
        gateway_id=row[5],
        install_date=row[6],
        status=row[7],
        attributes=row[8],
    )


@router.get("/devices/{device_id}", response_model=Device)
def get_device(_: Viewer, conn: ConnDep, device_id: DeviceId) -> Device:
    """One device."""
    return Device.model_validate(_device(conn, device_id), from_attributes=True)


@router.put("/devices/{device_id}", response_model=Device)
def put_device(_: Admin, conn: ConnDep, device_id: DeviceId, body: DeviceIn) -> Device:
    """Create or update a device (its kind cannot change: retire it and register a new id)."""
    values: dict[str, Any] = {
        k: v for k, v in body.model_dump(mode="json").items() if k != "attributes"
    }
    values["device_id"] = device_id
    for key, value in body.attributes.items():
        if key in values:
            raise bad_request(f"attributes.{key}: not an attribute", f"attributes.{key}")
        values[key] = value
    record = registry.Record(location="body", values=values, from_text=False)
    try:
        report = registry.import_devices(conn, [record], "api")
    except CityopsError as err:
        raise from_domain(err) from err
    if report.errors:
        message = report.errors[0].message
        if message.startswith("kind:"):
            raise ApiError(409, "conflict", message)
        raise bad_request(message, message.split(":", 1)[0])
    conn.commit()
    return Device.model_validate(_device(conn, device_id), from_attributes=True)


@router.get("/devices/{device_id}/latest", response_model=DeviceLatest)
def device_latest(_: Viewer, conn: ConnDep, device_id: DeviceId) -> DeviceLatest:
    """The newest reading of a device and its online state from status messages."""
    device = _device(conn, device_id)
    spec = catalog.kind_spec(device.kind)
    names = [f.name for f in spec.readings]
    query = sql.SQL(
        "SELECT ts, received_at, {cols} FROM {table} WHERE device_id = %s ORDER BY ts DESC LIMIT 1"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(n) for n in names),
        table=sql.Identifier(spec.table),
    )
    row = conn.execute(query, (device_id,)).fetchone()
    reading = None
    if row is not None:
        reading = LatestReading(
            ts=row[0], received_at=row[1], values=dict(zip(names, row[2:], strict=True))
        )
    state = conn.execute(
        "SELECT online, ts FROM device_state WHERE device_id = %s", (device_id,)
    ).fetchone()
    return DeviceLatest(
        device_id=device_id,
        kind=catalog.Kind(device.kind),
        reading=reading,
        online=state[0] if state else None,
        status_ts=state[1] if state else None,
    )


# --- bulk import -----------------------------------------------------------------------------

ImportFormat = Literal["csv", "json", "jsonl"]
_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}
_CONTENT_FORMATS = {
    "text/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}


async def _import_text(request: Request, fmt: str | None) -> tuple[str, str]:
    """The request body as text and its format (the ``format`` query or the content type)."""
    if fmt is None:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt = _CONTENT_FORMATS.get(ctype)
        if fmt is None:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send text/csv, application/json or application/x-ndjson, or pass ?format=",
            )
    chunks: list[bytes] = []
    size = 0
    limit = request.app.state.settings.api.max_import_bytes
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "too_large", f"an import is at most {limit} bytes (api.max_import_bytes)"
            )
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise bad_request(f"body: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return text, fmt


def _run_import(request: Request, text: str, fmt: str, what: str) -> ImportResult:
    try:
        records = list(registry.parse_records(text, fmt, "body"))
        with get_pool(request).connection() as conn:
            if what == "areas":
                report = registry.import_areas(conn, records, "api")
            else:
                report = registry.import_devices(conn, records, "api")
    except CityopsError as err:
        raise from_domain(err) from err
    return ImportResult(
        total=report.total,
        stored=report.stored,
        errors=[ImportRowError(location=e.location, message=e.message) for e in report.errors],
    )


_IMPORT_DOC = (
    "Body: CSV with a header row, a JSON array of objects, or JSON Lines. Every good row is "
    "stored; every bad row is reported with its location (line or record number)."
)


@router.post(
    "/areas/import",
    response_model=ImportResult,
    openapi_extra=_IMPORT_BODY,
    description=_IMPORT_DOC,
)
async def import_areas(
    _: Admin,
    request: Request,
    format: ImportFormat | None = None,
) -> ImportResult:
    """Bulk-import areas (upsert by code)."""
    text, fmt = await _import_text(request, format)
    return await run_in_threadpool(_run_import, request, text, fmt, "areas")


@router.post(
    "/devices/import",
    response_model=ImportResult,
    openapi_extra=_IMPORT_BODY,
    description=_IMPORT_DOC,
)
async def import_devices(
    _: Admin,
    request: Request,
    format: ImportFormat | None = None,
) -> ImportResult:
    """Bulk-import devices (upsert by id; a device keeps its kind)."""
    text, fmt = await _import_text(request, format)
    return await run_in_threadpool(_run_import, request, text, fmt, "devices")
