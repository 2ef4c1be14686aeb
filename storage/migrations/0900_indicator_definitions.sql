-- Indicator catalogue in the database (owned by indicators/, numbered high so storage's own
-- migrations come first). Filled and kept in sync by every `kota indicators run` from
-- indicators/catalogue.toml; the dashboards join it on indicator and filter by focal_area.

CREATE TABLE indicator_definitions (
    indicator      text PRIMARY KEY,
    name           text NOT NULL,
    unit           text NOT NULL DEFAULT '',
    focal_area     text NOT NULL CHECK (focal_area IN (
                       'Quality Environment', 'Health and Well-being', 'Built Infrastructure',
                       'Industry and Innovation', 'Civic and Social', 'Safety and Security')),
    iso37120       text NOT NULL DEFAULT '',
    u4ssc          text NOT NULL DEFAULT '',
    method_version text NOT NULL DEFAULT '',
    direction      text NOT NULL DEFAULT 'none' CHECK (direction IN ('lower', 'higher', 'none')),
    description    text NOT NULL DEFAULT ''
);
CREATE INDEX indicator_definitions_focal_idx ON indicator_definitions (focal_area);

-- Same access pattern as indicator_values (roles from 0004_roles.sql, when present).
DO $do$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kota_reader') THEN
        GRANT SELECT ON indicator_definitions TO kota_reader;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kota_indicators') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON indicator_definitions TO kota_indicators;
    END IF;
END
$do$;
