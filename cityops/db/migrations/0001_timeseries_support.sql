-- Support for time-series tables that work the same on both storage paths.
--
-- cityops_storage (created by the migration runner before any migration) records the path the
-- database was set up with: 'timescaledb' (hypertables, compression, retention policies) or
-- 'partitioned' (native range partitioning maintained by `cityops db maintain`).
-- The runner sets cityops.partition_days, cityops.retention_days and cityops.compress_after_days
-- for the transaction before each migration, from the settings.

CREATE TABLE IF NOT EXISTS timeseries_tables (
    table_name     text PRIMARY KEY,
    time_column    text NOT NULL,
    segment_by     text NOT NULL,
    partition_days integer NOT NULL CHECK (partition_days BETWEEN 1 AND 31),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION cityops_create_timeseries(
    p_table text, p_columns text, p_time_column text, p_segment_by text
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_path text := (SELECT path FROM cityops_storage);
    v_days integer := current_setting('cityops.partition_days')::integer;
    v_retention integer := current_setting('cityops.retention_days')::integer;
    v_compress integer := current_setting('cityops.compress_after_days')::integer;
BEGIN
    IF v_path IS NULL THEN
        RAISE EXCEPTION 'cityops_storage has no path; run migrations with `cityops db migrate`';
    END IF;
    IF to_regclass(p_table) IS NOT NULL THEN
        RETURN;  -- already there: re-running a migration is harmless
    END IF;
    IF v_path = 'timescaledb' THEN
        EXECUTE format('CREATE TABLE %I (%s)', p_table, p_columns);
        -- Called through EXECUTE so this function compiles on servers without TimescaleDB.
        EXECUTE format(
            'SELECT create_hypertable(%L::regclass, by_range(%L, %L::interval))',
            p_table, p_time_column, v_days || ' days');
        EXECUTE format(
            'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
            'timescaledb.compress_orderby = %L)',
            p_table, p_segment_by, p_time_column || ' DESC');
        EXECUTE format(
            'SELECT add_compression_policy(%L::regclass, %L::interval, if_not_exists => true)',
            p_table, v_compress || ' days');
        EXECUTE format(
            'SELECT add_retention_policy(%L::regclass, %L::interval, if_not_exists => true)',
            p_table, v_retention || ' days');
    ELSE
        EXECUTE format('CREATE TABLE %I (%s) PARTITION BY RANGE (%I)',
                       p_table, p_columns, p_time_column);
        -- The default partition catches rows outside every premade partition, so no reading is
        -- ever refused; `cityops db maintain` moves them into proper partitions.
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', p_table || '_default', p_table);
    END IF;
    INSERT INTO timeseries_tables (table_name, time_column, segment_by, partition_days)
    VALUES (p_table, p_time_column, p_segment_by, v_days)
    ON CONFLICT (table_name) DO NOTHING;
END
$fn$;
