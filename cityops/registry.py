"""The registry of areas and devices: validated import from CSV/JSON, listing.

An import stores every good row and reports every bad one with its location (CSV/JSON Lines line
number, or record number in a JSON array); a bad row never costs the good ones.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cityops import catalog
from cityops.device_ids import device_id_problem
from cityops.errors import ImportFileError, ValidationError

DEVICE_FIELD_NAMES = tuple(f.name for f in catalog.DEVICE_FIELDS)
AREA_FIELD_NAMES = tuple(f.name for f in catalog.AREA_FIELDS)
ATTRIBUTE_NAMES = frozenset(a.name for spec in catalog.KINDS.values() for a in spec.attributes)
REFERENCE_AREAS = "chaoyang_areas.csv"


@dataclass(frozen=True, kw_only=True, slots=True)
class RowError:
    """One rejected row of an import file."""

    location: str
    message: str


@dataclass(kw_only=True)
class ImportReport:
    """Outcome of one import: how many rows were read and stored, and every rejected row."""

    source: str
    total: int = 0
    stored: int = 0
    errors: list[RowError] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class Record:
    """One row of an import file and where it came from."""

    location: str
    values: Mapping[str, Any]
    from_text: bool


def read_records(path: Path, fmt: str | None = None) -> Iterator[Record]:
    """Yield the rows of a CSV, JSON (array of objects) or JSON Lines file."""
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFileError(f"cannot read {path}: {err}") from err
    yield from parse_records(text, fmt, str(path))


def parse_records(text: str, fmt: str, source: str = "input") -> Iterator[Record]:
    """Yield the rows of CSV/JSON/JSON Lines text (``fmt``: csv, json, jsonl or ndjson)."""
    if fmt == "csv":
        yield from _csv_records(text, source)
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ImportFileError(f"{source}: not valid JSON: {err}") from err
        if not isinstance(data, list):
            raise ImportFileError(f"{source}: expected a JSON array of objects")
        for i, item in enumerate(data, start=1):
            yield _json_record(f"record {i}", item)
    elif fmt in ("jsonl", "ndjson"):
        yield from _json_lines_records(text)
    else:
        raise ImportFileError(f"{source}: unknown format {fmt!r}; use csv, json or jsonl")


def _csv_records(text: str, source: str) -> Iterator[Record]:
    # newline="" lets the csv module see \r and \r\n itself, as its documentation asks.
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames:
            raise ImportFileError(f"{source}: the CSV file has no header row")
        for row in reader:
            location = f"line {reader.line_num}"
            extra: Any = row.pop(None, None)
            if extra:
                message = f"{len(extra)} more cells than header columns"
                yield Record(location=location, values={"__error__": message}, from_text=True)
                continue
            yield Record(location=location, values=row, from_text=True)
    except csv.Error as err:
        raise ImportFileError(
            f"{source}: line {reader.line_num}: not readable as CSV: {err}"
        ) from err


def _json_lines_records(text: str) -> Iterator[Record]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            message = f"not valid JSON: {err}"
            yield Record(location=f"line {n}", values={"__error__": message}, from_text=False)
            continue
        yield _json_record(f"line {n}", item)


def _json_record(location: str, item: Any) -> Record:
    if not isinstance(item, dict):
        return Record(
            location=location, values={"__error__": "expected an object"}, from_text=False
        )
    values = dict(item)
    nested = values.pop("attributes", None)
    if isinstance(nested, dict):
        for key, value in nested.items():
            values.setdefault(key, value)
    elif nested is not None:
        return Record(
            location=location,
            values={"__error__": "attributes: expected an object"},
            from_text=False,
        )
    return Record(location=location, values=values, from_text=False)


def _field_value(spec: catalog.FieldSpec, record: Record) -> Any:
    raw = record.values.get(spec.name)
    return spec.parse_text(raw) if record.from_text else spec.check(raw)


def validate_area(record: Record) -> dict[str, Any]:
    """Check one area row against the catalog; return the typed values."""
    _raise_embedded_error(record)
    unknown = sorted(k for k in record.values if k not in AREA_FIELD_NAMES)
    if unknown:
        raise ValidationError(f"unknown column(s): {', '.join(unknown)}")
    out = {spec.name: _field_value(spec, record) for spec in catalog.AREA_FIELDS}
    generated = out.get("generated")
    names = [g.strip() for g in (generated or "").split(";") if g.strip()]
    bad = [g for g in names if g not in AREA_FIELD_NAMES]
    if bad:
        raise ValidationError(f"generated: unknown attribute(s) {', '.join(bad)}", "generated")
    out["generated"] = names
    return out


def validate_device(record: Record, area_codes: set[str]) -> dict[str, Any]:
    """Check one device row against the catalog and the known areas."""
    _raise_embedded_error(record)
    base = {spec.name: _field_value(spec, record) for spec in catalog.DEVICE_FIELDS}
    for id_field in ("device_id", "gateway_id"):  # the one id rule (MQTT topic, broker login)
        if base[id_field] is not None:
            problem = device_id_problem(base[id_field])
            if problem is not None:
                raise ValidationError(f"{id_field}: {base[id_field]!r} {problem}", id_field)
    spec = catalog.kind_spec(base["kind"])
    if base["area_code"] not in area_codes:
        raise ValidationError(
            f"area_code: {base['area_code']!r} is not a registered area "
            "(import areas first: `cityops areas import`)",
            "area_code",
        )
    attrs: dict[str, Any] = {}
    own = {a.name for a in spec.attributes}
    for key, value in record.values.items():
        if key in DEVICE_FIELD_NAMES:
            continue
        if key not in ATTRIBUTE_NAMES:
            raise ValidationError(f"{key}: unknown column", key)
        empty = value is None or (record.from_text and str(value).strip() == "")
        if key not in own:
            if not empty:
                raise ValidationError(f"{key}: not an attribute of a {spec.kind.value}", key)
            continue
        attrs[key] = value
    if record.from_text:
        text_attrs = {a.name: a.parse_text(attrs.get(a.name)) for a in spec.attributes}
        base["attributes"] = {k: v for k, v in text_attrs.items() if v is not None}
    else:
        base["attributes"] = spec.validate_attributes(attrs)
    if base["status"] is None:
        base["status"] = catalog.DeviceStatus.IN_SERVICE.value
    return base


def _raise_embedded_error(record: Record) -> None:
    error = record.values.get("__error__")
    if error:
        raise ValidationError(str(error))


UPSERT_AREA_SQL = """
INSERT INTO areas (code, name_zh, name_en, type, district, lon, lat, land_area_km2, population,
                   heated_area_m2, generated, updated_at)
