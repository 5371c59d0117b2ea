"""The device catalog: every kind, every field, its type, unit, range and whether it is required.

This module is the single source of truth for what a reading, a complaint and a registry entry
may contain. Ingest validates against it, the readings tables are checked against it by the tests,
and ``docs/catalog.md`` is generated from it (``cityops catalog docs``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from cityops.errors import ValidationError


class Kind(StrEnum):
    """The device kinds that report over MQTT (``cityops/v1/{kind}/...``)."""

    STREETLIGHT = "streetlight"
    MANHOLE = "manhole"
    HEATING = "heating"
    CHARGER = "charger"


class FieldType(StrEnum):
    """Value types a catalog field can have, with their PostgreSQL column types."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STR = "str"
    ENUM = "enum"
    DATE = "date"

    @property
    def sql_type(self) -> str:
        """The column type used for this field in PostgreSQL."""
        return {
            FieldType.FLOAT: "double precision",
            FieldType.INT: "integer",
            FieldType.BOOL: "boolean",
            FieldType.STR: "text",
            FieldType.ENUM: "text",
            FieldType.DATE: "date",
        }[self]


class OcppStatus(StrEnum):
    """OCPP 1.6 ChargePointStatus of a connector (StatusNotification.req)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class OcppErrorCode(StrEnum):
    """OCPP 1.6 ChargePointErrorCode reported with a status notification."""

    NO_ERROR = "NoError"
    CONNECTOR_LOCK_FAILURE = "ConnectorLockFailure"
    EV_COMMUNICATION_ERROR = "EVCommunicationError"
    GROUND_FAILURE = "GroundFailure"
    HIGH_TEMPERATURE = "HighTemperature"
    INTERNAL_ERROR = "InternalError"
    LOCAL_LIST_CONFLICT = "LocalListConflict"
    OTHER_ERROR = "OtherError"
    OVER_CURRENT_FAILURE = "OverCurrentFailure"
    OVER_VOLTAGE = "OverVoltage"
    POWER_METER_FAILURE = "PowerMeterFailure"
    POWER_SWITCH_FAILURE = "PowerSwitchFailure"
    READER_FAILURE = "ReaderFailure"
    RESET_FAILURE = "ResetFailure"
    UNDER_VOLTAGE = "UnderVoltage"
    WEAK_SIGNAL = "WeakSignal"


class PowerState(StrEnum):
    """A lamp's power state (FIWARE Streetlight ``powerState``, plus dimmed)."""

    ON = "on"
    OFF = "off"
    DIMMED = "dimmed"


class LampFault(StrEnum):
    """Fault reported by a single-lamp controller."""

    NONE = "none"
    LAMP_FAILURE = "lamp_failure"
    DRIVER_FAILURE = "driver_failure"
    OVER_VOLTAGE = "over_voltage"
    UNDER_VOLTAGE = "under_voltage"
    OVER_TEMPERATURE = "over_temperature"
    LEAKAGE = "leakage"
    POWER_LOSS = "power_loss"


class ManholeEvent(StrEnum):
    """Why a cover sensor sent a message."""

    HEARTBEAT = "heartbeat"
    OPEN = "open"
    CLOSE = "close"
    TILT = "tilt"
    DISPLACEMENT = "displacement"
    OVERFLOW = "overflow"
    LOW_BATTERY = "low_battery"


class ComplaintCategory(StrEnum):
    """Category of a 12345 hotline complaint."""

    HEATING = "heating"
    STREETLIGHT = "streetlight"
    MANHOLE = "manhole"
    CHARGING = "charging"
    OTHER = "other"


class ComplaintStatus(StrEnum):
    """Status of a complaint as the hotline reports it."""

    RECEIVED = "received"
    DISPATCHED = "dispatched"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REJECTED = "rejected"


class DeviceStatus(StrEnum):
    """A registered device's service status."""

    IN_SERVICE = "in_service"
    MAINTENANCE = "maintenance"
    RETIRED = "retired"


