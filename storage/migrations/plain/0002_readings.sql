-- readings on plain PostgreSQL (>= 15): declarative RANGE partitions, one per UTC day,
-- named readings_pYYYYMMDD, plus a DEFAULT partition so no reading is ever rejected.
-- Partitions are created ahead by kota_ensure_partitions() (called by `kota db migrate`,
-- `kota db ensure-partitions` and, on demand, storage.partitions.ensure_partitions()).

CREATE TABLE readings (
    device      text NOT NULL,
    quantity    text NOT NULL,
    observed_at timestamptz NOT NULL,
    city        text NOT NULL CHECK (city ~ '^[A-Z]{2}[A-Z2-9]{3}$'),
    site        text NOT NULL,
    value       double precision NOT NULL,
    raw_value   double precision,
    received_at timestamptz NOT NULL DEFAULT now(),
    flags       smallint NOT NULL DEFAULT 0 CHECK (flags >= 0),
    source      text NOT NULL DEFAULT '',
    PRIMARY KEY (device, quantity, observed_at)
) PARTITION BY RANGE (observed_at);

CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- Time-range scans (dashboards, rollups, archive): BRIN is tiny because rows arrive roughly
-- in observed_at order within a day partition.
CREATE INDEX readings_observed_brin ON readings USING brin (observed_at) WITH (pages_per_range = 32);

-- Create the missing day partitions covering [p_from, p_to] (both days included); returns how
-- many were created. Cheap when they exist: one catalog lookup per day, no lock.
-- Rows already sitting in the DEFAULT partition for a new day are moved into it.
CREATE FUNCTION kota_ensure_partitions(p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    origin  constant timestamptz := '2000-01-01 00:00:00+00';
    day     timestamptz;
    part    text;
    locked  boolean := false;
    created integer := 0;
BEGIN
    IF p_from IS NULL OR p_to IS NULL THEN
        RETURN 0;
    END IF;
    IF p_to < p_from THEN
        RAISE EXCEPTION 'kota_ensure_partitions: end % is before start %', p_to, p_from;
    END IF;
    IF p_to - p_from > interval '3700 days' THEN
        RAISE EXCEPTION 'kota_ensure_partitions: range % .. % is longer than ten years', p_from, p_to;
    END IF;
    day := date_bin('1 day', p_from, origin);
    WHILE day <= p_to LOOP
        part := 'readings_p' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD');
        IF to_regclass(quote_ident(part)) IS NULL THEN
            IF NOT locked THEN
                -- Serialise concurrent creators (ingest workers, migrate). A relation lock, not
                -- an advisory one: taking it also processes catalog invalidations, so the
                -- re-check below sees partitions another session just committed. SHARE UPDATE
                -- EXCLUSIVE does not block INSERT or SELECT on readings.
                LOCK TABLE readings IN SHARE UPDATE EXCLUSIVE MODE;
                locked := true;
            END IF;
            IF to_regclass(quote_ident(part)) IS NULL THEN
                -- Build it standalone, move any stray rows out of DEFAULT, then ATTACH: ATTACH
                -- takes only SHARE UPDATE EXCLUSIVE on readings, so inserts keep flowing.
                EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
                EXECUTE format(
                    'ALTER TABLE %I ADD CONSTRAINT %I CHECK (observed_at >= %L AND observed_at < %L)',
                    part, part || '_bound', day, day + interval '1 day');
                EXECUTE format(
                    'WITH moved AS (DELETE FROM readings_default WHERE observed_at >= $1 AND observed_at < $2 RETURNING *) '
                    'INSERT INTO %I SELECT * FROM moved', part)
                    USING day, day + interval '1 day';
                EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                               part, day, day + interval '1 day');
                -- the CHECK only served to skip ATTACH's validation scan
                EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_bound');
                created := created + 1;
            END IF;
        END IF;
        day := day + interval '1 day';
    END LOOP;
    RETURN created;
END
$fn$;

-- Drop day partitions whose whole day is older than now() - p_keep, and delete rows that old
-- from the DEFAULT partition. Rollups are kept. Returns the number of partitions dropped.
CREATE FUNCTION kota_drop_expired_partitions(p_keep interval)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
DECLARE
    cutoff  timestamptz := now() - p_keep;
    rec     record;
    dropped integer := 0;
BEGIN
    IF p_keep IS NULL OR p_keep <= interval '0' THEN
        RETURN 0;
    END IF;
    LOCK TABLE readings IN SHARE UPDATE EXCLUSIVE MODE;
    FOR rec IN
        SELECT c.relname
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'readings'::regclass
           AND c.relname ~ '^readings_p[0-9]{8}$'
           AND (to_date(substr(c.relname, 11), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC')
               + interval '1 day' <= cutoff
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE readings DETACH PARTITION %I', rec.relname);
        EXECUTE format('DROP TABLE %I', rec.relname);
        dropped := dropped + 1;
    END LOOP;
    DELETE FROM readings_default WHERE observed_at < cutoff;
    RETURN dropped;
END
$fn$;

REVOKE ALL ON FUNCTION kota_ensure_partitions(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION kota_drop_expired_partitions(interval) FROM PUBLIC;