VALUES (%(code)s, %(name_zh)s, %(name_en)s, %(type)s, %(district)s, %(lon)s, %(lat)s,
        %(land_area_km2)s, %(population)s, %(heated_area_m2)s, %(generated)s, now())
ON CONFLICT (code) DO UPDATE SET
    name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en, type = EXCLUDED.type,
    district = EXCLUDED.district, lon = EXCLUDED.lon, lat = EXCLUDED.lat,
    land_area_km2 = EXCLUDED.land_area_km2, population = EXCLUDED.population,
    heated_area_m2 = EXCLUDED.heated_area_m2, generated = EXCLUDED.generated, updated_at = now()
"""


def import_areas(
    conn: psycopg.Connection[Any], records: Iterator[Record] | Sequence[Record], source: str
) -> ImportReport:
    """Validate and upsert area rows; return what was stored and what was rejected."""
    report = ImportReport(source=source)
    good: list[dict[str, Any]] = []
    seen: set[str] = set()
    for record in records:
        report.total += 1
        try:
            area = validate_area(record)
        except ValidationError as err:
            report.errors.append(RowError(location=record.location, message=str(err)))
            continue
        if area["code"] in seen:
            report.errors.append(
                RowError(location=record.location, message=f"code: {area['code']!r} repeated")
            )
            continue
        seen.add(area["code"])
        good.append(area)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(UPSERT_AREA_SQL, good)
    report.stored = len(good)
    return report


def reference_area_records() -> list[Record]:
    """The shipped Chaoyang reference units (see docs/storage.md for what is generated)."""
    text = (resources.files("cityops") / "data" / REFERENCE_AREAS).read_text(encoding="utf-8")
    return list(parse_records(text, "csv", REFERENCE_AREAS))


STAGE_DEVICES_SQL = """
CREATE TEMP TABLE device_import (
    line          text NOT NULL,
    device_id     text NOT NULL,
    kind          text NOT NULL,
    area_code     text NOT NULL,
    lat           double precision,
    lon           double precision,
    gateway_id    text,
    install_date  date,
    status        text NOT NULL,
    attributes    jsonb NOT NULL
) ON COMMIT DROP
"""

COPY_DEVICES_SQL = """
COPY device_import (line, device_id, kind, area_code, lat, lon, gateway_id, install_date, status,
                    attributes) FROM STDIN
