"""The device catalog validates values by type, unit range, enum and presence."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cityops import catalog
from cityops.catalog import Kind
from cityops.errors import ValidationError

GOOD = {
    Kind.STREETLIGHT: {
        "power_state": "on",
        "illuminance_level": 0.8,
        "power_w": 96.5,
        "voltage_v": 229.0,
        "current_a": 0.44,
        "energy_kwh": 1234.5,
        "fault": "none",
    },
    Kind.MANHOLE: {
        "tilt_deg": 1.5,
        "cover_open": False,
        "displacement_mm": 0,
        "water_level_cm": 20,
        "overflow": False,
        "battery_pct": 88,
        "signal_dbm": -95,
        "event": "heartbeat",
    },
    Kind.HEATING: {"temperature_c": 20.5, "humidity_pct": 35, "battery_pct": 90},
    Kind.CHARGER: {
        "status": "Charging",
        "error_code": "NoError",
        "power_kw": 6.6,
        "energy_kwh": 10.25,
        "session_id": "tx-1",
    },
}


def test_every_kind_has_an_entry_and_a_table() -> None:
    assert set(catalog.KINDS) == set(Kind)
    assert {spec.table for spec in catalog.KINDS.values()} == {
        "streetlight_readings",
        "manhole_readings",
        "heating_readings",
        "charger_readings",
    }


@pytest.mark.parametrize("kind", list(Kind))
def test_good_reading_passes_and_fills_missing_optional_fields(kind: Kind) -> None:
    spec = catalog.KINDS[kind]
    values = spec.validate_values(GOOD[kind])
    assert set(values) == {f.name for f in spec.readings}
    required = {f.name for f in spec.readings if f.required}
    minimal = {k: v for k, v in GOOD[kind].items() if k in required}
    filled = spec.validate_values(minimal)
    assert all(filled[f.name] is None for f in spec.readings if not f.required)


def test_ints_are_accepted_for_floats_and_stored_as_floats() -> None:
    values = catalog.HEATING.validate_values({"temperature_c": 21})
    assert values["temperature_c"] == 21.0
    assert isinstance(values["temperature_c"], float)


@pytest.mark.parametrize(
    ("kind", "values", "field", "message"),
    [
        (Kind.HEATING, {}, "temperature_c", "required"),
        (Kind.HEATING, {"temperature_c": "21"}, "temperature_c", "expected a number"),
        (Kind.HEATING, {"temperature_c": True}, "temperature_c", "expected a number"),
        (Kind.HEATING, {"temperature_c": 75.0}, "temperature_c", "above the maximum 60"),
        (Kind.HEATING, {"temperature_c": math.nan}, "temperature_c", "not a finite number"),
        (Kind.HEATING, {"temperature_c": 20, "co2": 400}, "co2", "not a heating field"),
        (Kind.STREETLIGHT, {"power_state": "bright"}, "power_state", "not one of on, off"),
        (
            Kind.STREETLIGHT,
            {"power_state": "on", "illuminance_level": 1.5},
            "illuminance_level",
            "above the maximum 1",
        ),
        (Kind.MANHOLE, {"cover_open": "yes"}, "cover_open", "expected true or false"),
        (Kind.MANHOLE, {"battery_pct": -1}, "battery_pct", "below the minimum 0"),
        (Kind.CHARGER, {"status": "Occupied"}, "status", "not one of Available"),
        (Kind.CHARGER, {"status": "charging"}, "status", "not one of"),
        (Kind.CHARGER, {"status": "Faulted", "error_code": "Broken"}, "error_code", "not one of"),
        (Kind.CHARGER, {"status": "Charging", "session_id": "x" * 65}, "session_id", "longer"),
    ],
)
def test_bad_values_are_rejected_with_the_field(
    kind: Kind, values: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        catalog.KINDS[kind].validate_values(values)
    assert info.value.field == field


def test_ocpp_statuses_are_exactly_ocpp_1_6() -> None:
    assert [s.value for s in catalog.OcppStatus] == [
        "Available",
        "Preparing",
        "Charging",
        "SuspendedEV",
        "SuspendedEVSE",
        "Finishing",
        "Reserved",
        "Unavailable",
        "Faulted",
    ]


def test_unknown_kind_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="kind: 'bench'"):
        catalog.kind_spec("bench")


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_temperature_range_is_enforced_exactly(value: float) -> None:
    spec = catalog.HEATING.reading_field("temperature_c")
    assert spec is not None
    if -40 <= value <= 60:
        assert spec.check(value) == value
    else:
        with pytest.raises(ValidationError):
            spec.check(value)


@pytest.mark.parametrize(
    ("text", "expected"), [("true", True), ("0", False), ("Yes", True), ("", None)]
)
def test_text_cells_parse_by_type(text: str, expected: object) -> None:
    spec = catalog.CHARGER.attributes[2]
    assert spec.name == "public"
    if expected is None:
        with pytest.raises(ValidationError, match="required"):
            spec.parse_text(text)
    else:
        assert spec.parse_text(text) is expected


def test_text_cell_number_errors() -> None:
    rated = next(a for a in catalog.STREETLIGHT.attributes if a.name == "rated_power_w")
    assert rated.parse_text(" 120 ") == 120.0
    with pytest.raises(ValidationError, match="expected a number"):
        rated.parse_text("120W")
