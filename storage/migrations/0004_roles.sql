-- Roles, grants and city-scoped row-level security on the plain tables (both backends).
-- Group roles are NOLOGIN and cluster-wide; ops grant them to login users (docs/storage.md).
--   kota_ingest      writes readings, dead letters, agent status; reads the registry
--   kota_reader      reads the query surface; rows limited to its cities (reader_cities)
--   kota_reader_all  a kota_reader that sees every city (mapped to '*')
--   kota_indicators  a kota_reader_all that also writes indicator_values
-- The owner (the role running `kota db migrate`) owns every object and bypasses RLS.

DO $do$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['kota_ingest', 'kota_reader', 'kota_reader_all', 'kota_indicators'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created concurrently by a migration of another database
            END;
        END IF;
    END LOOP;
END
$do$;

GRANT kota_reader TO kota_reader_all;
GRANT kota_reader_all TO kota_indicators;

INSERT INTO reader_cities (role_name, city) VALUES ('kota_reader_all', '*')
ON CONFLICT DO NOTHING;

-- Does p_role (the querying role) see every city / which cities? SECURITY DEFINER so readers
-- need no access to reader_cities; membership is inherited through role grants.
CREATE FUNCTION kota_sees_all_cities(p_role name)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
    SELECT EXISTS (
        SELECT 1 FROM reader_cities rc JOIN pg_roles r ON r.rolname = rc.role_name
         WHERE rc.city = '*' AND pg_has_role(p_role, r.oid, 'USAGE'))
$fn$;

CREATE FUNCTION kota_visible_cities(p_role name)
RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path FROM CURRENT
AS $fn$
    SELECT coalesce(array_agg(DISTINCT rc.city), '{}')
      FROM reader_cities rc JOIN pg_roles r ON r.rolname = rc.role_name
     WHERE rc.city <> '*' AND pg_has_role(p_role, r.oid, 'USAGE')
$fn$;

GRANT USAGE ON SCHEMA public TO kota_ingest, kota_reader;

-- ingest: registry reads, append-only writes
GRANT SELECT ON cities, sites, devices, device_quantities, calibrations TO kota_ingest;
GRANT SELECT, INSERT ON dead_letters TO kota_ingest;
GRANT USAGE ON SEQUENCE dead_letters_id_seq TO kota_ingest;
GRANT SELECT, INSERT, UPDATE ON agent_status TO kota_ingest;

-- readers: the query surface (readings and rollups are granted per backend in 0005)
GRANT SELECT ON cities, sites, devices, device_quantities, calibrations, indicator_values
    TO kota_reader;
GRANT SELECT ON dead_letters, agent_status TO kota_reader_all;
GRANT SELECT, INSERT, UPDATE, DELETE ON indicator_values TO kota_indicators;

-- row-level security on the plain city tables
ALTER TABLE sites ENABLE ROW LEVEL SECURITY;
ALTER TABLE devices ENABLE ROW LEVEL SECURITY;
ALTER TABLE indicator_values ENABLE ROW LEVEL SECURITY;

CREATE POLICY kota_reader_city ON sites FOR SELECT TO kota_reader
    USING ((SELECT kota_sees_all_cities(current_user)) OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]));
CREATE POLICY kota_reader_city ON devices FOR SELECT TO kota_reader
    USING ((SELECT kota_sees_all_cities(current_user)) OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]));
CREATE POLICY kota_reader_city ON indicator_values FOR SELECT TO kota_reader
    USING ((SELECT kota_sees_all_cities(current_user)) OR city = ANY ((SELECT kota_visible_cities(current_user))::text[]));

CREATE POLICY kota_ingest_all ON sites FOR SELECT TO kota_ingest USING (true);
CREATE POLICY kota_ingest_all ON devices FOR SELECT TO kota_ingest USING (true);
CREATE POLICY kota_indicators_all ON indicator_values FOR ALL TO kota_indicators
    USING (true) WITH CHECK (true);