class ScheduleClass(StrEnum):
    """Which switching schedule a lamp follows."""

    MAINS = "mains"
    SOLAR = "solar"


class OwnerUnit(StrEnum):
    """Who owns (and gets dispatched to) a manhole."""

    TELECOM = "telecom"
    POWER = "power"
    GAS = "gas"
    HEAT = "heat"
    STORM_WATER = "storm_water"
    SEWAGE = "sewage"
    WATER = "water"


class AreaType(StrEnum):
    """Administrative type of a street/township unit."""

    STREET = "street"
    AREA = "area"
    TOWNSHIP = "township"


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldSpec:
    """One field of a reading, complaint or registry record."""

    name: str
    type: FieldType
    description: str
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None
    required: bool = False
    max_length: int | None = None
    # The smallest step the sensor reports (its resolution): the anomaly detector's floor on the
    # spread, so a noise-free series never scores infinity (docs/alerts.md).
    resolution: float | None = None

    def check(self, value: Any) -> Any:
        """Return ``value`` coerced to this field's type, or raise ValidationError."""
        if value is None:
            if self.required:
                raise ValidationError(f"{self.name}: required", self.name)
            return None
        checked: Any = _CHECKERS[self.type](self, value)
        if self.minimum is not None and checked < self.minimum:
            raise ValidationError(
                f"{self.name}: {checked!r} is below the minimum {self.minimum:g}", self.name
            )
        if self.maximum is not None and checked > self.maximum:
            raise ValidationError(
                f"{self.name}: {checked!r} is above the maximum {self.maximum:g}", self.name
            )
        return checked

    def parse_text(self, text: str | None) -> Any:
        """Check a value read from text (a CSV cell); an empty cell is a missing value."""
        if text is None or text.strip() == "":
            return self.check(None)
        text = text.strip()
        value: Any = text
        if self.type is FieldType.FLOAT:
            try:
                value = float(text)
            except ValueError:
                raise ValidationError(
                    f"{self.name}: expected a number, got {text!r}", self.name
                ) from None
        elif self.type is FieldType.INT:
            try:
                value = int(text)
            except ValueError:
                raise ValidationError(
                    f"{self.name}: expected an integer, got {text!r}", self.name
                ) from None
        elif self.type is FieldType.BOOL:
            lowered = text.lower()
            if lowered in _TRUE_WORDS:
                value = True
            elif lowered in _FALSE_WORDS:
                value = False
            else:
                raise ValidationError(
                    f"{self.name}: expected true or false, got {text!r}", self.name
                )
        return self.check(value)

    def describe_range(self) -> str:
        """Human-readable allowed values or range, for the docs."""
        if self.allowed:
            return ", ".join(f"`{a}`" for a in self.allowed)
        if self.minimum is not None and self.maximum is not None:
            step = f", step {self.resolution:g}" if self.resolution is not None else ""
            return f"{self.minimum:g} .. {self.maximum:g}{step}"
        if self.minimum is not None:
            return f">= {self.minimum:g}"
        if self.maximum is not None:
            return f"<= {self.maximum:g}"
        if self.max_length is not None:
            return f"up to {self.max_length} characters"
        return ""


_TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_WORDS = frozenset({"false", "f", "no", "n", "0"})


