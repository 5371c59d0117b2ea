-- Plan indicators (issue 8): local indicators and targets, dated observations, forecasts, and a
-- record of generated reports. The shipped catalog itself lives in reports/data/indicators.csv;
-- these tables hold what a deployment adds to it.

-- A local indicator, or a local replacement of a shipped one (same key). Columns mirror the
-- catalog file so the catalog version hash covers them.
CREATE TABLE IF NOT EXISTS indicator_local (
    key              text PRIMARY KEY,
    plan             text NOT NULL DEFAULT 'local',
    no               integer NOT NULL DEFAULT 0,
    name_zh          text NOT NULL DEFAULT '',
    name_en          text NOT NULL DEFAULT '',
    category         text NOT NULL DEFAULT '',
    unit             text NOT NULL DEFAULT '',
    direction        text NOT NULL CHECK (direction IN ('up', 'down')),
    kind             text NOT NULL CHECK (kind IN ('level', 'cumulative', 'relative_change',
                                                   'dynamic', 'qualitative', 'cap')),
    baseline_2020    double precision,
    baseline_note    text NOT NULL DEFAULT '',
    target_2025      double precision,
    target_change    double precision,
    target_text      text NOT NULL DEFAULT '',
    attribute        text NOT NULL DEFAULT 'unspecified'
                     CHECK (attribute IN ('binding', 'expected', 'unspecified')),
    sensor_metric    text,
    scope            text NOT NULL DEFAULT 'district',
    reference_value  double precision,
    reference_date   date,
    created_by       text NOT NULL DEFAULT 'cityops',
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Dated values of indicators no sensor measures (and of sensor ones, when an authority reports
-- them). ``status`` is set when the value comes from another authority with its own judgement.
CREATE TABLE IF NOT EXISTS indicator_observations (
    id           bigserial PRIMARY KEY,
    indicator    text NOT NULL,
    scope        text NOT NULL DEFAULT 'district',
    observed_on  date NOT NULL,
    value        double precision,
    status       text CHECK (status IN ('achieved_early', 'on_track', 'adjust', 'no_target',
                                        'pending')),
    source       text NOT NULL CHECK (source <> ''),
    note         text NOT NULL DEFAULT '',
    entered_by   text NOT NULL DEFAULT 'cityops',
    entered_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (value IS NOT NULL OR status IS NOT NULL),
    UNIQUE (indicator, scope, observed_on, source)
);
CREATE INDEX IF NOT EXISTS indicator_observations_ind_idx
    ON indicator_observations (indicator, observed_on);

-- A user's forecast of the end-of-plan value, always with a reason.
CREATE TABLE IF NOT EXISTS indicator_forecasts (
    id               bigserial PRIMARY KEY,
    indicator        text NOT NULL,
    made_on          date NOT NULL,
    value            double precision NOT NULL,
    proposed_target  double precision,
    reason           text NOT NULL CHECK (btrim(reason) <> ''),
    entered_by       text NOT NULL DEFAULT 'cityops',
    entered_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (indicator, made_on)
);

-- Every generated monthly report: inputs, catalog version and the hash of its JSON content.
CREATE TABLE IF NOT EXISTS report_runs (
    id               bigserial PRIMARY KEY,
    month            date NOT NULL,
    area_code        text,
    catalog_version  text NOT NULL,
    content_sha256   text NOT NULL,
    formats          text[] NOT NULL,
    generated_at     timestamptz NOT NULL DEFAULT now(),
    generated_by     text NOT NULL DEFAULT 'cityops'
);
CREATE INDEX IF NOT EXISTS report_runs_month_idx ON report_runs (month, area_code);
