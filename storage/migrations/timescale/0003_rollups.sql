-- Rollups on TimescaleDB: continuous aggregates with the same names and columns as the plain
-- backend's tables. Real-time aggregation is ON (materialized_only = false; the default has
-- been true since 2.13), so queries also see rows newer than the last materialisation.
-- WITH NO DATA: a cagg WITH DATA cannot be created inside a transaction block, and every
-- migration runs in one; the refresh policies fill them.

CREATE MATERIALIZED VIEW readings_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device,
       quantity,
       time_bucket(INTERVAL '1 hour', observed_at) AS bucket,
       max(city) AS city,
       max(site) AS site,
       count(*) AS n,
       avg(value) AS mean,
       min(value) AS min,
       max(value) AS max
  FROM readings
 GROUP BY device, quantity, time_bucket(INTERVAL '1 hour', observed_at)
WITH NO DATA;

CREATE MATERIALIZED VIEW readings_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT device,
       quantity,
       time_bucket(INTERVAL '1 day', observed_at) AS bucket,
       max(city) AS city,
       max(site) AS site,
       count(*) AS n,
       avg(value) AS mean,
       min(value) AS min,
       max(value) AS max
  FROM readings
 GROUP BY device, quantity, time_bucket(INTERVAL '1 day', observed_at)
WITH NO DATA;

CREATE INDEX readings_hourly_city_bucket_idx ON readings_hourly (city, bucket);
CREATE INDEX readings_daily_city_bucket_idx ON readings_daily (city, bucket);

-- Re-materialise the last 30 (hourly) / 60 (daily) days on a schedule; invalidations from
-- late data inside those windows are picked up automatically. Older backfills need
-- `kota db refresh-rollups --since DATE` (CALL refresh_continuous_aggregate).
SELECT add_continuous_aggregate_policy('readings_hourly',
    start_offset => INTERVAL '30 days',
    end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes',
    if_not_exists => true);

SELECT add_continuous_aggregate_policy('readings_daily',
    start_offset => INTERVAL '60 days',
    end_offset => INTERVAL '1 day',
    schedule_interval => INTERVAL '1 hour',
    if_not_exists => true);

-- Plain-backend API kept callable: nothing to do here, the policies refresh.
CREATE FUNCTION kota_refresh_rollups(p_since timestamptz DEFAULT NULL)
RETURNS integer LANGUAGE sql STABLE AS $fn$ SELECT 0 $fn$;
