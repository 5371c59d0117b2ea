"""Topics, timestamps and payload shapes of the MQTT contract, turned into rows or rejections.

``Decoder.decode`` takes one message (topic, raw payload, receive time) and appends to a
:class:`~ingest.batcher.PendingBatch`: validated reading rows per kind, status changes,
complaints, device auto-registrations and dead letters. A bad reading is dead-lettered on its
own (with a payload that replays on the same topic) and never costs the good readings beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from cityops import catalog
from cityops.catalog import Kind
from cityops.errors import ValidationError
from ingest.batcher import PendingBatch
from ingest.partition import Partition
from ingest.registry_cache import DeviceEntry, RegistryCache

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Epoch-millisecond timestamps must fall in this window; a value in seconds or microseconds is
# then caught instead of being stored 1000 times off.
TS_MIN_MS = 946_684_800_000  # 2000-01-01
TS_MAX_MS = 4_102_444_800_000  # 2100-01-01
MAX_FUTURE_MS = 24 * 3600 * 1000  # a reading more than a day ahead is a clock fault

_TOPIC_CACHE_SIZE = 200_000
_KIND_NAMES = {k.value: k for k in Kind}
_READING_KEYS = frozenset({"ts", "values"})
_STATUS_KEYS = frozenset({"online", "ts"})
_COMPLAINT_INDEX = {f.name: f for f in catalog.COMPLAINT_FIELDS}


class Reason(StrEnum):
    """Why a message or reading was dead-lettered (short, stable; the detail says more)."""

    MALFORMED_JSON = "malformed json"
    BAD_TOPIC = "bad topic"
    OVERSIZED = "oversized payload"
    VALIDATION = "validation"
    UNKNOWN_DEVICE = "unknown device"
    KIND_MISMATCH = "kind mismatch"
    FOREIGN_DEVICE = "foreign device"
    DATABASE_REJECTED = "database rejected"
    DECODE_ERROR = "decode error"
    CONFLICT = "conflict"


class TopicType(StrEnum):
    """What a topic carries."""

    TELEMETRY = "telemetry"
    GATEWAY = "gateway"
    STATUS = "status"
    GATEWAY_STATUS = "gateway_status"
    COMPLAINTS = "complaints"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed contract topic: its type, the device kind (if any) and the id segment."""

    type: TopicType
    kind: Kind | None
    ident: str


class TopicError(ValueError):
    """The topic is not one of the contract's ingest topics."""


