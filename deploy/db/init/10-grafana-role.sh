#!/bin/sh
# First start of the database container (docker-entrypoint-initdb.d): create the login role
# Grafana uses, as a member of the read-only group role cityops_readonly. The group's grants come
# from migration 0010_readonly_role.sql, which `cityops db migrate` applies afterwards; the group
# is created here too (idempotently) so the membership can be granted before migrations run.
# Re-runnable by hand against an existing server:
#   POSTGRES_USER=postgres POSTGRES_DB=cityops GRAFANA_DB_PASSWORD=... sh 10-grafana-role.sh
set -eu
: "${GRAFANA_DB_PASSWORD:?GRAFANA_DB_PASSWORD must be set (deploy/.env)}"
role="${GRAFANA_DB_USER:-grafana_reader}"
PGOPTIONS='-c client_min_messages=warning' psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    ${PGHOST:+--host "$PGHOST"} ${PGPORT:+--port "$PGPORT"} \
    -v role="$role" -v pw="$GRAFANA_DB_PASSWORD" <<'SQL'
DO $$
BEGIN
    CREATE ROLE cityops_readonly NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE cityops_readonly', :'role', :'pw')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pw') \gexec
SELECT format('GRANT cityops_readonly TO %I', :'role') \gexec
-- Dashboards only read; a runaway panel query is cut off instead of loading the server.
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'role') \gexec
SELECT format('ALTER ROLE %I SET statement_timeout = %L', :'role', '30s') \gexec
SQL
echo "role $role (member of cityops_readonly) ready"
