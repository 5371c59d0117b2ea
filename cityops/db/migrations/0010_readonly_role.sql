-- A read-only group role for dashboards (Grafana) and ad-hoc analysis: SELECT on the cityops
-- tables, nothing else. It is NOLOGIN: operators create a login role that is a member of it
-- (deploy/db/init/10-grafana-role.sh does this for the compose stack; docs/deploy.md shows the
-- statements for other servers), so a Grafana password can be rotated without touching this.
--
-- Roles are cluster-wide while migrations run per database, and several databases (test
-- databases, or staging next to production) may migrate at the same moment: CREATE ROLE runs in
-- a block that treats "already exists" -- and the unique violation a concurrent CREATE ROLE
-- raises instead -- as success. Grants are per database and idempotent.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cityops_readonly') THEN
        CREATE ROLE cityops_readonly NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN
        NULL;  -- created by a concurrent migration of another database
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cityops_readonly', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO cityops_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO cityops_readonly;
-- Tables and partitions the migrating role creates later (new migrations, maintenance) too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO cityops_readonly;

-- Secrets stay out of dashboards: no panel needs the API key hashes.
DO $$
BEGIN
    IF to_regclass('public.api_keys') IS NOT NULL THEN
        REVOKE ALL ON api_keys FROM cityops_readonly;
    END IF;
END
$$;