"""

KIND_CONFLICTS_SQL = """
DELETE FROM device_import t USING devices d
WHERE d.device_id = t.device_id AND d.kind <> t.kind
RETURNING t.line, t.device_id, d.kind, t.kind
"""

UPSERT_DEVICES_SQL = """
INSERT INTO devices (device_id, kind, area_code, lat, lon, gateway_id, install_date, status,
                     attributes, updated_at)
SELECT device_id, kind, area_code, lat, lon, gateway_id, install_date, status, attributes, now()
FROM device_import
ON CONFLICT (device_id) DO UPDATE SET
    area_code = EXCLUDED.area_code, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
    gateway_id = EXCLUDED.gateway_id, install_date = EXCLUDED.install_date,
    status = EXCLUDED.status, attributes = EXCLUDED.attributes, updated_at = now()
"""

# A re-import that changes a device's area or retires it dates the change today (history).
RECORD_MOVES_SQL = """
INSERT INTO device_events (device_id, event, on_date, from_area, to_area, note)
SELECT t.device_id, 'move', current_date, d.area_code, t.area_code, 'registry import'
FROM device_import t JOIN devices d ON d.device_id = t.device_id
WHERE d.area_code <> t.area_code AND d.kind = t.kind
ON CONFLICT (device_id, event, on_date) DO UPDATE SET to_area = EXCLUDED.to_area
"""

RECORD_RETIREMENTS_SQL = """
INSERT INTO device_events (device_id, event, on_date, note)
SELECT t.device_id, 'decommission', current_date, 'registry import: status retired'
FROM device_import t JOIN devices d ON d.device_id = t.device_id
WHERE t.status = 'retired' AND d.status <> 'retired' AND d.kind = t.kind
  AND NOT EXISTS (SELECT 1 FROM device_events e
                  WHERE e.device_id = t.device_id AND e.event = 'decommission')
ON CONFLICT DO NOTHING
"""


def import_devices(
    conn: psycopg.Connection[Any], records: Iterator[Record] | Sequence[Record], source: str
) -> ImportReport:
    """Validate and upsert device rows through COPY; return stored count and rejected rows.

    A device keeps its kind: a row that would change an existing device's kind is rejected,
    because its readings live in the old kind's table.
    """
    report = ImportReport(source=source)
    area_codes = {code for (code,) in conn.execute("SELECT code FROM areas").fetchall()}
    seen: set[str] = set()
    good: list[tuple[Any, ...]] = []
    for record in records:
        report.total += 1
        try:
            device = validate_device(record, area_codes)
        except ValidationError as err:
            report.errors.append(RowError(location=record.location, message=str(err)))
            continue
        if device["device_id"] in seen:
            report.errors.append(
                RowError(
                    location=record.location,
                    message=f"device_id: {device['device_id']!r} repeated in this file",
                )
            )
            continue
        seen.add(device["device_id"])
        good.append(
            (
                record.location,
                device["device_id"],
                device["kind"],
                device["area_code"],
                device["lat"],
                device["lon"],
                device["gateway_id"],
                device["install_date"],
                device["status"],
                Jsonb(device["attributes"]),
            )
        )
    with conn.transaction():
        conn.execute(STAGE_DEVICES_SQL)
        with conn.cursor() as cur:
            with cur.copy(COPY_DEVICES_SQL) as copy:
                for row in good:
                    copy.write_row(row)
            conflicts = cur.execute(KIND_CONFLICTS_SQL).fetchall()
            for line, device_id, old, new in conflicts:
                report.errors.append(
                    RowError(
                        location=line,
                        message=f"kind: {device_id!r} is registered as a {old}; a device "
                        f"cannot change kind to {new} (retire it and register a new id)",
                    )
                )
            cur.execute(RECORD_MOVES_SQL)
            cur.execute(RECORD_RETIREMENTS_SQL)
            cur.execute(UPSERT_DEVICES_SQL)
            report.stored = max(cur.rowcount, 0)
    report.errors.sort(key=_location_order)
    return report


def _location_order(err: RowError) -> tuple[int, str]:
    number = err.location.rsplit(" ", 1)[-1]
    return (int(number) if number.isdigit() else 0, err.location)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceRow:
    """A registered device as listed."""

    device_id: str
    kind: str
    area_code: str
    lat: float | None
    lon: float | None
    gateway_id: str | None
    install_date: date | None
    status: str
    attributes: dict[str, Any]


LIST_DEVICES_SQL = """
SELECT device_id, kind, area_code, lat, lon, gateway_id, install_date, status, attributes
FROM devices
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(area)s::text IS NULL OR area_code = %(area)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(gateway)s::text IS NULL OR gateway_id = %(gateway)s)
  AND (%(after)s::text IS NULL OR device_id > %(after)s)
