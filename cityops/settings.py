"""The one typed settings object, read from ``CITYOPS_*`` environment variables and a TOML file.

Precedence, highest first: explicit keyword arguments, environment variables, the config file
(``CITYOPS_CONFIG`` or the path given to :func:`load_settings`), the defaults below. Nested groups
map to environment variables with one underscore: ``db.dsn`` is ``CITYOPS_DB_DSN``,
``mqtt.client_id`` is ``CITYOPS_MQTT_CLIENT_ID``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cityops.errors import ConfigError

CONFIG_ENV = "CITYOPS_CONFIG"


class _Group(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class DatabaseSettings(_Group):
    """Where PostgreSQL is and how cityops connects to it."""

    dsn: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/cityops",
        description="libpq connection string or URI of the cityops database.",
    )
    pool_min: int = Field(default=1, ge=0, le=100, description="Connections kept open.")
    pool_max: int = Field(default=10, ge=1, le=500, description="Upper bound of the pool.")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    statement_timeout_ms: int = Field(
        default=60_000, ge=0, description="Per-statement limit; 0 disables it."
    )

    @field_validator("dsn")
    @classmethod
    def _dsn_shape(cls, value: str) -> str:
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(value)
        except Exception as err:
            raise ValueError(f"not a valid libpq connection string: {err}") from err
        return value


class MqttSettings(_Group):
    """The broker cityops subscribes and publishes to."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field(default="cityops", min_length=1, max_length=128)
    tls: bool = False
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    device_secret: SecretStr | None = Field(
        default=None,
        description="Secret from which per-device broker passwords are derived "
        "(cityops.broker_auth); needed to generate broker credentials and by simulators.",
    )


class StorageSettings(_Group):
    """Time-series storage: partition (chunk) size, retention and the TimescaleDB choice."""

    timescaledb: Literal["auto", "require", "off"] = Field(
        default="auto",
        description="auto: use TimescaleDB when installed and preloaded; require: fail without "
        "it; off: always use native partitioning.",
    )
    partition_days: int = Field(
        default=1, ge=1, le=31, description="Width of a partition/chunk of a readings table."
    )
    retention_days: int = Field(
        default=90, ge=1, description="Raw readings older than this are dropped by maintenance."
    )
    premake_partitions: int = Field(
        default=7, ge=1, le=400, description="Partitions created ahead of now by maintenance."
    )
    compress_after_days: int = Field(
        default=7, ge=1, description="TimescaleDB only: compress chunks older than this."
    )


class ScheduleSettings(_Group):
    """Switching schedule of the street lighting and the heating calendar (local time at edges)."""

    latitude: float = Field(default=39.9, ge=-90, le=90, description="Where dusk/dawn is computed.")
    longitude: float = Field(default=116.4, ge=-180, le=180)
    mains_on_offset_min: int = Field(
        default=10, ge=-180, le=180, description="Mains lamps switch on this long after sunset."
    )
    mains_off_offset_min: int = Field(
        default=-10,
        ge=-180,
        le=180,
        description="Mains lamps switch off this long after sunrise (negative: before).",
    )
    solar_on_offset_min: int = Field(
        default=20, ge=-180, le=180, description="Solar lamps switch on this long after sunset."
    )
    solar_off_offset_min: int = Field(
        default=-20, ge=-180, le=180, description="Solar lamps switch off relative to sunrise."
    )
    heating_season_start: str = Field(
        default="11-15", pattern=r"^\d{2}-\d{2}$", description="First day of the season, MM-DD."
    )
    heating_season_end: str = Field(
        default="03-15", pattern=r"^\d{2}-\d{2}$", description="Last day of the season, MM-DD."
    )
    room_standard_c: float = Field(
        default=18.0, ge=5, le=30, description="Room-temperature standard for compliance."
    )

    @field_validator("heating_season_start", "heating_season_end")
    @classmethod
    def _month_day(cls, value: str) -> str:
        from datetime import date

        month, day = (int(p) for p in value.split("-"))
        try:
            date(2024, month, day)  # a leap year accepts 02-29
        except ValueError as err:
            raise ValueError(f"{value!r} is not a valid MM-DD day") from err
        return value


