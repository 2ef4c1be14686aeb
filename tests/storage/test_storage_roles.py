"""Roles and city-scoped row-level security, over real connections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner

from kota_cli.errors import KotaError
from kota_cli.servers import PostgresServer
from storage.arrow import read_readings
from storage.cli import group
from storage.migrate import migrate
from storage.partitions import ensure_partitions, forget_cache
from storage.roles import create_reader
from storage.rollups import refresh_rollups

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
READING = (
    "INSERT INTO readings (device, quantity, observed_at, city, site, value, raw_value, flags, source) "
    "VALUES (%s, 'pm2_5', %s, %s, %s, %s, %s, 0, 'test') ON CONFLICT DO NOTHING"
)
SCOPED_TABLES = (
    "readings",
    "readings_hourly",
    "readings_daily",
    "indicator_values",
    "devices",
    "sites",
)


def _seed(conn: psycopg.Connection) -> None:
    for city, site, device in (("THBKK", "bkk-s", "bkk-d"), ("SGSIN", "sin-s", "sin-d")):
        conn.execute("INSERT INTO sites (site_id, city, name) VALUES (%s, %s, 'x')", [site, city])
        conn.execute(
            "INSERT INTO devices (device_id, city, site_id) VALUES (%s, %s, %s)",
            [device, city, site],
        )
        for i in range(5):
            conn.execute(
                READING, [device, T0 + timedelta(minutes=10 * i), city, site, float(i), float(i)]
            )
        conn.execute(
            "INSERT INTO indicator_values (city, indicator, period_type, period_start, period_end, value) "
            "VALUES (%s, 'pm25_annual_mean', 'year', '2024-01-01', '2024-12-31', 20)",
            [city],
        )
    refresh_rollups(conn)


@pytest.fixture
def db(pg_server: PostgresServer, pg_url: str) -> str:
    forget_cache()
    migrate(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _seed(conn)
        create_reader(conn, "reader_thbkk", ["THBKK"], login=True)
    return pg_url


def _as(pg_server: PostgresServer, db: str, user: str) -> str:
    return pg_server.url(db.rsplit("/", 1)[1], user=user)


def _cities(conn: psycopg.Connection, table: str) -> set[str]:
    return {r[0] for r in conn.execute(f"SELECT DISTINCT city FROM {table}")}


def test_city_reader_sees_only_its_city(pg_server: PostgresServer, db: str) -> None:
    url = _as(pg_server, db, "reader_thbkk")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("reader_thbkk",)
        for table in SCOPED_TABLES:
            assert _cities(conn, table) == {"THBKK"}, table
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM cities").fetchone() == (
            31,
        )  # the registry is public
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM device_credentials")
    table = read_readings(url, T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert set(table.column("city").to_pylist()) == {"THBKK"} and table.num_rows == 5


def test_reader_mapping_is_fail_closed_and_all_cities_role_sees_all(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS reader_unmapped")
        conn.execute("CREATE ROLE reader_unmapped NOLOGIN IN ROLE kota_reader")
        conn.execute("SET ROLE reader_unmapped")
        for table in SCOPED_TABLES:
            assert _cities(conn, table) == set(), table
        conn.execute("RESET ROLE")
        for role in ("kota_reader_all", "kota_indicators"):
            conn.execute(f"SET ROLE {role}")
            for table in SCOPED_TABLES:
                assert _cities(conn, table) == {"THBKK", "SGSIN"}, (role, table)
            conn.execute("RESET ROLE")


def test_reader_cannot_write(pg_server: PostgresServer, db: str) -> None:
    with psycopg.connect(_as(pg_server, db, "reader_thbkk"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(READING, ["bkk-d", T0 + timedelta(hours=1), "THBKK", "bkk-s", 1.0, 1.0])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE indicator_values SET value = 0")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM readings_hourly")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET ROLE kota_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(READING, ["x", T0, "THBKK", "s", 1.0, 1.0])


def test_ingest_writes_but_cannot_update_delete_or_drop(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET ROLE kota_ingest")
        late = T0 - timedelta(days=60)
        assert ensure_partitions(conn, late, late) == 1  # SECURITY DEFINER: no DDL rights needed
        conn.execute(READING, ["bkk-d", late, "THBKK", "bkk-s", 7.0, 7.0])
        conn.execute(READING, ["bkk-d", late, "THBKK", "bkk-s", 8.0, 8.0])  # duplicate: ignored
        conn.execute(
            "INSERT INTO dead_letters (reason, detail) VALUES ('invalid_json', 'x') RETURNING id"
        )
        for _ in range(2):
            conn.execute(
                "INSERT INTO agent_status (agent_id, city, outbox_depth) VALUES ('a1', 'THBKK', 3) "
                "ON CONFLICT (agent_id) DO UPDATE SET outbox_depth = EXCLUDED.outbox_depth, last_seen = now()"
            )
        assert refresh_rollups(conn) == 2
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (11,)
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (2,)
        for statement in (
            "UPDATE readings SET value = 0",
            "DELETE FROM readings",
            "DROP TABLE readings",
            "TRUNCATE readings",
            "INSERT INTO readings_hourly SELECT * FROM readings_hourly",
            "SELECT * FROM device_credentials",
            "SELECT kota_drop_expired_partitions(interval '1 day')",
            "CREATE TABLE readings_p19990101 PARTITION OF readings FOR VALUES FROM ('1999-01-01') TO ('1999-01-02')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        conn.execute("RESET ROLE")
        assert conn.execute(
            "SELECT value FROM readings WHERE observed_at = %s", [late]
        ).fetchall() == [(7.0,)]


def test_indicators_role_writes_indicator_values(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("SET ROLE kota_indicators")
        conn.execute(
            "INSERT INTO indicator_values (city, indicator, period_type, period_start, period_end, value) "
            "VALUES ('PHMNL', 'pm25_annual_mean', 'year', '2024-01-01', '2024-12-31', 30) "
            "ON CONFLICT (city, indicator, period_type, period_start) DO UPDATE SET value = EXCLUDED.value"
        )
        conn.execute("UPDATE indicator_values SET computed_at = now() WHERE city = 'THBKK'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(READING, ["x", T0, "THBKK", "s", 1.0, 1.0])


def test_create_reader_validation_and_cli(pg_server: PostgresServer, db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(KotaError, match="not a UN/LOCODE"):
            create_reader(conn, "reader_x", ["bangkok"])
        with pytest.raises(KotaError, match="unknown cities XXABC"):
            create_reader(conn, "reader_x", ["XXABC"])
        with pytest.raises(KotaError, match="at least one"):
            create_reader(conn, "reader_x", [])
        with pytest.raises(KotaError, match="role name"):
            create_reader(conn, "kota_reader", ["THBKK"])
        # re-running replaces the mapping
        assert create_reader(conn, "reader_thbkk", ["THBKK", "SGSIN"], login=True) == [
            "SGSIN",
            "THBKK",
        ]
    with psycopg.connect(_as(pg_server, db, "reader_thbkk")) as conn:
        assert _cities(conn, "readings") == {"THBKK", "SGSIN"}
    result = CliRunner().invoke(
        group, ["create-reader", "reader_thbkk", "--city", "THBKK", "--login", "--database-url", db]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "reader_thbkk: reads THBKK"
    with psycopg.connect(_as(pg_server, db, "reader_thbkk")) as conn:
        assert _cities(conn, "readings_daily") == {"THBKK"}