def parse_topic(topic: str, root: str = "cityops/v1") -> Topic:
    """Parse ``{root}/{kind|gateway|hotline}/{id}/{telemetry|status|complaints}``."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        raise TopicError(f"topic {topic!r} is not under {root}/")
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 3 or not parts[1]:
        raise TopicError(f"topic {topic!r} does not have the shape {root}/<kind>/<id>/<leaf>")
    first, ident, leaf = parts
    if first == "gateway":
        if leaf == "telemetry":
            return Topic(TopicType.GATEWAY, None, ident)
        if leaf == "status":
            return Topic(TopicType.GATEWAY_STATUS, None, ident)
    elif first == "hotline":
        if leaf == "complaints":
            return Topic(TopicType.COMPLAINTS, None, ident)
    elif first in _KIND_NAMES:
        if leaf == "telemetry":
            return Topic(TopicType.TELEMETRY, _KIND_NAMES[first], ident)
        if leaf == "status":
            return Topic(TopicType.STATUS, _KIND_NAMES[first], ident)
    raise TopicError(f"topic {topic!r} is not an ingest topic of the contract")


def parse_ts(value: Any, received_ms: int, name: str = "ts") -> int:
    """A contract timestamp (RFC 3339 or epoch ms; None = receive time) as epoch milliseconds."""
    if value is None:
        return received_ms
    if isinstance(value, bool):
        raise ValidationError(f"{name}: expected RFC 3339 or epoch milliseconds, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(f"{name}: {value!r} is not an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise ValidationError(f"{name}: {value!r} has no UTC offset (RFC 3339 needs one)")
        ms = (parsed - EPOCH) // _MS
    else:
        raise ValidationError(f"{name}: expected RFC 3339 or epoch milliseconds, got {value!r}")
    if not TS_MIN_MS <= ms < TS_MAX_MS:
        raise ValidationError(
            f"{name}: {value!r} is outside 2000..2100 (epoch milliseconds expected)"
        )
    if ms > received_ms + MAX_FUTURE_MS:
        raise ValidationError(f"{name}: {value!r} is more than 24 hours in the future")
    return ms


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return EPOCH + ms * _MS


_INF = math.inf
_FAST_FLOAT, _FAST_INT, _FAST_BOOL, _FAST_ENUM, _GENERIC = range(5)


def compile_values_check(kind: Kind) -> Callable[[dict[str, Any]], list[Any]]:
    """A kind's ``values`` check, returning the field values in catalog order.

    Equivalent to ``catalog.KINDS[kind].validate_values`` (same accepted values, same coerced
    results, same errors) but without building a dict per reading: plain JSON numbers, booleans
    and enum strings are checked inline; anything else (a missing required field, an unknown key,
    a wrong type, a value out of range, NaN) goes to the catalog's own check, which raises the
    catalog's error or returns its result.
    """
    spec = catalog.KINDS[kind]
    names = frozenset(f.name for f in spec.readings)
    plan: list[tuple[str, int, float, float, bool, frozenset[str], catalog.FieldSpec]] = []
    for f in spec.readings:
        if f.type is catalog.FieldType.FLOAT:
            mode = _FAST_FLOAT
        elif f.type is catalog.FieldType.INT:
            mode = _FAST_INT
        elif f.type is catalog.FieldType.BOOL:
            mode = _FAST_BOOL
        elif f.type is catalog.FieldType.ENUM and f.allowed is not None:
            mode = _FAST_ENUM
        else:
            mode = _GENERIC
        lo = -_INF if f.minimum is None else f.minimum
        hi = _INF if f.maximum is None else f.maximum
        plan.append((f.name, mode, lo, hi, f.required, frozenset(f.allowed or ()), f))
    order = tuple(f.name for f in spec.readings)
    slow = spec.validate_values

    def check(values: dict[str, Any]) -> list[Any]:
        if names.issuperset(values):
            out: list[Any] = []
            append = out.append
            for name, mode, lo, hi, required, allowed, field_spec in plan:
                v = values.get(name)
                if v is None:
                    ok = not required
                elif mode == _FAST_FLOAT:
                    if type(v) is int:
                        v = float(v)
                    ok = type(v) is float and -_INF < v < _INF and lo <= v <= hi  # NaN: False
                elif mode == _FAST_INT:
                    ok = type(v) is int and lo <= v <= hi
                elif mode == _FAST_BOOL:
                    ok = type(v) is bool
                elif mode == _FAST_ENUM:
                    ok = type(v) is str and v in allowed
                else:
                    v = field_spec.check(v)  # raises the catalog's error for this field
                    ok = True
                if not ok:
                    break
                append(v)
            else:
                return out
        checked = slow(values)  # raises the catalog's error (or accepts a rarer form)
        return [checked[name] for name in order]

    return check


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


class Decoder:
    """Decodes and validates messages against the catalog and the registry cache."""

    def __init__(
        self,
        registry: RegistryCache,
        *,
        root: str = "cityops/v1",
        max_payload_bytes: int = 262_144,
        auto_register_area: str | None = None,
        partition: Partition | None = None,
    ) -> None:
        self.registry = registry
        # None or 1 of 1: this worker owns everything (no scale-out partitioning)
        self.partition = partition if partition is not None and partition.count > 1 else None
        self.root = root
        self.max_payload_bytes = max_payload_bytes
        self.auto_register_area = auto_register_area
        self._topics: dict[str, Topic] = {}  # topics repeat per device: parse each once
        self._checks = {kind: compile_values_check(kind) for kind in catalog.KINDS}

    def _owns(self, key: str) -> bool:
        return self.partition is None or self.partition.owns(key)

    def _device_key(self, device_id: str, entry: DeviceEntry | None) -> str:
        """A device's partition key: its area, else (unregistered) its id or the auto area."""
        if entry is not None and entry.area_code is not None:
            return entry.area_code
        if entry is None and self.auto_register_area is not None:
            return self.auto_register_area
        return device_id

    def _reject(
        self,
        out: PendingBatch,
        received_ms: int,
        topic: str,
        payload: bytes,
        reason: Reason,
        detail: str,
    ) -> None:
        """Dead-letter a whole message; with partitions only the topic's owner writes it."""
        if self._owns(topic):
            out.dead_letter(received_ms, topic, payload, reason, detail)
        else:
            out.skipped += 1

    def decode(self, topic: str, payload: bytes, received_ms: int, out: PendingBatch) -> None:
        """Decode one message into ``out``; every problem becomes a dead letter there.

        With a partition, only what this worker owns is added; the rest is counted in
        ``out.skipped`` (another worker writes it).
        """
        if len(payload) > self.max_payload_bytes:
            self._reject(
                out,
                received_ms,
                topic,
                payload,
                Reason.OVERSIZED,
                f"{len(payload)} bytes is more than the limit of {self.max_payload_bytes}",
            )
            return
        parsed = self._topics.get(topic)
        if parsed is None:
            try:
                parsed = parse_topic(topic, self.root)
            except TopicError as err:
                self._reject(out, received_ms, topic, payload, Reason.BAD_TOPIC, str(err))
                return
            if len(self._topics) >= _TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = parsed
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            self._reject(out, received_ms, topic, payload, Reason.MALFORMED_JSON, str(err))
            return
        if parsed.type is TopicType.TELEMETRY and parsed.kind is not None:
            self._device_telemetry(
                topic, payload, parsed.kind, parsed.ident, body, received_ms, out
            )
        elif parsed.type is TopicType.GATEWAY:
            self._gateway_telemetry(topic, payload, parsed.ident, body, received_ms, out)
        elif parsed.type is TopicType.COMPLAINTS:
            self._complaints(topic, payload, parsed.ident, body, received_ms, out)
        else:
            self._status(topic, payload, parsed, body, received_ms, out)

    # --- readings ------------------------------------------------------------------------------

    def _device_telemetry(
        self,
        topic: str,
        payload: bytes,
        kind: Kind,
        device_id: str,
        body: Any,
        received_ms: int,
        out: PendingBatch,
    ) -> None:
        entry = self.registry.lookup(device_id)
        if not self._owns(self._device_key(device_id, entry)):
            out.skipped += len(body) if isinstance(body, list) else 1
            return
        if entry is None:
            if self.auto_register_area is None:
                out.dead_letter(
                    received_ms,
                    topic,
                    payload,
                    Reason.UNKNOWN_DEVICE,
                    f"device {device_id!r} is not registered (auto-registration is off)",
                )
                return
            entry = DeviceEntry(
                kind=kind,
                gateway_id=None,
                status="in_service",
                area_code=self.auto_register_area,
            )
            self.registry.add(device_id, entry)
            out.register(device_id, kind, self.auto_register_area)
        elif entry.kind is not kind:
            out.dead_letter(
                received_ms,
                topic,
                payload,
                Reason.KIND_MISMATCH,
                f"device {device_id!r} is registered as {entry.kind.value}, not {kind.value}",
            )
            return
        if isinstance(body, list):
            for item in body:
                self._reading(
                    topic, kind, device_id, entry.position, item, received_ms, out, lambda i: i
                )
        else:
            self._reading(
                topic, kind, device_id, entry.position, body, received_ms, out, lambda i: i
            )
        out.readings_received += len(body) if isinstance(body, list) else 1

    def _gateway_telemetry(
        self,
        topic: str,
        payload: bytes,
        gateway_id: str,
        body: Any,
        received_ms: int,
        out: PendingBatch,
    ) -> None:
        if not isinstance(body, dict):
            self._reject(
                out,
                received_ms,
                topic,
                payload,
                Reason.VALIDATION,
                'a gateway message must be an object {"<device_id>": [readings], ...}',
            )
            return
        for device_id, items in body.items():
            readings = items if isinstance(items, list) else [items]
            entry = self.registry.lookup(device_id)
            if not self._owns(self._device_key(device_id, entry)):
                out.skipped += len(readings)
                continue
            out.readings_received += len(readings)
            if entry is None:
                out.dead_letter(
                    received_ms,
                    topic,
                    _dumps({device_id: items}),
                    Reason.UNKNOWN_DEVICE,
                    f"device {device_id!r} is not registered",
                )
                continue
            if entry.gateway_id != gateway_id:
                out.dead_letter(
                    received_ms,
                    topic,
                    _dumps({device_id: items}),
                    Reason.FOREIGN_DEVICE,
                    f"device {device_id!r} is not registered under gateway {gateway_id!r}",
                )
                continue

            def wrap(item: Any, device_id: str = device_id) -> Any:
                return {device_id: [item]}

            for item in readings:
                self._reading(
                    topic, entry.kind, device_id, entry.position, item, received_ms, out, wrap
                )

    def _reading(
        self,
        topic: str,
        kind: Kind,
        device_id: str,
        position: int,
        item: Any,
        received_ms: int,
        out: PendingBatch,
        wrap: Any,
    ) -> None:
        try:
            if not isinstance(item, dict):
                raise ValidationError('a reading must be an object {"ts": ..., "values": {...}}')
            if not _READING_KEYS.issuperset(item):
                extra = sorted(str(k) for k in item if k not in _READING_KEYS)
                raise ValidationError(f"unexpected key(s) {', '.join(extra)} in a reading")
            values = item.get("values")
            if not isinstance(values, dict):
                raise ValidationError("values: expected an object")
            ts = item.get("ts")
            # epoch milliseconds in range: the common case, checked inline (parse_ts does the rest)
            if (
                type(ts) is int
                and TS_MIN_MS <= ts < TS_MAX_MS
                and ts <= received_ms + MAX_FUTURE_MS
            ):
                ts_ms: int = ts
            else:
                ts_ms = parse_ts(ts, received_ms)
            checked = self._checks[kind](values)
        except ValidationError as err:
            out.dead_letter(
                received_ms,
                topic,
                _dumps(wrap(item)),
                Reason.VALIDATION,
                f"{device_id}: {err}",
            )
            return
        out.add_reading(kind, (device_id, ts_ms, *checked, received_ms), position)

    # --- status and complaints -----------------------------------------------------------------

    def _status(
        self,
        topic: str,
        payload: bytes,
        parsed: Topic,
        body: Any,
        received_ms: int,
        out: PendingBatch,
    ) -> None:
        ident = parsed.ident
        if parsed.type is TopicType.STATUS:
            entry = self.registry.lookup(ident)
            if not self._owns(self._device_key(ident, entry)):
                out.skipped += 1
                return
            if entry is None or parsed.kind is None:
                out.dead_letter(
                    received_ms,
                    topic,
                    payload,
                    Reason.UNKNOWN_DEVICE,
                    f"device {ident!r} is not registered",
                )
                return
            if entry.kind is not parsed.kind:
                out.dead_letter(
                    received_ms,
                    topic,
                    payload,
                    Reason.KIND_MISMATCH,
                    f"device {ident!r} is registered as {entry.kind.value}, "
                    f"not {parsed.kind.value}",
                )
                return
            kind_name = parsed.kind.value
        else:
            if not self._owns(ident):
                out.skipped += 1
                return
            if not self.registry.is_gateway(ident):
                out.dead_letter(
                    received_ms,
                    topic,
                    payload,
                    Reason.UNKNOWN_DEVICE,
                    f"gateway {ident!r} has no registered devices",
                )
                return
            kind_name = "gateway"
        try:
            if not isinstance(body, dict) or not _STATUS_KEYS.issuperset(body):
                raise ValidationError('a status message must be {"online": true|false, "ts": ...}')
            online = body.get("online")
            if not isinstance(online, bool):
                raise ValidationError(f"online: expected true or false, got {online!r}")
            ts_ms = parse_ts(body.get("ts"), received_ms)
        except ValidationError as err:
            out.dead_letter(received_ms, topic, payload, Reason.VALIDATION, str(err))
            return
        out.add_status(ident, kind_name, online, ts_ms, received_ms)

    def _complaints(
        self,
        topic: str,
        payload: bytes,
        source: str,
        body: Any,
        received_ms: int,
        out: PendingBatch,
    ) -> None:
        records = body if isinstance(body, list) else [body]
        for record in records:
            try:
                complaint = self.validate_complaint(record, received_ms)
            except ValidationError as err:
                self._reject(out, received_ms, topic, _dumps(record), Reason.VALIDATION, str(err))
                continue
            # a complaint belongs with its area (complaint density, case linking)
            if not self._owns(complaint.get("area_code") or topic):
                out.skipped += 1
                continue
            complaint["source"] = source
            # the record as it came (a single record: the raw bytes), for a conflict's dead letter
            out.add_complaint(
                complaint,
                topic=topic,
                received_ms=received_ms,
                record=_dumps(record) if isinstance(body, list) else payload,
            )

    def _check_location(self, lat: float | None, lon: float | None) -> None:
        """Refuse coordinates outside the district (the areas' extent plus a margin)."""
        if lat is None or lon is None:
            return
        bounds = self.registry.bounds()
        if bounds is not None and not bounds.contains(lat, lon):
            raise ValidationError(
                f"lat/lon: ({lat}, {lon}) is outside the district "
                f"(lat {bounds.lat_min:.3f}..{bounds.lat_max:.3f}, "
                f"lon {bounds.lon_min:.3f}..{bounds.lon_max:.3f}: the areas' extent "
                f"plus {bounds.margin_deg} degrees)",
                "lat",
            )

    def validate_complaint(self, record: Any, received_ms: int) -> dict[str, Any]:
        """A hotline record checked against the catalog, ``received_at`` as a datetime."""
        if not isinstance(record, Mapping):
            raise ValidationError("a complaint must be an object")
        for key in record:
            if key not in _COMPLAINT_INDEX:
                raise ValidationError(f"{key}: not a complaint field", str(key))
        out: dict[str, Any] = {}
        for name, spec in _COMPLAINT_INDEX.items():
            value = record.get(name)
            if name == "received_at":
                if value is None:
                    raise ValidationError("received_at: required", name)
                out[name] = ms_to_datetime(parse_ts(value, received_ms, name))
            else:
                out[name] = spec.check(value)
        if out["status"] is None:
            out["status"] = catalog.ComplaintStatus.RECEIVED.value
        area = out.get("area_code")
        if area is not None and not self.registry.has_area(area):
            raise ValidationError(f"area_code: {area!r} is not a registered area", "area_code")
        if area is None and out.get("device_id") is not None:
            # a complaint about a registered device belongs to the device's area (density)
            entry = self.registry.lookup(out["device_id"])
            if entry is not None and entry.area_code is not None:
                out["area_code"] = entry.area_code
        self._check_location(out.get("lat"), out.get("lon"))
        return out