class IngestSettings(_Group):
    """The ingest process: subscription, batching, back-pressure, registry checks, health port."""

    subscription_group: str | None = Field(
        default=None,
        description="Shared-subscription group ($share/<group>/...) so several workers split "
        "the load; unset: a plain subscription (one worker). See docs/ingest.md on mosquitto.",
    )
    topic_root: str = Field(default="cityops/v1", min_length=1, description="Topic prefix.")
    session_expiry_s: int = Field(
        default=86_400,
        ge=0,
        description="How long the broker keeps the persistent session (and queues messages) "
        "while ingest is away.",
    )
    receive_maximum: int = Field(
        default=2000,
        ge=1,
        le=65535,
        description="MQTT 5 Receive Maximum: un-acknowledged messages the broker may send; "
        "bounds ingest memory when the database is slow.",
    )
    batch_max_rows: int = Field(
        default=5000, ge=1, le=1_000_000, description="A batch is written at this many rows."
    )
    batch_max_ms: int = Field(
        default=50, ge=1, le=60_000, description="...or when its oldest message is this old."
    )
    max_payload_bytes: int = Field(
        default=262_144, ge=256, description="Larger payloads are dead-lettered unread."
    )
    auto_register: bool = Field(
        default=False,
        description="Register unknown devices seen on their own telemetry topic instead of "
        "dead-lettering their readings.",
    )
    auto_register_area: str | None = Field(
        default=None,
        description="Area code auto-registered devices are put in (required with "
        "auto_register; operators move them later with a registry import).",
    )
    registry_refresh_s: float = Field(
        default=60.0, gt=0, description="Full reload interval of the in-memory registry cache."
    )
    registry_miss_refresh_s: float = Field(
        default=5.0,
        ge=0,
        description="An unknown device triggers a reload at most this often.",
    )
    retry_initial_s: float = Field(default=0.2, gt=0, description="First database retry wait.")
    retry_max_s: float = Field(default=10.0, gt=0, description="Longest database retry wait.")
    shutdown_timeout_s: float = Field(
        default=30.0, gt=0, description="SIGTERM: how long to try flushing before giving up."
    )
    http_host: str = Field(default="0.0.0.0", description="Metrics/readiness listen address.")  # noqa: S104
    http_port: int = Field(
        default=9108, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; 0: off."
    )
    partitions: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Scale-out with device affinity on brokers without hash_topic: N workers, "
        "each keeping the areas of its partition (docs/scaling.md); 1: no partitioning.",
    )
    partition: int = Field(default=0, ge=0, description="This worker's partition, 0..partitions-1.")
    burst_messages: int = Field(
        default=1_000_000,
        ge=0,
        description="Messages the broker must hold for this worker while it is stopped or behind "
        "(an hour of a district's traffic); `cityops ingest` warns at start when the broker's "
        "queue limit is known to be smaller (docs/ingest.md). 0: no check.",
    )
    broker_max_queued_messages: int | None = Field(
        default=None,
        ge=1,
        description="The broker's per-client queue limit (mosquitto max_queued_messages), "
        "declared for the start-up check when the broker cannot tell it; unset: unknown.",
    )
    broker_check_s: float = Field(
        default=3.0,
        ge=0,
        description="How long the start-up broker check waits for the broker; 0: no check.",
    )

    @pydantic.model_validator(mode="after")
    def _partition_exists(self) -> IngestSettings:
        if self.partition >= self.partitions:
            raise ValueError(
                f"ingest.partition {self.partition} does not exist with ingest.partitions "
                f"{self.partitions} (valid: 0..{self.partitions - 1})"
            )
        return self

    @field_validator("subscription_group")
    @classmethod
    def _group_name(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if any(c in value for c in "/+#"):
            raise ValueError("a shared-subscription group name cannot contain /, + or #")
        return value


class StreamSettings(_Group):
    """Parameters of the rates and per-sensor state computed by the stream core (docs/rates.md)."""

    lighting_hold_min: int = Field(
        default=20, ge=1, le=1440, description="A lamp reading's state holds at most this long."
    )
    snapshot_offset_min: int = Field(
        default=60, ge=0, le=720, description="Nightly snapshot check this long after switch-on."
    )
    heating_hold_min: int = Field(
        default=60, ge=1, le=1440, description="A room-temperature reading holds this long."
    )
    cold_episode_hours: float = Field(
        default=6.0, gt=0, le=240, description="Below the standard this long is a cold episode."
    )
    charger_hold_min: int = Field(
        default=15, ge=1, le=1440, description="A connector status report holds this long."
    )
    manhole_hold_min: int = Field(
        default=70, ge=1, le=1440, description="A cover report (heartbeat) holds this long."
    )
    displacement_alarm_mm: float = Field(
        default=20.0, gt=0, description="Displacement at or above this is a displacement alarm."
    )
    anomaly_memory: int = Field(
        default=500,
        ge=10,
        le=1_000_000,
        description="Readings of memory of the anomaly detector's spread (and, divided over the "
        "slots, of each slot's baseline): hours to days of a sensor's readings.",
    )
    anomaly_level_memory: int = Field(
        default=24,
        ge=2,
        le=1_000_000,
        description="Readings of memory of a seasonal field's level (its slow, weather-driven "
        "changes under the daily shape).",
    )
    anomaly_warmup: int = Field(
        default=24, ge=2, le=100_000, description="Readings a sensor is learnt before it is scored."
    )
    anomaly_clip: float = Field(
        default=3.0, gt=0, le=100, description="Residuals are clipped at this many σ when learnt."
    )
    anomaly_fast_alpha: float = Field(
        default=0.3, gt=0, lt=1, description="Weight of a reading in the short-term spread."
    )
    anomaly_flat_log10: float = Field(
        default=6.0,
        gt=0,
        le=50,
        description="A run of repeated values as unlikely as 10^-this scores anomaly_z_ref.",
    )
    anomaly_noise_ratio: float = Field(
        default=5.0,
        gt=1,
        le=100,
        description="A short-term σ this many times the usual one scores anomaly_z_ref.",
    )
    anomaly_z_ref: float = Field(
        default=7.0,
        gt=0,
        le=1000,
        description="The score the flat and noise statistics are "
        "scaled to at their reference levels (the shipped rules fire at 7).",
    )
    anomaly_save_s: float = Field(
        default=300.0, gt=0, le=86_400, description="The detector state is saved this often."
    )
    flatline_min: int = Field(
        default=360, ge=1, description="A value unchanged this long (minutes) is a flatline."
    )
    gap_factor: float = Field(
        default=3.0, gt=1, description="Offline after this many typical intervals without data."
    )
    publish_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="Live per-area snapshots are published this often."
    )
    max_lag_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="Committed batches waiting longer than this to reach rates_hourly (stream) "
        "or the alerts tables (alert engine) make ingest's and the API's /readyz not ready.",
    )