def _check_float(spec: FieldSpec, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{spec.name}: expected a number, got {value!r}", spec.name)
    result = float(value)
    if not math.isfinite(result):
        raise ValidationError(f"{spec.name}: {value!r} is not a finite number", spec.name)
    return result


def _check_int(spec: FieldSpec, value: Any) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{spec.name}: expected an integer, got {value!r}", spec.name)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise ValidationError(f"{spec.name}: expected an integer, got {value!r}", spec.name)
    return value


def _check_bool(spec: FieldSpec, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{spec.name}: expected true or false, got {value!r}", spec.name)
    return value


def _check_str(spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{spec.name}: expected a string, got {value!r}", spec.name)
    if spec.max_length is not None and len(value) > spec.max_length:
        raise ValidationError(f"{spec.name}: longer than {spec.max_length} characters", spec.name)
    if "\x00" in value:
        raise ValidationError(f"{spec.name}: contains a NUL character", spec.name)
    return value


def _check_enum(spec: FieldSpec, value: Any) -> str:
    if not isinstance(value, str) or spec.allowed is None or value not in spec.allowed:
        allowed = ", ".join(spec.allowed or ())
        raise ValidationError(f"{spec.name}: {value!r} is not one of {allowed}", spec.name)
    return value


def _check_date(spec: FieldSpec, value: Any) -> date:
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(f"{spec.name}: expected a date YYYY-MM-DD, got {value!r}", spec.name)


_CHECKERS = {
    FieldType.FLOAT: _check_float,
    FieldType.INT: _check_int,
    FieldType.BOOL: _check_bool,
    FieldType.STR: _check_str,
    FieldType.ENUM: _check_enum,
    FieldType.DATE: _check_date,
}


def _enum(
    name: str, values: type[StrEnum], description: str, *, required: bool = False
) -> FieldSpec:
    return FieldSpec(
        name=name,
        type=FieldType.ENUM,
        allowed=tuple(v.value for v in values),
        description=description,
        required=required,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class KindSpec:
    """Everything the catalog knows about one device kind."""

    kind: Kind
    title: str
    description: str
    typical_interval_s: int
    readings: tuple[FieldSpec, ...]
    attributes: tuple[FieldSpec, ...]

    @property
    def table(self) -> str:
        """Name of this kind's readings table."""
        return f"{self.kind.value}_readings"

    def reading_field(self, name: str) -> FieldSpec | None:
        """The reading field called ``name``, or None."""
        return _READING_INDEX[self.kind].get(name)

    def validate_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check a reading's ``values`` object; raise ValidationError on the first problem."""
        if not isinstance(values, Mapping):
            raise ValidationError("values: expected an object", "values")
        index = _READING_INDEX[self.kind]
        for key in values:
            if key not in index:
                raise ValidationError(f"{key}: not a {self.kind.value} field", str(key))
        return {f.name: f.check(values.get(f.name)) for f in self.readings}

    def validate_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """Check a registry entry's kind-specific attributes."""
        index = {f.name: f for f in self.attributes}
        for key in attributes:
            if key not in index:
                raise ValidationError(f"{key}: not an attribute of a {self.kind.value}", str(key))
        out: dict[str, Any] = {}
        for f in self.attributes:
            value = f.check(attributes.get(f.name))
            if value is not None:
                out[f.name] = value.isoformat() if isinstance(value, date) else value
        return out


STREETLIGHT = KindSpec(
    kind=Kind.STREETLIGHT,
    title="Streetlight",
    description="Single-lamp controller of a mains or solar lamp, often behind a cabinet "
    "concentrator (gateway). Field meanings follow the FIWARE Streetlight data model.",
    typical_interval_s=300,
    readings=(
        _enum("power_state", PowerState, "Lamp power state (FIWARE powerState).", required=True),
        FieldSpec(
            name="illuminance_level",
            type=FieldType.FLOAT,
            minimum=0,
            maximum=1,
            description="Relative light output, 1 = full (FIWARE illuminanceLevel).",
        ),
        FieldSpec(
            name="power_w",
            type=FieldType.FLOAT,
            unit="W",
            minimum=0,
            maximum=5000,
            resolution=0.1,
            description="Active power drawn by the lamp.",
        ),
        FieldSpec(
            name="voltage_v",
            type=FieldType.FLOAT,
            unit="V",
            minimum=0,
            maximum=500,
            description="Supply voltage at the controller.",
        ),
        FieldSpec(
            name="current_a",
            type=FieldType.FLOAT,
            unit="A",
            minimum=0,
            maximum=50,
            description="Supply current.",
        ),
        FieldSpec(
            name="energy_kwh",
            type=FieldType.FLOAT,
            unit="kWh",
            minimum=0,
            description="Cumulative energy meter of the controller.",
        ),
        _enum("fault", LampFault, "Fault code reported by the controller (`none` when healthy)."),
    ),
    attributes=(
        FieldSpec(name="road", type=FieldType.STR, max_length=200, description="Road name."),
        _enum(
            "schedule_class",
            ScheduleClass,
            "Switching schedule: city mains or own solar.",
            required=True,
        ),
        FieldSpec(
            name="rated_power_w",
            type=FieldType.FLOAT,
            unit="W",
            minimum=1,
            maximum=5000,
            description="Rated lamp power.",
        ),
        FieldSpec(
            name="cabinet_id",
            type=FieldType.STR,
            max_length=64,
            description="Lighting cabinet / circuit the lamp hangs on.",
        ),
    ),
)

MANHOLE = KindSpec(
    kind=Kind.MANHOLE,
    title="Manhole cover",
    description="Smart cover sensor: tilt, opening, displacement, water level, battery.",
    typical_interval_s=1800,
    readings=(
        FieldSpec(
            name="tilt_deg",
            type=FieldType.FLOAT,
            unit="deg",
            minimum=0,
            maximum=180,
            description="Tilt of the cover against its seated position.",
        ),
        FieldSpec(
            name="cover_open",
            type=FieldType.BOOL,
            description="Cover lifted from its frame.",
        ),
        FieldSpec(
            name="displacement_mm",
            type=FieldType.FLOAT,
            unit="mm",
            minimum=0,
            maximum=2000,
            description="Horizontal displacement from the seated position.",
        ),
        FieldSpec(
            name="water_level_cm",
            type=FieldType.FLOAT,
            unit="cm",
            minimum=0,
            maximum=2000,
            resolution=0.1,
            description="Water depth in the well, measured from the well bottom.",
        ),
        FieldSpec(
            name="overflow",
            type=FieldType.BOOL,
            description="The sensor's overflow flag (water at or above the alarm level).",
        ),
        FieldSpec(
            name="battery_pct",
            type=FieldType.FLOAT,
            unit="%",
            minimum=0,
            maximum=100,
            description="Remaining battery.",
        ),
        FieldSpec(
            name="signal_dbm",
            type=FieldType.FLOAT,
            unit="dBm",
            minimum=-150,
            maximum=0,
            description="Radio signal strength (NB-IoT RSRP).",
        ),
        _enum("event", ManholeEvent, "Why the message was sent; `heartbeat` when periodic."),
    ),
    attributes=(
        FieldSpec(name="road", type=FieldType.STR, max_length=200, description="Road name."),
        _enum("owner_unit", OwnerUnit, "Owner of the well, who is dispatched.", required=True),
        FieldSpec(
            name="well_depth_cm",
            type=FieldType.FLOAT,
            unit="cm",
            minimum=10,
            maximum=2000,
            description="Depth of the well.",
        ),
        FieldSpec(
            name="overflow_level_cm",
            type=FieldType.FLOAT,
            unit="cm",
            minimum=0,
            maximum=2000,
            description="Water level at which the well counts as overflowing.",
        ),
    ),
)

HEATING = KindSpec(
    kind=Kind.HEATING,
    title="Room-temperature sensor",
    description="Room-temperature detector in a heated home (FIWARE IndoorEnvironment meanings).",
    typical_interval_s=1200,
    readings=(
        FieldSpec(
            name="temperature_c",
            type=FieldType.FLOAT,
            unit="°C",
            minimum=-40,
            maximum=60,
            required=True,
            resolution=0.1,
            description="Room air temperature.",
        ),
        FieldSpec(
            name="humidity_pct",
            type=FieldType.FLOAT,
            unit="%",
            minimum=0,
            maximum=100,
            description="Relative humidity.",
        ),
        FieldSpec(
            name="battery_pct",
            type=FieldType.FLOAT,
            unit="%",
            minimum=0,
            maximum=100,
            description="Remaining battery.",
        ),
    ),
    attributes=(
        FieldSpec(
            name="heated_area_m2",
            type=FieldType.FLOAT,
            unit="m²",
            minimum=1,
            maximum=100_000,
            description="Heated floor area the sensor represents.",
        ),
        FieldSpec(name="building", type=FieldType.STR, max_length=200, description="Building."),
        FieldSpec(
            name="compound",
            type=FieldType.STR,
            max_length=200,
            description="Residential compound (小区).",
        ),
        FieldSpec(
            name="heat_company",
            type=FieldType.STR,
            max_length=200,
            description="Heat supplier responsible for the building.",
        ),
    ),
)

CHARGER = KindSpec(
    kind=Kind.CHARGER,
    title="EV charger connector",
    description="Public EV charging pile connector reporting OCPP 1.6 status.",
    typical_interval_s=120,
    readings=(
        _enum("status", OcppStatus, "OCPP 1.6 connector status.", required=True),
        _enum("error_code", OcppErrorCode, "OCPP 1.6 error code (`NoError` when healthy)."),
        FieldSpec(
            name="power_kw",
            type=FieldType.FLOAT,
            unit="kW",
            minimum=0,
            maximum=1000,
            resolution=0.01,
            description="Instantaneous charging power.",
        ),
        FieldSpec(
            name="energy_kwh",
            type=FieldType.FLOAT,
            unit="kWh",
            minimum=0,
            description="Connector energy meter (Energy.Active.Import.Register).",
        ),
        FieldSpec(
            name="session_id",
            type=FieldType.STR,
            max_length=64,
            description="Current charging session (OCPP transactionId).",
        ),
    ),
    attributes=(
        FieldSpec(
            name="site_id",
            type=FieldType.STR,
            max_length=64,
            required=True,
            description="Charging site (station) the connector belongs to.",
        ),
        FieldSpec(
            name="power_kw",
            type=FieldType.FLOAT,
            unit="kW",
            minimum=1,
            maximum=1000,
            description="Rated connector power.",
        ),
        FieldSpec(
            name="public",
            type=FieldType.BOOL,
            required=True,
            description="Open to the public (counts for the service radius).",
        ),
        FieldSpec(
            name="connector_no",
            type=FieldType.INT,
            minimum=1,
            maximum=64,
            description="Connector number on the pile.",
        ),
    ),
)

KINDS: Mapping[Kind, KindSpec] = {
    spec.kind: spec for spec in (STREETLIGHT, MANHOLE, HEATING, CHARGER)
}

# The reading field the stream core's anomaly detector follows per kind (stream/state.py) and the
# simulators inject anomaly shapes into (simulators/shapes.py).
ANOMALY_FIELD: Mapping[Kind, str] = {
    Kind.STREETLIGHT: "power_w",
    Kind.MANHOLE: "water_level_cm",
    Kind.HEATING: "temperature_c",
    Kind.CHARGER: "power_kw",
}
_READING_INDEX: dict[Kind, dict[str, FieldSpec]] = {
    kind: {f.name: f for f in spec.readings} for kind, spec in KINDS.items()
}

COMPLAINT_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        name="complaint_id",
        type=FieldType.STR,
        required=True,
        max_length=64,
        description="Hotline record id; a complaint is stored once per id.",
    ),
    FieldSpec(
        name="received_at",
        type=FieldType.STR,
        required=True,
        description="When the hotline received it (RFC 3339 or epoch milliseconds).",
    ),
    _enum("category", ComplaintCategory, "Complaint category.", required=True),
    FieldSpec(
        name="area_code",
        type=FieldType.STR,
        max_length=32,
        description="Street/township code (see the areas registry).",
    ),
    FieldSpec(name="address", type=FieldType.STR, max_length=500, description="Address."),
    FieldSpec(
        name="lat",
        type=FieldType.FLOAT,
        unit="deg",
        minimum=-90,
        maximum=90,
        description="Latitude (WGS 84), when known.",
    ),
    FieldSpec(
        name="lon",
        type=FieldType.FLOAT,
        unit="deg",
        minimum=-180,
        maximum=180,
        description="Longitude (WGS 84), when known.",
    ),
    FieldSpec(
        name="device_id",
        type=FieldType.STR,
        max_length=64,
        description="Device the complaint is about, when the hotline knows it.",
    ),
    FieldSpec(name="text", type=FieldType.STR, max_length=4000, description="Complaint text."),
    _enum("status", ComplaintStatus, "Hotline status of the record (default `received`)."),
)

DEVICE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        name="device_id",
        type=FieldType.STR,
        required=True,
        max_length=64,
        description="Unique device id; also its MQTT topic segment and broker user name.",
    ),
    _enum("kind", Kind, "Device kind.", required=True),
    FieldSpec(
        name="area_code",
        type=FieldType.STR,
        required=True,
        max_length=32,
        description="Street/township the device is in.",
    ),
    FieldSpec(
        name="lat",
        type=FieldType.FLOAT,
        unit="deg",
        minimum=-90,
        maximum=90,
        description="Latitude (WGS 84).",
    ),
    FieldSpec(
        name="lon",
        type=FieldType.FLOAT,
        unit="deg",
        minimum=-180,
        maximum=180,
        description="Longitude (WGS 84).",
    ),
    FieldSpec(
        name="gateway_id",
        type=FieldType.STR,
        max_length=64,
        description="Gateway/concentrator that may report this device.",
    ),
    FieldSpec(name="install_date", type=FieldType.DATE, description="Installation date."),
    _enum("status", DeviceStatus, "Service status (default `in_service`)."),
)

