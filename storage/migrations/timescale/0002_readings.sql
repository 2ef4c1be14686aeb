-- readings on TimescaleDB: a hypertable with 1-day chunks, columnstore compression and a
-- retention policy. Chosen by storage.migrate when pg_available_extensions lists timescaledb.
-- Written against the documented API (create_hypertable generalized form, v2.13+).
-- The retention period comes from the session setting kota.retention_days, which
-- storage.migrate sets from KOTA_RETENTION_DAYS (default 730; 0 = keep raw rows forever).

CREATE EXTENSION IF NOT EXISTS timescaledb;

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
);

SELECT create_hypertable('readings', by_range('observed_at', INTERVAL '1 day'));

-- Compressed batches per device, each ordered by quantity then time (newest first): queries
-- filter on device (segment) and time ranges (batch min/max), and grouping a quantity's
-- values together is what makes the float/delta compression effective.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device',
    timescaledb.compress_orderby = 'quantity, observed_at DESC'
);

SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days', if_not_exists => true);

SELECT add_retention_policy('readings', drop_after => make_interval(days => keep.days), if_not_exists => true)
  FROM (SELECT coalesce(nullif(current_setting('kota.retention_days', true), ''), '730')::integer AS days) AS keep
 WHERE keep.days > 0;

-- Same signatures as the plain backend so callers never branch: hypertables create their
-- chunks themselves, and the retention policy drops old ones.
CREATE FUNCTION kota_ensure_partitions(p_from timestamptz, p_to timestamptz)
RETURNS integer LANGUAGE sql STABLE AS $fn$ SELECT 0 $fn$;

CREATE FUNCTION kota_drop_expired_partitions(p_keep interval)
RETURNS integer LANGUAGE sql STABLE AS $fn$ SELECT 0 $fn$;
