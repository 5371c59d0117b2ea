-- Alerts with their lifecycle, silences, and the closed-loop cases (issue 6).

CREATE TABLE IF NOT EXISTS alerts (
    id                bigserial PRIMARY KEY,
    fingerprint       text NOT NULL,
    rule              text NOT NULL,
    kind              text,
    severity          text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    labels            jsonb NOT NULL,
    summary           text NOT NULL DEFAULT '',
    state             text NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    device_id         text,
    area_code         text,
    started_at        timestamptz NOT NULL,
    fired_at          timestamptz,
    resolved_at       timestamptz,
    cancelled         boolean NOT NULL DEFAULT false,
    last_seen         timestamptz NOT NULL,
    last_value        text,
    flapping          boolean NOT NULL DEFAULT false,
    silenced_by       bigint,
    inhibited_by      text,
    acked_by          text,
    acked_at          timestamptz,
    assigned_to       text,
    case_id           bigint
);
-- One open (pending or firing) alert per fingerprint.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_fingerprint_idx
    ON alerts (fingerprint) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_state_idx ON alerts (state, severity);
CREATE INDEX IF NOT EXISTS alerts_area_idx ON alerts (area_code, started_at);
CREATE INDEX IF NOT EXISTS alerts_device_idx ON alerts (device_id, started_at);
CREATE INDEX IF NOT EXISTS alerts_started_idx ON alerts (started_at);

CREATE TABLE IF NOT EXISTS alert_events (
    id        bigserial PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL,
    event     text NOT NULL,
    actor     text NOT NULL DEFAULT 'cityops',
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alert_events_alert_idx ON alert_events (alert_id, at);

CREATE TABLE IF NOT EXISTS silences (
    id          bigserial PRIMARY KEY,
    matchers    jsonb NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  text NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    expired_at  timestamptz,
    CHECK (ends_at > starts_at)
);
CREATE INDEX IF NOT EXISTS silences_active_idx ON silences (starts_at, ends_at);

CREATE TABLE IF NOT EXISTS cases (
    id                bigserial PRIMARY KEY,
    stage             text NOT NULL DEFAULT 'detected'
                      CHECK (stage IN ('detected', 'filed', 'dispatched', 'handled', 'verified',
                                       'closed')),
    title             text NOT NULL,
    source            text NOT NULL CHECK (source IN ('alert', 'complaint', 'manual')),
    kind              text,
    category          text,
    severity          text,
    area_code         text,
    device_id         text,
    lat               double precision,
    lon               double precision,
    responsible_unit  text,
    alert_id          bigint REFERENCES alerts (id),
    detected_at       timestamptz NOT NULL,
    filed_at          timestamptz,
    dispatched_at     timestamptz,
    handled_at        timestamptz,
    verified_at       timestamptz,
    closed_at         timestamptz,
    first_complaint_at timestamptz,
    rejected          boolean NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS cases_stage_idx ON cases (stage, detected_at);
CREATE INDEX IF NOT EXISTS cases_device_idx ON cases (device_id, detected_at);
CREATE INDEX IF NOT EXISTS cases_area_idx ON cases (area_code, detected_at);

CREATE TABLE IF NOT EXISTS case_events (
    id          bigserial PRIMARY KEY,
    case_id     bigint NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    from_stage  text,
    to_stage    text NOT NULL,
    actor       text NOT NULL,
    comment     text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS case_events_case_idx ON case_events (case_id, at);

CREATE TABLE IF NOT EXISTS case_complaints (
    complaint_id  text PRIMARY KEY REFERENCES complaints (complaint_id),
    case_id       bigint NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
    linked_at     timestamptz NOT NULL DEFAULT now(),
    reason        text NOT NULL
);
CREATE INDEX IF NOT EXISTS case_complaints_case_idx ON case_complaints (case_id);
