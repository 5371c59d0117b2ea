-- Ground truth of simulator runs: every injected fault, so alerts can be scored against it.
-- Written by `cityops simulate --truth-db`; one row per (run, fault). Not used in production.
CREATE TABLE IF NOT EXISTS sim_ground_truth (
    run_id      text NOT NULL,
    fault_id    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('streetlight', 'manhole', 'heating', 'charger')),
    fault_type  text NOT NULL,
    device_id   text,
    group_id    text,
    device_ids  text[] NOT NULL,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL CHECK (ends_at > starts_at),
    params      jsonb NOT NULL DEFAULT '{}',
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, fault_id),
    CHECK ((device_id IS NULL) <> (group_id IS NULL))
);
CREATE INDEX IF NOT EXISTS sim_ground_truth_time_idx ON sim_ground_truth (kind, starts_at);
COMMENT ON TABLE sim_ground_truth IS 'faults injected by the simulators (docs/simulators.md)';
