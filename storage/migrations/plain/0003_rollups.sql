-- Rollups on plain PostgreSQL: readings_hourly / readings_daily are TABLES with the same
-- names and columns as the TimescaleDB continuous aggregates, kept current incrementally.
--
-- Change capture: statement-level AFTER triggers with transition tables on `readings` append
-- the (device, quantity, hour) keys that each INSERT/UPDATE/DELETE statement really changed
-- to kota_rollup_dirty, in the writer's own transaction. The log is append-only (no unique
-- key) so concurrent writers never wait on each other. kota_refresh_rollups() consumes the
-- committed keys and recomputes exactly those hours from `readings`, then the days they
-- belong to from `readings_hourly`. Late and out-of-order readings therefore roll up
-- correctly whatever their received_at, and no writer cooperation is needed.

CREATE TABLE readings_hourly (
    device   text NOT NULL,
    quantity text NOT NULL,
    bucket   timestamptz NOT NULL,
    city     text NOT NULL,
    site     text NOT NULL,
    n        bigint NOT NULL,
    mean     double precision,
    min      double precision,
    max      double precision,
    PRIMARY KEY (device, quantity, bucket)
);
CREATE INDEX readings_hourly_city_bucket_idx ON readings_hourly (city, bucket);
CREATE INDEX readings_hourly_bucket_brin ON readings_hourly USING brin (bucket);

CREATE TABLE readings_daily (
    device   text NOT NULL,
    quantity text NOT NULL,
    bucket   timestamptz NOT NULL,
    city     text NOT NULL,
    site     text NOT NULL,
    n        bigint NOT NULL,
    mean     double precision,
    min      double precision,
    max      double precision,
    PRIMARY KEY (device, quantity, bucket)
);
CREATE INDEX readings_daily_city_bucket_idx ON readings_daily (city, bucket);

CREATE TABLE kota_rollup_dirty (
    device   text NOT NULL,
    quantity text NOT NULL,
    bucket   timestamptz NOT NULL,   -- UTC hour start
    noted_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION kota_readings_mark_dirty()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO kota_rollup_dirty (device, quantity, bucket)
        SELECT DISTINCT device, quantity, date_trunc('hour', observed_at, 'UTC') FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO kota_rollup_dirty (device, quantity, bucket)
        SELECT device, quantity, date_trunc('hour', observed_at, 'UTC') FROM new_rows
        UNION
        SELECT device, quantity, date_trunc('hour', observed_at, 'UTC') FROM old_rows;
    ELSE
        INSERT INTO kota_rollup_dirty (device, quantity, bucket)
        SELECT DISTINCT device, quantity, date_trunc('hour', observed_at, 'UTC') FROM old_rows;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER readings_rollup_insert AFTER INSERT ON readings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kota_readings_mark_dirty();
CREATE TRIGGER readings_rollup_update AFTER UPDATE ON readings
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kota_readings_mark_dirty();
CREATE TRIGGER readings_rollup_delete AFTER DELETE ON readings
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kota_readings_mark_dirty();

-- Recompute the hours (and their days) touched since the last refresh; with p_since, also
-- every hour from p_since on (a rebuild, e.g. after a bulk load with triggers disabled).
-- Returns the number of hourly + daily buckets recomputed. Concurrent calls are serialised.
CREATE FUNCTION kota_refresh_rollups(p_since timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    n_hours integer;
    n_days  integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('kota_refresh_rollups'));
    CREATE TEMP TABLE IF NOT EXISTS kota_tmp_hours
        (device text, quantity text, bucket timestamptz) ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS kota_tmp_days
        (device text, quantity text, bucket timestamptz) ON COMMIT DROP;
    TRUNCATE kota_tmp_hours, kota_tmp_days;

    -- Only committed marks are visible (and deleted); a writer committing meanwhile leaves
    -- its marks for the next refresh.
    WITH taken AS (DELETE FROM kota_rollup_dirty RETURNING device, quantity, bucket)
    INSERT INTO kota_tmp_hours SELECT DISTINCT device, quantity, bucket FROM taken;

    IF p_since IS NOT NULL THEN
        INSERT INTO kota_tmp_hours
        SELECT DISTINCT device, quantity, date_trunc('hour', observed_at, 'UTC')
          FROM readings WHERE observed_at >= date_trunc('hour', p_since, 'UTC')
        UNION
        SELECT device, quantity, bucket
          FROM readings_hourly WHERE bucket >= date_trunc('hour', p_since, 'UTC');
        -- de-duplicate against the marks taken above
        CREATE TEMP TABLE IF NOT EXISTS kota_tmp_dedup
            (device text, quantity text, bucket timestamptz) ON COMMIT DROP;
        TRUNCATE kota_tmp_dedup;
        INSERT INTO kota_tmp_dedup SELECT DISTINCT * FROM kota_tmp_hours;
        TRUNCATE kota_tmp_hours;
        INSERT INTO kota_tmp_hours SELECT * FROM kota_tmp_dedup;
    END IF;
    ANALYZE kota_tmp_hours;

    DELETE FROM readings_hourly h
     USING kota_tmp_hours t
     WHERE h.device = t.device AND h.quantity = t.quantity AND h.bucket = t.bucket;

    INSERT INTO readings_hourly (device, quantity, bucket, city, site, n, mean, min, max)
    SELECT t.device, t.quantity, t.bucket, max(r.city), max(r.site),
           count(*), avg(r.value), min(r.value), max(r.value)
      FROM kota_tmp_hours t
      JOIN readings r
        ON r.device = t.device AND r.quantity = t.quantity
       AND r.observed_at >= t.bucket AND r.observed_at < t.bucket + interval '1 hour'
     GROUP BY t.device, t.quantity, t.bucket;

    SELECT count(*) INTO n_hours FROM kota_tmp_hours;

    INSERT INTO kota_tmp_days
    SELECT DISTINCT device, quantity, date_trunc('day', bucket, 'UTC') FROM kota_tmp_hours;
    ANALYZE kota_tmp_days;

    DELETE FROM readings_daily d
     USING kota_tmp_days t
     WHERE d.device = t.device AND d.quantity = t.quantity AND d.bucket = t.bucket;

    -- a day from its hours: exact n/min/max, mean weighted by n
    INSERT INTO readings_daily (device, quantity, bucket, city, site, n, mean, min, max)
    SELECT t.device, t.quantity, t.bucket, max(h.city), max(h.site),
           sum(h.n), sum(h.mean * h.n) / sum(h.n), min(h.min), max(h.max)
      FROM kota_tmp_days t
      JOIN readings_hourly h
        ON h.device = t.device AND h.quantity = t.quantity
       AND h.bucket >= t.bucket AND h.bucket < t.bucket + interval '1 day'
     GROUP BY t.device, t.quantity, t.bucket;

    SELECT count(*) INTO n_days FROM kota_tmp_days;
    RETURN n_hours + n_days;
END
$fn$;

REVOKE ALL ON FUNCTION kota_refresh_rollups(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION kota_readings_mark_dirty() FROM PUBLIC;
