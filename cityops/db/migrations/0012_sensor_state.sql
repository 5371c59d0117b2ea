-- The stream core's per-sensor anomaly detector state (stream/state.py), saved on a schedule and
-- at shutdown and restored at start, so a restart does not re-learn every sensor. One row per
-- sensor and followed field; ``model`` names the layout (a state of another layout is ignored).
-- ``slots`` packs little-endian float32 (slot, 4) rows: baseline, spread, readings learnt, share
-- of repeated values.

CREATE TABLE IF NOT EXISTS sensor_state (
    kind        text        NOT NULL,
    field       text        NOT NULL,
    device_id   text        NOT NULL,
    model       text        NOT NULL,
    saved_at    timestamptz NOT NULL,
    last_ts     bigint,
    last_val    double precision,
    n           bigint      NOT NULL,
    flat_since  bigint,
    last_slot   integer     NOT NULL,
    start_ts    bigint      NOT NULL,
    level       double precision NOT NULL,
    var         double precision NOT NULL,
    fvar        double precision NOT NULL,
    surprise    double precision NOT NULL,
    slots       bytea       NOT NULL,
    PRIMARY KEY (kind, field, device_id)
);