ORDER BY device_id
LIMIT %(limit)s
"""


def list_devices(
    conn: psycopg.Connection[Any],
    *,
    kind: str | None = None,
    area: str | None = None,
    status: str | None = None,
    gateway: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[DeviceRow]:
    """Registered devices matching the filters, by id, keyset-paged with ``after``."""
    if kind is not None:
        catalog.kind_spec(kind)
    if status is not None:
        catalog.FieldSpec(
            name="status",
            type=catalog.FieldType.ENUM,
            description="",
            allowed=tuple(s.value for s in catalog.DeviceStatus),
        ).check(status)
    if not 1 <= limit <= 100_000:
        raise ValidationError("limit: must be between 1 and 100000", "limit")
    with conn.cursor(row_factory=class_row(DeviceRow)) as cur:
        return cur.execute(
            LIST_DEVICES_SQL,
            {
                "kind": kind,
                "area": area,
                "status": status,
                "gateway": gateway,
                "after": after,
                "limit": limit,
            },
        ).fetchall()


# -- history: install, commission, decommission, moves ----------------------------------------

EVENTS = ("install", "commission", "decommission", "move")

INSERT_EVENT_SQL = """
INSERT INTO device_events (device_id, event, on_date, from_area, to_area, note)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (device_id, event, on_date) DO UPDATE
SET from_area = EXCLUDED.from_area, to_area = EXCLUDED.to_area, note = EXCLUDED.note,
    recorded_at = now()
"""

HISTORY_DEVICES_SQL = """
SELECT device_id, area_code, install_date, status FROM devices
WHERE (%(kind)s::text IS NULL OR kind = %(kind)s) ORDER BY device_id
"""

HISTORY_EVENTS_SQL = """
SELECT e.device_id, e.event, e.on_date, e.from_area, e.to_area, e.note
FROM device_events e JOIN devices d ON d.device_id = e.device_id
WHERE (%(kind)s::text IS NULL OR d.kind = %(kind)s) ORDER BY e.device_id, e.on_date, e.id
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceEvent:
    """One dated registry fact: installed, commissioned, decommissioned, or moved between areas."""

    device_id: str
    event: str
    on: date
    from_area: str | None = None
    to_area: str | None = None
    note: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeline:
    """A device's registry history, answering "in service on day d?" and "in which area?".

    In service from its commission date; without one, from its install date; without either,
    since always. Out of service from its decommission date on (a later commission brings it
    back). A device whose current status is not ``in_service`` and that has no decommission date
    is never counted (the date is unknown: record a decommission to date it). Area on day d: the
    area of the latest move on or before d; before its first move, the area it moved from;
    without moves, its current area.
    """

    device_id: str
    area: str
    status: str
    install_date: date | None
    events: tuple[DeviceEvent, ...]

    def _switches(self) -> list[tuple[date, bool]]:
        ons = [e.on for e in self.events if e.event == "commission"]
        if not ons:
            installs = [e.on for e in self.events if e.event == "install"]
            if installs:
                ons = [min(installs)]
            elif self.install_date is not None:
                ons = [self.install_date]
        offs = [e.on for e in self.events if e.event == "decommission"]
        # Same day: the decommission wins (sorted after the commission).
        return sorted(
            [(d, True) for d in ons] + [(d, False) for d in offs], key=lambda x: (x[0], not x[1])
        )

    def in_service_on(self, day: date) -> bool:
        """True when the device counts on ``day``."""
        switches = self._switches()
        if self.status != "in_service" and not any(not on for _, on in switches):
            return False
        state = not any(on for _, on in switches)  # no start date at all: since always
        for when, on in switches:
            if when > day:
                break
            state = on
        return state

    def in_service_during(self, first: date, last: date) -> bool:
        """True when the device counts on at least one day of [first, last]."""
        if self.in_service_on(first):
            return True
        return any(
            first < when <= last and self.in_service_on(when) for when, _ in self._switches()
        )

    def area_on(self, day: date) -> str:
        """The area the device was in on ``day``."""
        moves = [e for e in self.events if e.event == "move"]
        if not moves:
            return self.area
        current = moves[0].from_area or self.area
        for m in moves:
            if m.on > day:
                break
            current = m.to_area or current
        return current