class AlertsSettings(_Group):
    """The alert engine: rules file, evaluation tick, flapping, cases and complaint linking."""

    rules_file: Path | None = Field(
        default=None, description="Rules YAML; the shipped alerts/rules/default.yaml when unset."
    )
    tick_s: float = Field(
        default=5.0, gt=0, le=300, description="Period of time-based evaluation (no data, for)."
    )
    case_severities: tuple[Literal["info", "warning", "critical"], ...] = Field(
        default=("warning", "critical"), description="Firing alerts of these open cases."
    )
    flap_count: int = Field(default=4, ge=2, description="Fires within flap_window_s = flapping.")
    flap_window_s: float = Field(default=3600.0, gt=0)
    link_radius_m: float = Field(
        default=300.0, gt=0, description="A complaint this close to a case's device links to it."
    )
    link_window_h: float = Field(
        default=48.0, gt=0, description="...if the case was detected within this many hours."
    )


class NotifySettings(_Group):
    """Alert notifications: the routing file and how often groups, reminders and retries run."""

    routes_file: Path | None = Field(
        default=None,
        description="Routing file (receivers, routes, escalation); none: the shipped "
        "alerts/rules/routes.yaml, which publishes every alert on MQTT.",
    )
    tick_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often due groups, reminders, escalations and retries are sent.",
    )


