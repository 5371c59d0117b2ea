-- A counter of registry changes, so the processes that hold the registry in memory (ingest's
-- registry copy, the stream core's device indexes, the alert engine's directory) re-read it only
-- when it changed: each re-read of a city's million devices costs seconds of a core, and each of
-- the three did it every minute. Any statement that writes ``devices`` or ``areas`` adds one,
-- visible with its transaction's commit (a reader that sees the new number sees the change).
CREATE TABLE IF NOT EXISTS registry_version (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version     bigint NOT NULL DEFAULT 0,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO registry_version DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION registry_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_version SET version = version + 1, changed_at = now();
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS devices_registry_version ON devices;
CREATE TRIGGER devices_registry_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION registry_version_bump();

DROP TRIGGER IF EXISTS areas_registry_version ON areas;
CREATE TRIGGER areas_registry_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON areas
    FOR EACH STATEMENT EXECUTE FUNCTION registry_version_bump();
