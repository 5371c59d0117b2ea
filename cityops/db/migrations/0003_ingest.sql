-- Ingest: device online/offline state from status messages (birth message and last will).
-- device_state holds the latest report per device or gateway; device_status_events keeps every
-- report once (keyed by device and time, so a redelivered status message adds nothing).

CREATE TABLE IF NOT EXISTS device_state (
    device_id    text PRIMARY KEY,
    kind         text NOT NULL,
    online       boolean NOT NULL,
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS device_state_online_idx ON device_state (online, kind);

CREATE TABLE IF NOT EXISTS device_status_events (
    device_id    text NOT NULL,
    ts           timestamptz NOT NULL,
    kind         text NOT NULL,
    online       boolean NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
);
