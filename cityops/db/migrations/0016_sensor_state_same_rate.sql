-- The anomaly detector's per-sensor repeat rate (stream/state.py, model v5): for a sensor with
-- daily seasonality (a room) how often a reading repeats the last value is learnt per sensor
-- rather than per hour of the day (a slot sees too few readings to learn it). Saved states of the
-- older layout (model v4) are not restored; their rows are left to be overwritten.

ALTER TABLE sensor_state ADD COLUMN IF NOT EXISTS same_rate double precision NOT NULL DEFAULT 0.5;