AREA_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(
        name="code",
        type=FieldType.STR,
        required=True,
        max_length=32,
        description="Street/township code, e.g. `CY-JW`.",
    ),
    FieldSpec(
        name="name_zh",
        type=FieldType.STR,
        required=True,
        max_length=100,
        description="Chinese name.",
    ),
    FieldSpec(name="name_en", type=FieldType.STR, max_length=100, description="English name."),
    _enum("type", AreaType, "Street (街道), area office (地区) or township (乡).", required=True),
    FieldSpec(
        name="district",
        type=FieldType.STR,
        required=True,
        max_length=100,
        description="District the unit belongs to.",
    ),
    FieldSpec(
        name="lon",
        type=FieldType.FLOAT,
        unit="deg",
        minimum=-180,
        maximum=180,
        description="Centroid longitude.",
    ),
    FieldSpec(
        name="lat",
        type=FieldType.FLOAT,
        unit="deg",
        minimum=-90,
        maximum=90,
        description="Centroid latitude.",
    ),
    FieldSpec(
        name="land_area_km2",
        type=FieldType.FLOAT,
        unit="km²",
        minimum=0,
        maximum=100_000,
        description="Land area.",
    ),
    FieldSpec(
        name="population",
        type=FieldType.INT,
        minimum=0,
        maximum=100_000_000,
        description="Resident population.",
    ),
    FieldSpec(
        name="heated_area_m2",
        type=FieldType.FLOAT,
        unit="m²",
        minimum=0,
        maximum=1e10,
        description="Heated floor area (denominator of the heating-complaint density).",
    ),
    FieldSpec(
        name="generated",
        type=FieldType.STR,
        max_length=500,
        description="`;`-separated names of attributes that are generated, not surveyed.",
    ),
)


def kind_spec(kind: str) -> KindSpec:
    """The catalog entry for ``kind``; raise ValidationError for an unknown kind."""
    try:
        return KINDS[Kind(kind)]
    except ValueError:
        allowed = ", ".join(k.value for k in Kind)
        raise ValidationError(f"kind: {kind!r} is not one of {allowed}", "kind") from None
