-- Progress of ingest's in-process consumers (issue 16): the stream core and the alert engine
-- write one row each per ingest worker after every successful flush or commit, so the API's
-- /readyz (a separate process) sees when live rates or alerts stop being stored, and a restarted
-- stream core knows from which hour to restore its hours in progress (stream/live.py).
-- ``lag_s``: seconds of committed batches not yet stored when the row was written (0: current).
-- ``resume_from``: stream only, the first hour a restart re-reads from the stored readings.
-- ``stopped_at``: set by a graceful stop (a stopped consumer is not "stale").
CREATE TABLE IF NOT EXISTS consumer_heartbeat (
    consumer     text PRIMARY KEY,
    beat_at      timestamptz NOT NULL,
    lag_s        double precision NOT NULL DEFAULT 0,
    resume_from  timestamptz,
    stopped_at   timestamptz
);
