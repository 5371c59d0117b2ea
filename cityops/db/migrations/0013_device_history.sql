-- Registry history (issue 14): when a device was installed, commissioned and decommissioned, and
-- when it moved between areas, so a report or rate for a past month counts the devices that
-- existed then (cityops/registry.py, docs/indicators.md "Reports as of their period").
CREATE TABLE IF NOT EXISTS device_events (
    id           bigserial PRIMARY KEY,
    device_id    text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    event        text NOT NULL
                 CHECK (event IN ('install', 'commission', 'decommission', 'move')),
    on_date      date NOT NULL,
    from_area    text REFERENCES areas (code),
    to_area      text REFERENCES areas (code),
    note         text NOT NULL DEFAULT '',
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (event <> 'move' OR (from_area IS NOT NULL AND to_area IS NOT NULL)),
    UNIQUE (device_id, event, on_date)
);
CREATE INDEX IF NOT EXISTS device_events_device_idx ON device_events (device_id, on_date);
