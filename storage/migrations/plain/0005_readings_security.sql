-- Grants and row-level security on readings and the rollup tables (plain backend).
-- Rollups are written only by the SECURITY DEFINER kota_refresh_rollups().

GRANT SELECT, INSERT ON readings TO kota_ingest;
GRANT SELECT ON readings_hourly, readings_daily TO kota_ingest;
GRANT EXECUTE ON FUNCTION kota_ensure_partitions(timestamptz, timestamptz) TO kota_ingest;
GRANT EXECUTE ON FUNCTION kota_refresh_rollups(timestamptz) TO kota_ingest;

GRANT SELECT ON readings, readings_hourly, readings_daily TO kota_reader;

ALTER TABLE readings ENABLE ROW LEVEL SECURITY;
ALTER TABLE readings_hourly ENABLE ROW LEVEL SECURITY;
ALTER TABLE readings_daily ENABLE ROW LEVEL SECURITY;

CREATE POLICY kota_reader_city ON readings FOR SELECT TO kota_reader
    USING ((SELECT kota_sees_all_cities(current_user)) OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]));
CREATE POLICY kota_reader_city ON readings_hourly FOR SELECT TO kota_reader
    USING ((SELECT kota_sees_all_cities(current_user)) OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]));
CREATE POLICY kota_reader_city ON readings_daily FOR SELECT TO kota_reader
    USING ((SELECT kota_sees_all_cities(current_user)) OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]));

CREATE POLICY kota_ingest_all ON readings FOR ALL TO kota_ingest USING (true) WITH CHECK (true);
CREATE POLICY kota_ingest_all ON readings_hourly FOR SELECT TO kota_ingest USING (true);
CREATE POLICY kota_ingest_all ON readings_daily FOR SELECT TO kota_ingest USING (true);
