-- Kota core tables shared by both backends (plain PostgreSQL and TimescaleDB).
-- The query surface is specified in docs/contracts.md; docs/storage.md explains the choices.
-- `readings` and its rollups are created by the backend-specific 0002/0003 migrations.

CREATE TABLE cities (
    locode            text PRIMARY KEY CHECK (locode ~ '^[A-Z]{2}[A-Z2-9]{3}$'),
    name              text NOT NULL,
    country           text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    timezone          text NOT NULL,
    latitude          double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude         double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    population        bigint NOT NULL CHECK (population > 0),
    population_year   integer NOT NULL,
    population_source text NOT NULL DEFAULT '',
    joined            integer NOT NULL,
    CHECK (left(locode, 2) = country)
);

CREATE TABLE sites (
    site_id   text PRIMARY KEY CHECK (site_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    city      text NOT NULL REFERENCES cities (locode) ON UPDATE CASCADE,
    name      text NOT NULL DEFAULT '',
    latitude  double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude double precision CHECK (longitude BETWEEN -180 AND 180)
);
CREATE INDEX sites_city_idx ON sites (city);

CREATE TABLE devices (
    device_id    text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    city         text NOT NULL REFERENCES cities (locode) ON UPDATE CASCADE,
    site_id      text NOT NULL REFERENCES sites (site_id) ON UPDATE CASCADE,
    model        text NOT NULL DEFAULT '',
    driver       text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    installed_at timestamptz,
    retired_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (retired_at IS NULL OR installed_at IS NULL OR retired_at >= installed_at)
);
CREATE INDEX devices_city_idx ON devices (city);
CREATE INDEX devices_site_idx ON devices (site_id);

CREATE TABLE device_quantities (
    device_id text NOT NULL REFERENCES devices (device_id) ON UPDATE CASCADE ON DELETE CASCADE,
    quantity  text NOT NULL,
    unit      text NOT NULL,
    PRIMARY KEY (device_id, quantity)
);

CREATE TABLE calibrations (
    device_id  text NOT NULL REFERENCES devices (device_id) ON UPDATE CASCADE ON DELETE CASCADE,
    quantity   text NOT NULL,
    valid_from timestamptz NOT NULL,
    gain       double precision NOT NULL DEFAULT 1.0,
    "offset"   double precision NOT NULL DEFAULT 0.0,
    valid_to   timestamptz,
    PRIMARY KEY (device_id, quantity, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);

CREATE TABLE device_credentials (
    device_id     text PRIMARY KEY REFERENCES devices (device_id) ON UPDATE CASCADE ON DELETE CASCADE,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    topic       text,
    city        text,
    site        text,
    device      text,
    payload     bytea,
    "row"       jsonb
);
CREATE INDEX dead_letters_received_idx ON dead_letters USING brin (received_at);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, received_at);

CREATE TABLE indicator_values (
    city           text NOT NULL,
    indicator      text NOT NULL,
    period_type    text NOT NULL,
    period_start   date NOT NULL,
    period_end     date NOT NULL,
    value          double precision,
    unit           text NOT NULL DEFAULT '',
    n_obs          bigint NOT NULL DEFAULT 0 CHECK (n_obs >= 0),
    completeness   double precision CHECK (completeness BETWEEN 0 AND 1),
    baseline       double precision,
    target         double precision,
    progress_pct   double precision,
    change_pct     double precision,
    rank           integer,
    method_version text NOT NULL DEFAULT '',
    computed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (city, indicator, period_type, period_start),
    CHECK (period_end >= period_start)
);
CREATE INDEX indicator_values_indicator_idx ON indicator_values (indicator, period_type, period_start);

CREATE TABLE agent_status (
    agent_id        text PRIMARY KEY,
    city            text,
    site            text,
    last_seen       timestamptz NOT NULL DEFAULT now(),
    version         text NOT NULL DEFAULT '',
    outbox_depth    bigint NOT NULL DEFAULT 0 CHECK (outbox_depth >= 0),
    outbox_oldest_s double precision CHECK (outbox_oldest_s >= 0),
    drivers         jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- City-scoped readers: role -> city ('*' = every city). Used by the row-level security
-- policies of 0004/0005; maintained by `kota db create-reader`.
CREATE TABLE reader_cities (
    role_name name NOT NULL,
    city      text NOT NULL CHECK (city = '*' OR city ~ '^[A-Z]{2}[A-Z2-9]{3}$'),
    PRIMARY KEY (role_name, city)
);
