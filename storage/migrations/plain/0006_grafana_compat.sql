-- Grafana's PostgreSQL data source is provisioned with `timescaledb: true`, so it expands
-- $__timeGroup(col, '1h') to time_bucket('3600s', col). Plain PostgreSQL has no
-- time_bucket(); this one gives the same buckets (TimescaleDB's default origin for
-- timestamptz buckets is 2000-01-03 00:00 UTC, a Monday) so the same boards work on both.
CREATE OR REPLACE FUNCTION time_bucket(bucket_width interval, ts timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $$ SELECT date_bin(bucket_width, ts, TIMESTAMPTZ '2000-01-03 00:00:00+00') $$;

GRANT EXECUTE ON FUNCTION time_bucket(interval, timestamptz) TO PUBLIC;
