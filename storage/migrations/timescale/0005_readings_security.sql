-- Grants and city scoping for readings and the continuous aggregates (TimescaleDB backend).
--
-- TimescaleDB refuses row-level security on a hypertable with compression or continuous
-- aggregates (and RLS cannot be enabled on a view), so city-scoped readers reach readings
-- through security-barrier views of the same names in schema kota_scoped, first on their
-- search_path (set by `kota db create-reader`). The base objects are readable only by
-- kota_reader_all (every city) and kota_ingest: a kota_reader without the search_path gets
-- "permission denied", never another city's rows.

GRANT SELECT, INSERT ON readings TO kota_ingest;
GRANT SELECT ON readings_hourly, readings_daily TO kota_ingest;
GRANT EXECUTE ON FUNCTION kota_ensure_partitions(timestamptz, timestamptz) TO kota_ingest;
GRANT EXECUTE ON FUNCTION kota_refresh_rollups(timestamptz) TO kota_ingest;

GRANT SELECT ON readings, readings_hourly, readings_daily TO kota_reader_all;

CREATE SCHEMA kota_scoped;
GRANT USAGE ON SCHEMA kota_scoped TO kota_reader;

CREATE VIEW kota_scoped.readings WITH (security_barrier) AS
SELECT * FROM readings
 WHERE (SELECT kota_sees_all_cities(current_user))
    OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]);

CREATE VIEW kota_scoped.readings_hourly WITH (security_barrier) AS
SELECT * FROM readings_hourly
 WHERE (SELECT kota_sees_all_cities(current_user))
    OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]);

CREATE VIEW kota_scoped.readings_daily WITH (security_barrier) AS
SELECT * FROM readings_daily
 WHERE (SELECT kota_sees_all_cities(current_user))
    OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]);

GRANT SELECT ON kota_scoped.readings, kota_scoped.readings_hourly, kota_scoped.readings_daily
    TO kota_reader;