class ApiSettings(_Group):
    """The HTTP API process (`cityops api`): where it listens and how the live feed behaves."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Listen address.")
    port: int = Field(default=8000, ge=1, le=65535, description="Listen port.")
    page_size_max: int = Field(
        default=1000, ge=1, le=100_000, description="Largest page any list endpoint returns."
    )
    sse_heartbeat_s: float = Field(
        default=15.0, gt=0, le=300, description="Comment line sent on idle live-feed streams."
    )
    sse_client_buffer: int = Field(
        default=1000,
        ge=10,
        le=1_000_000,
        description="Events queued per live-feed client before it is cut off as too slow.",
    )
    readings_max_buckets: int = Field(
        default=10_000,
        ge=10,
        le=1_000_000,
        description="Most time buckets one downsampled readings query may span.",
    )
    readings_max_span_days: int = Field(
        default=366, ge=1, le=3660, description="Longest time range of a readings query."
    )
    export_max_rows: int = Field(
        default=1_000_000, ge=1, description="Most rows one CSV export streams."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body of any route except the imports; larger bodies get "
        "413 before they are parsed or the key is checked.",
    )
    max_import_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Largest body of /api/v1/areas/import and /api/v1/devices/import.",
    )
    auth_failures_max: int = Field(
        default=20,
        ge=1,
        description="Failed key checks allowed per client address, and per presented key, "
        "within auth_failure_window_s; more get 429 until the window has passed.",
    )
    auth_failure_window_s: float = Field(
        default=60.0, gt=0, le=86_400, description="Window of auth_failures_max (seconds)."
    )
    metrics_public: bool | None = Field(
        default=None,
        description="Serve /metrics without a key. Unset: public in development, a viewer key "
        "is needed in production.",
    )
    docs_public: bool | None = Field(
        default=None,
        description="Serve /docs and /openapi.json without a key. Unset: public in "
        "development, a viewer key is needed in production.",
    )
    sse_kind_rate_max: float = Field(
        default=50.0,
        gt=0,
        description="Readings per second one live-feed client receives per kind (the newest "
        "per device win when more arrive); protects the feed from one busy kind.",
    )


class ReportSettings(_Group):
    """Parameters of the monthly report that the plans and seeds leave open (docs/indicators.md).

    Every report records the values it used, so a figure can be explained and reproduced.
    """

    heating_baseline_2020: float = Field(
        default=0.69,
        gt=0,
        description="2020 heating complaints per 10,000 m² per season, the level the density "
        "target is relative to (district: about 13,000 complaints over 2.24e8 m²).",
    )
    manhole_sla_h: float = Field(
        default=24.0, gt=0, le=24 * 90, description="Hours within which a manhole case must close."
    )
    radius_cell_km: float = Field(
        default=0.5,
        gt=0.05,
        le=10,
        description="Grid cell of the effective charging service radius (smaller: finer, slower).",
    )
    level_gap_tolerance_pp: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description="Level indicator without a 2020 value, a rate (%): a gap to the target of at "
        "most this many percentage points counts as close enough to reach it (可以完成).",
    )
    level_gap_tolerance_rel: float = Field(
        default=0.10,
        ge=0,
        le=10,
        description="Level indicator without a 2020 value, an amount: a gap of at most this "
        "share of the target counts as close enough to reach it (可以完成).",
    )
    level_trend_points: int = Field(
        default=3,
        ge=2,
        le=100,
        description="Level indicator without a 2020 value: the trend runs through the last this "
        "many observations (at least two are needed).",
    )
    sensor_tolerance_pp: float = Field(
        default=1.0,
        ge=0,
        description="A sensor-derived rate (%) and an entered observation of the same indicator "
        "and month disagree when they differ by more than this many percentage points.",
    )
    sensor_tolerance_rel: float = Field(
        default=0.05,
        ge=0,
        description="A sensor-derived amount and an entered observation of the same indicator and "
        "month disagree when they differ by more than this share of the entered value.",
    )
    stale_rates: Literal["recompute", "provisional"] = Field(
        default="recompute",
        description="Hourly rates missing or older than the readings beneath them: recompute "
        "them before the report (default), or mark every affected figure provisional.",
    )


class LogSettings(_Group):
    """Log output."""

    format: Literal["console", "json"] = "console"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Every setting of every cityops process, typed and validated."""

    model_config = SettingsConfigDict(
        env_prefix="CITYOPS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    db: DatabaseSettings = DatabaseSettings()
    mqtt: MqttSettings = MqttSettings()
    storage: StorageSettings = StorageSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    log: LogSettings = LogSettings()
    stream: StreamSettings = StreamSettings()
    ingest: IngestSettings = IngestSettings()
    notify: NotifySettings = NotifySettings()
    alerts: AlertsSettings = AlertsSettings()
    api: ApiSettings = ApiSettings()
    report: ReportSettings = ReportSettings()
    timezone: str = Field(
        default="Asia/Shanghai", description="Local time zone used only at the edges."
    )
    environment: Literal["development", "production"] = Field(
        default="development",
        description="production refuses placeholder secrets (CHANGE_ME, as in "
        "deploy/.env.example) left in any setting.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    @pydantic.model_validator(mode="after")
    def _no_placeholders_in_production(self) -> Settings:
        if self.environment != "production":
            return self
        found = sorted(_placeholder_fields(self))
        if found:
            names = ", ".join(f"{name} ({_env_name(tuple(name.split('.')))})" for name in found)
            raise ValueError(
                f"environment is production but {names} still contain(s) the placeholder "
                f"{PLACEHOLDER}: set real values (see docs/deploy.md)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment beats the TOML file; the file beats the defaults."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


PLACEHOLDER = "CHANGE_ME"


def _placeholder_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of every string or secret setting that still holds the placeholder."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found.extend(_placeholder_fields(value, f"{prefix}{name}."))
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and PLACEHOLDER in value:
            found.append(prefix + name)
    return found


def _env_name(loc: tuple[int | str, ...]) -> str:
    return "CITYOPS_" + "_".join(str(part) for part in loc).upper()


def _read_config_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from err


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once at start-up; raise ConfigError naming every bad field.

    The config file is ``config_file`` if given, else the file named by ``CITYOPS_CONFIG``.
    """
    if config_file is None and os.environ.get(CONFIG_ENV):
        config_file = Path(os.environ[CONFIG_ENV])
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        _read_config_file(config_file)
        settings_cls = type(
            "Settings",
            (Settings,),
            {
                "model_config": SettingsConfigDict(
                    **{**Settings.model_config, "toml_file": config_file}
                )
            },
        )
    try:
        return settings_cls(**overrides)
    except pydantic.ValidationError as err:
        problems = []
        for e in err.errors():
            loc = tuple(e["loc"])
            if not loc:  # a check across fields (production placeholders) names them itself
                problems.append(str(e["msg"]).removeprefix("Value error, "))
                continue
            name = ".".join(str(p) for p in loc)
            problems.append(f"{name} ({_env_name(loc)}): {e['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from err