def load_history(conn: psycopg.Connection[Any], kind: str | None = None) -> dict[str, Timeline]:
    """Every device's timeline (of ``kind`` when given), by device id."""
    events: dict[str, list[DeviceEvent]] = {}
    for device_id, event, on, from_area, to_area, note in conn.execute(
        HISTORY_EVENTS_SQL, {"kind": kind}
    ).fetchall():
        events.setdefault(device_id, []).append(
            DeviceEvent(
                device_id=device_id,
                event=event,
                on=on,
                from_area=from_area,
                to_area=to_area,
                note=note,
            )
        )
    out: dict[str, Timeline] = {}
    for device_id, area, install, status in conn.execute(
        HISTORY_DEVICES_SQL, {"kind": kind}
    ).fetchall():
        out[device_id] = Timeline(
            device_id=device_id,
            area=area,
            status=status,
            install_date=install,
            events=tuple(events.get(device_id, ())),
        )
    return out


def devices_during(
    conn: psycopg.Connection[Any], kind: str, first: date, last: date
) -> dict[str, str]:
    """Devices of ``kind`` in service on some day of [first, last], with their area on ``last``."""
    return {
        t.device_id: t.area_on(last)
        for t in load_history(conn, kind).values()
        if t.in_service_during(first, last)
    }


def validate_event(record: Record, area_codes: set[str], known: set[str]) -> DeviceEvent:
    """Check one history row: ``device_id,event,on_date[,to_area][,note]``."""
    _raise_embedded_error(record)
    values = record.values
    unknown = sorted(
        k
        for k in values
        if k not in ("device_id", "event", "on_date", "to_area", "from_area", "note")
    )
    if unknown:
        raise ValidationError(f"unknown column(s): {', '.join(unknown)}")
    device_id = str(values.get("device_id") or "").strip()
    if device_id not in known:
        raise ValidationError(f"device_id: {device_id!r} is not registered", "device_id")
    event = str(values.get("event") or "").strip()
    if event not in EVENTS:
        raise ValidationError(f"event: {event!r} is not one of {', '.join(EVENTS)}", "event")
    text = str(values.get("on_date") or "").strip()
    try:
        on = date.fromisoformat(text)
    except ValueError as err:
        raise ValidationError(f"on_date: {text!r} is not a date (YYYY-MM-DD)", "on_date") from err
    to_area = str(values.get("to_area") or "").strip() or None
    from_area = str(values.get("from_area") or "").strip() or None
    if event == "move":
        for name, code in (("to_area", to_area), ("from_area", from_area)):
            if code is not None and code not in area_codes:
                raise ValidationError(f"{name}: {code!r} is not a registered area", name)
        if to_area is None:
            raise ValidationError("to_area: a move needs the area the device moved to", "to_area")
    elif to_area is not None or from_area is not None:
        raise ValidationError(
            f"to_area/from_area: only a move names areas, not a {event}", "to_area"
        )
    return DeviceEvent(
        device_id=device_id,
        event=event,
        on=on,
        from_area=from_area,
        to_area=to_area,
        note=str(values.get("note") or "").strip(),
    )


def import_events(
    conn: psycopg.Connection[Any], records: Iterator[Record] | Sequence[Record], source: str
) -> ImportReport:
    """Validate and store history rows (every good row; each bad one reported by location).

    A move without ``from_area`` is taken from the device's area just before the move.
    """
    report = ImportReport(source=source)
    area_codes = {code for (code,) in conn.execute("SELECT code FROM areas").fetchall()}
    history = load_history(conn)
    good: list[DeviceEvent] = []
    for record in records:
        report.total += 1
        try:
            good.append(validate_event(record, area_codes, set(history)))
        except ValidationError as err:
            report.errors.append(RowError(location=record.location, message=str(err)))
    with conn.transaction():
        for e in sorted(good, key=lambda e: (e.device_id, e.on)):
            from_area = e.from_area
            if e.event == "move" and from_area is None:
                from_area = history[e.device_id].area_on(e.on - timedelta(days=1))
            record_event(
                conn,
                DeviceEvent(
                    device_id=e.device_id,
                    event=e.event,
                    on=e.on,
                    from_area=from_area,
                    to_area=e.to_area,
                    note=e.note,
                ),
            )
            if e.event == "move":
                history = load_history(conn)
    report.stored = len(good)
    return report


def record_event(conn: psycopg.Connection[Any], e: DeviceEvent) -> None:
    """Store one history fact (the same device, event and day replaces the earlier row).

    A move also sets the device's current area when it is the latest move.
    """
    conn.execute(INSERT_EVENT_SQL, (e.device_id, e.event, e.on, e.from_area, e.to_area, e.note))
    if e.event == "move":
        conn.execute(
            "UPDATE devices SET area_code = %s, updated_at = now() WHERE device_id = %s AND NOT "
            "EXISTS (SELECT 1 FROM device_events WHERE device_id = %s AND event = 'move' "
            "AND on_date > %s)",
            (e.to_area, e.device_id, e.device_id, e.on),
        )
