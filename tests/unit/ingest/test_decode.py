"""Decoding and validation of every payload shape, without services."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest

from cityops.catalog import Kind
from cityops.errors import ValidationError
from ingest.batcher import PendingBatch
from ingest.decode import Decoder, Reason, TopicError, TopicType, parse_topic, parse_ts
from ingest.registry_cache import DeviceEntry, RegistryCache, RegistrySnapshot

RECV = 1_735_689_600_000  # 2025-01-01T00:00:00Z
T0 = RECV - 60_000


def _registry() -> RegistryCache:
    devices = {
        "SL-1": DeviceEntry(Kind.STREETLIGHT, None, "in_service"),
        "SL-2": DeviceEntry(Kind.STREETLIGHT, "GW-1", "in_service"),
        "HT-2": DeviceEntry(Kind.HEATING, "GW-1", "in_service"),
        "SL-9": DeviceEntry(Kind.STREETLIGHT, "GW-9", "in_service"),
        "CH-1": DeviceEntry(Kind.CHARGER, None, "in_service"),
    }
    snap = RegistrySnapshot(devices, frozenset({"GW-1", "GW-9"}), frozenset({"CY-A"}))
    cache = RegistryCache(lambda: snap)
    cache.reload()
    return cache


def _decode(topic: str, payload: object, **kw: object) -> PendingBatch:
    batch = PendingBatch()
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    Decoder(_registry(), **kw).decode(topic, raw, RECV, batch)  # type: ignore[arg-type]
    return batch


def test_topics() -> None:
    assert parse_topic("cityops/v1/streetlight/SL-1/telemetry").type is TopicType.TELEMETRY
    assert parse_topic("cityops/v1/charger/C/status").kind is Kind.CHARGER
    assert parse_topic("cityops/v1/gateway/G/telemetry").type is TopicType.GATEWAY
    assert parse_topic("cityops/v1/hotline/12345/complaints").ident == "12345"
    for bad in (
        "cityops/v2/streetlight/x/telemetry",
        "cityops/v1/lamp/x/telemetry",
        "cityops/v1/streetlight/x/y/telemetry",
        "cityops/v1/streetlight//telemetry",
        "cityops/v1/hotline/x/telemetry",
    ):
        with pytest.raises(TopicError):
            parse_topic(bad)


def test_timestamps() -> None:
    assert parse_ts(None, RECV) == RECV
    assert parse_ts(T0, RECV) == T0
    assert parse_ts(float(T0), RECV) == T0
    assert parse_ts("2025-01-01T08:00:00+08:00", RECV) == RECV
    assert parse_ts("2024-12-31T23:59:00.5Z", RECV) == RECV - 59_500
    for bad in ("2025-01-01T08:00:00", "soon", True, T0 // 1000, [1], RECV + 2 * 86_400_000):
        with pytest.raises(ValidationError):
            parse_ts(bad, RECV)


def test_single_and_list_readings() -> None:
    b = _decode(
        "cityops/v1/streetlight/SL-1/telemetry",
        [
            {"ts": T0, "values": {"power_state": "on", "power_w": 80}},
            {"values": {"power_state": "off"}},
        ],
    )
    rows = b.readings[Kind.STREETLIGHT]
    assert rows[0][:3] == ("SL-1", T0, "on")
    assert rows[0][-1] == RECV
    assert rows[0][4] == 80.0
    assert rows[1][1] == RECV  # no ts: receive time
    assert b.dead_letters == []
    assert b.readings_received == 2


def test_gateway_shape_and_foreign_or_unknown_devices() -> None:
    b = _decode(
        "cityops/v1/gateway/GW-1/telemetry",
        {
            "SL-2": [{"ts": T0, "values": {"power_state": "on"}}],
            "HT-2": {"ts": T0, "values": {"temperature_c": 20.5}},
            "SL-9": [{"ts": T0, "values": {"power_state": "on"}}],
            "XX": [{"ts": T0, "values": {}}],
        },
    )
    assert [r[0] for r in b.readings[Kind.STREETLIGHT]] == ["SL-2"]
    assert [r[0] for r in b.readings[Kind.HEATING]] == ["HT-2"]
    assert sorted(d.reason for d in b.dead_letters) == [
        Reason.FOREIGN_DEVICE,
        Reason.UNKNOWN_DEVICE,
    ]
    foreign = next(d for d in b.dead_letters if d.reason == Reason.FOREIGN_DEVICE)
    assert list(orjson.loads(foreign.payload)) == ["SL-9"]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("cityops/v1/streetlight/SL-1/telemetry", b"{", Reason.MALFORMED_JSON),
        ("cityops/v1/streetlight/SL-1/other", {}, Reason.BAD_TOPIC),
        ("cityops/v1/heating/SL-1/telemetry", {"values": {}}, Reason.KIND_MISMATCH),
        ("cityops/v1/streetlight/NOPE/telemetry", {"values": {}}, Reason.UNKNOWN_DEVICE),
        ("cityops/v1/streetlight/SL-1/telemetry", {"values": {"power_w": 1}}, Reason.VALIDATION),
        ("cityops/v1/streetlight/SL-1/telemetry", {"value": {}}, Reason.VALIDATION),
        ("cityops/v1/streetlight/SL-1/telemetry", [1, 2], Reason.VALIDATION),
        ("cityops/v1/gateway/GW-1/telemetry", [1], Reason.VALIDATION),
        ("cityops/v1/charger/CH-1/status", {"online": "yes"}, Reason.VALIDATION),
        ("cityops/v1/gateway/GW-7/status", {"online": True}, Reason.UNKNOWN_DEVICE),
        ("cityops/v1/hotline/h/complaints", {"complaint_id": "c"}, Reason.VALIDATION),
    ],
)
def test_rejections(topic: str, payload: object, reason: Reason) -> None:
    b = _decode(topic, payload)
    assert b.dead_letters, "expected a dead letter"
    assert {d.reason for d in b.dead_letters} == {reason}
    assert all(d.detail for d in b.dead_letters)
    assert not b.readings
    assert not b.complaints
    assert not b.statuses


def test_oversized_payload_is_not_parsed() -> None:
    b = _decode("cityops/v1/streetlight/SL-1/telemetry", b"x" * 300, max_payload_bytes=256)
    assert [d.reason for d in b.dead_letters] == [Reason.OVERSIZED]


def test_auto_registration() -> None:
    b = _decode(
        "cityops/v1/heating/NEW-1/telemetry",
        {"values": {"temperature_c": 19}},
        auto_register_area="CY-A",
    )
    assert b.registrations == [("NEW-1", Kind.HEATING, "CY-A")]
    assert len(b.readings[Kind.HEATING]) == 1


def test_status_and_complaints() -> None:
    b = _decode("cityops/v1/charger/CH-1/status", {"online": False, "ts": T0})
    assert b.statuses == [("CH-1", "charger", False, T0, RECV)]
    b = _decode("cityops/v1/gateway/GW-1/status", {"online": True})
    assert b.statuses == [("GW-1", "gateway", True, RECV, RECV)]
    b = _decode(
        "cityops/v1/hotline/h/complaints",
        [
            {"complaint_id": "A", "received_at": T0, "category": "heating", "area_code": "CY-A"},
            {"complaint_id": "B", "received_at": "2025-01-01T00:00:00Z", "category": "nope"},
            {"complaint_id": "C", "received_at": T0, "category": "other", "area_code": "ZZ"},
        ],
    )
    assert [c["complaint_id"] for c in b.complaints] == ["A"]
    assert b.complaints[0]["received_at"] == datetime(2024, 12, 31, 23, 59, tzinfo=UTC)
    assert b.complaints[0]["status"] == "received"
    assert b.complaints[0]["source"] == "h"
    assert len(b.dead_letters) == 2


_ODD_VALUES: tuple[object, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    0.5,
    -0.0,
    1e300,
    -1e300,
    float("nan"),
    float("inf"),
    float("-inf"),
    -41,
    61,
    100,
    100.0001,
    5000,
    2000.5,
    "1",
    "",
    "on",
    "off",
    "charging",
    "available",
    "lamp_failure",
    "2025-01-01",
    [],
    {},
)


@pytest.mark.parametrize("kind", list(Kind))
def test_compiled_values_check_matches_the_catalog(kind: Kind) -> None:
    """The inline check accepts, coerces and rejects exactly like validate_values."""
    from cityops import catalog
    from ingest.decode import compile_values_check

    spec = catalog.KINDS[kind]
    check = compile_values_check(kind)
    names = [f.name for f in spec.readings]
    base = {f.name: _valid_value(f) for f in spec.readings}
    cases: list[dict[str, object]] = [dict(base), {}, {"unknown": 1}, {**base, "unknown": 1}]
    for name in names:
        for value in _ODD_VALUES:
            cases.append({**base, name: value})
            cases.append({name: value})
        cases.append({k: v for k, v in base.items() if k != name})
    for values in cases:
        try:
            expected: object = [spec.validate_values(values)[n] for n in names]
        except ValidationError as err:
            expected = ("error", str(err))
        try:
            got: object = check(values)
        except ValidationError as err:
            got = ("error", str(err))
        assert repr(got) == repr(expected), values
        if isinstance(got, list) and isinstance(expected, list):
            assert [type(v) for v in got] == [type(v) for v in expected], values


def _valid_value(f: object) -> object:
    from cityops.catalog import FieldSpec, FieldType

    assert isinstance(f, FieldSpec)
    if f.type is FieldType.FLOAT:
        return 1 if f.minimum is None or f.minimum <= 1 <= (f.maximum or 2) else f.minimum
    if f.type is FieldType.INT:
        return 1
    if f.type is FieldType.BOOL:
        return True
    if f.type is FieldType.ENUM:
        return (f.allowed or ("x",))[0]
    return "text"


def test_complaint_area_from_device_and_district_bounds() -> None:
    from ingest.registry_cache import district_bounds

    devices = {"HT-9": DeviceEntry(Kind.HEATING, None, "in_service", "CY-A")}
    bounds = district_bounds([(39.9, 116.45), (40.0, 116.55)])
    snap = RegistrySnapshot(devices, frozenset(), frozenset({"CY-A"}), bounds)
    cache = RegistryCache(lambda: snap)
    cache.reload()
    decoder = Decoder(cache)
    base = {"complaint_id": "C-1", "received_at": T0, "category": "heating"}
    assert decoder.validate_complaint({**base, "device_id": "HT-9"}, RECV)["area_code"] == "CY-A"
    assert decoder.validate_complaint({**base, "device_id": "nope"}, RECV)["area_code"] is None
    inside = decoder.validate_complaint({**base, "lat": 39.85, "lon": 116.62}, RECV)
    assert inside["lat"] == 39.85
    with pytest.raises(ValidationError, match="outside the district"):
        decoder.validate_complaint({**base, "lat": 31.23, "lon": 121.47}, RECV)  # Shanghai
    with pytest.raises(ValidationError, match="outside the district"):
        decoder.validate_complaint({**base, "lat": 40.0, "lon": 39.9}, RECV)  # a lat as lon
    # without any area centroid there is nothing to check against
    assert district_bounds([]) is None


def test_dead_letter_text_is_storable() -> None:
    from ingest.batcher import storable_text

    assert storable_text("a\x00b") == "a\\u0000b"
    assert storable_text("lone \ud800 surrogate") == "lone \\ud800 surrogate"
    assert storable_text("温度 ok") == "温度 ok"
    batch = _decode(
        "cityops/v1/streetlight/SL-1/telemetry", b'{"ts": 1, "values": {"x\\u0000": 1}}'
    )
    (d,) = batch.dead_letters
    assert "\x00" not in d.detail
