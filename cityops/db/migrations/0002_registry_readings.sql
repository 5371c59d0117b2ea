-- Registry (areas, devices), one typed readings table per kind, complaints, dead letters and the
-- hourly rate numerators/denominators. Column names and types of the readings tables mirror the
-- device catalog (cityops/catalog.py); tests/integration/test_schema.py keeps them in step.

CREATE TABLE IF NOT EXISTS areas (
    code            text PRIMARY KEY,
    name_zh         text NOT NULL,
    name_en         text,
    type            text NOT NULL CHECK (type IN ('street', 'area', 'township')),
    district        text NOT NULL,
    lon             double precision,
    lat             double precision,
    land_area_km2   double precision,
    population      integer,
    heated_area_m2  double precision,
    generated       text[] NOT NULL DEFAULT '{}',
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN areas.generated IS 'attributes that are generated, not surveyed';

CREATE TABLE IF NOT EXISTS devices (
    device_id     text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('streetlight', 'manhole', 'heating', 'charger')),
    area_code     text NOT NULL REFERENCES areas (code),
    lat           double precision,
    lon           double precision,
    gateway_id    text,
    install_date  date,
    status        text NOT NULL DEFAULT 'in_service'
                  CHECK (status IN ('in_service', 'maintenance', 'retired')),
    attributes    jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS devices_kind_area_idx ON devices (kind, area_code);
CREATE INDEX IF NOT EXISTS devices_area_idx ON devices (area_code);
CREATE INDEX IF NOT EXISTS devices_gateway_idx ON devices (gateway_id) WHERE gateway_id IS NOT NULL;

SELECT cityops_create_timeseries('streetlight_readings', $cols$
    device_id          text NOT NULL,
    ts                 timestamptz NOT NULL,
    power_state        text,
    illuminance_level  double precision,
    power_w            double precision,
    voltage_v          double precision,
    current_a          double precision,
    energy_kwh         double precision,
    fault              text,
    received_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
$cols$, 'ts', 'device_id');

SELECT cityops_create_timeseries('manhole_readings', $cols$
    device_id        text NOT NULL,
    ts               timestamptz NOT NULL,
    tilt_deg         double precision,
    cover_open       boolean,
    displacement_mm  double precision,
    water_level_cm   double precision,
    overflow         boolean,
    battery_pct      double precision,
    signal_dbm       double precision,
    event            text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
$cols$, 'ts', 'device_id');

SELECT cityops_create_timeseries('heating_readings', $cols$
    device_id      text NOT NULL,
    ts             timestamptz NOT NULL,
    temperature_c  double precision,
    humidity_pct   double precision,
    battery_pct    double precision,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
$cols$, 'ts', 'device_id');

SELECT cityops_create_timeseries('charger_readings', $cols$
    device_id    text NOT NULL,
    ts           timestamptz NOT NULL,
    status       text,
    error_code   text,
    power_kw     double precision,
    energy_kwh   double precision,
    session_id   text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
$cols$, 'ts', 'device_id');

CREATE TABLE IF NOT EXISTS complaints (
    complaint_id  text PRIMARY KEY,
    received_at   timestamptz NOT NULL,
    category      text NOT NULL
                  CHECK (category IN ('heating', 'streetlight', 'manhole', 'charging', 'other')),
    area_code     text REFERENCES areas (code),
    address       text,
    lat           double precision,
    lon           double precision,
    device_id     text,
    text          text,
    status        text NOT NULL DEFAULT 'received',
    source        text,
    stored_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS complaints_received_idx ON complaints (received_at);
CREATE INDEX IF NOT EXISTS complaints_area_cat_idx ON complaints (area_code, category, received_at);

CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL,
    detail       text,
    replayed_at  timestamptz,
    replay_result text
);
CREATE INDEX IF NOT EXISTS dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX IF NOT EXISTS dead_letters_reason_idx ON dead_letters (reason, received_at);

CREATE TABLE IF NOT EXISTS rates_hourly (
    area_code    text NOT NULL,
    kind         text NOT NULL,
    metric       text NOT NULL,
    hour         timestamptz NOT NULL CHECK (extract(epoch FROM hour) % 3600 = 0),
    numerator    double precision NOT NULL,
    denominator  double precision NOT NULL,
    samples      bigint NOT NULL DEFAULT 0,
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (area_code, kind, metric, hour)
);
CREATE INDEX IF NOT EXISTS rates_hourly_metric_hour_idx ON rates_hourly (kind, metric, hour);
