-- Notifications: one row per notification per receiver, updated on every delivery attempt.
-- A notification carries a whole alert group (a cabinet outage is one row with 300 alerts), so
-- the alerts it covers are arrays. status: pending (queued or waiting for a retry), sent, failed
-- (the last attempt failed and another is scheduled at next_attempt_at), given_up.

CREATE TABLE IF NOT EXISTS notifications (
    id               bigserial PRIMARY KEY,
    notification_id  uuid NOT NULL,
    route            text NOT NULL,
    group_key        text NOT NULL,
    receiver         text NOT NULL,
    receiver_type    text NOT NULL,
    purpose          text NOT NULL
        CHECK (purpose IN ('firing', 'resolved', 'reminder', 'escalation')),
    level            integer NOT NULL DEFAULT 0,
    alert_ids        bigint[] NOT NULL,
    fingerprints     text[] NOT NULL,
    alert_count      integer NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'given_up')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_error       text,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    last_attempt_at  timestamptz,
    sent_at          timestamptz,
    UNIQUE (notification_id, receiver)
);
CREATE INDEX IF NOT EXISTS notifications_created_idx ON notifications (created_at);
CREATE INDEX IF NOT EXISTS notifications_open_idx ON notifications (status, next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS notifications_fingerprints_idx ON notifications USING gin (fingerprints);
