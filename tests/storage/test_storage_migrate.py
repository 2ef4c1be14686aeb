"""Migrations: idempotent, checksummed, serialised; backend selection; status; CLI errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from kota_cli.errors import KotaError
from kota_cli.servers import free_port
from storage.cli import group
from storage.migrate import (
    MIGRATIONS_DIR,
    choose_backend,
    discover,
    migrate,
    timescale_available,
)
from storage.status import format_status, status

# docs/contracts.md: every table and its columns (key columns first).
CONTRACT = {
    "cities": "locode name country timezone latitude longitude population population_year population_source joined",
    "sites": "site_id city name latitude longitude",
    "devices": "device_id city site_id model driver status installed_at retired_at created_at",
    "device_quantities": "device_id quantity unit",
    "calibrations": "device_id quantity valid_from gain offset valid_to",
    "device_credentials": "device_id username password_hash created_at",
    "readings": "device quantity observed_at city site value raw_value received_at flags source",
    "dead_letters": "id received_at reason detail topic city site device payload row",
    "readings_hourly": "device quantity bucket city site n mean min max",
    "readings_daily": "device quantity bucket city site n mean min max",
    "indicator_values": "city indicator period_type period_start period_end value unit n_obs "
    "completeness baseline target progress_pct change_pct rank method_version computed_at",
    "agent_status": "agent_id city site last_seen version outbox_depth outbox_oldest_s drivers",
}

# storage's own migrations; other components may add shared files numbered 0900+.
STORAGE_PLAIN = [
    "0001_core.sql",
    "plain/0002_readings.sql",
    "plain/0003_rollups.sql",
    "0004_roles.sql",
    "plain/0005_readings_security.sql",
]
PLAIN_PLAN = [m.label for m in discover("plain")]


def test_migrate_twice_is_idempotent_and_creates_the_contract(pg_url: str) -> None:
    assert PLAIN_PLAN[: len(STORAGE_PLAIN)] == STORAGE_PLAIN
    assert migrate(pg_url) == PLAIN_PLAN
    assert migrate(pg_url) == []
    with psycopg.connect(pg_url) as conn:
        for table, columns in CONTRACT.items():
            found = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                    [table],
                )
            ]
            assert found == columns.split(), table
        rows = conn.execute(
            "SELECT version, branch, backend FROM schema_migrations ORDER BY 1"
        ).fetchall()
        assert [r[0] for r in rows] == [m.version for m in discover("plain")]
        assert {r[2] for r in rows} == {"plain"}
        assert conn.execute("SELECT count(*) FROM cities").fetchone() == (31,)
        # readings is partitioned by day with a DEFAULT partition
        assert conn.execute(
            "SELECT relkind FROM pg_class WHERE relname = 'readings'"
        ).fetchone() == ("p",)


def test_contract_checks(pg_url: str) -> None:
    migrate(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (site_id, city, name) VALUES ('s1', 'THBKK', 'x')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO devices (device_id, city, site_id, status) VALUES ('d1', 'THBKK', 's1', 'broken')"
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO devices (device_id, city, site_id) VALUES ('d1', 'XXXXX', 's1')"
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO readings (device, quantity, observed_at, city, site, value, flags) "
                "VALUES ('d1', 'pm2_5', now(), 'THBKK', 's1', 1, -1)"
            )


def test_city_registry_edits_flow_in(pg_url: str) -> None:
    migrate(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE cities SET name = 'stale', population = 1 WHERE locode = 'THBKK'")
        migrate(pg_url)
        assert conn.execute("SELECT name FROM cities WHERE locode = 'THBKK'").fetchone() == (
            "Bangkok",
        )


def test_modified_applied_migration_is_detected(pg_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(pg_url, migrations_dir=copy)
    core = copy / "0001_core.sql"
    core.write_text(core.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(
        KotaError, match=r"migration 0001_core\.sql was changed after it was applied"
    ):
        migrate(pg_url, migrations_dir=copy)
    branch = copy / "plain" / "0003_rollups.sql"
    core.write_text((MIGRATIONS_DIR / "0001_core.sql").read_text())
    branch.write_text(
        branch.read_text().replace("ANALYZE kota_tmp_days;", "ANALYZE kota_tmp_days; ")
    )
    with pytest.raises(KotaError, match=r"plain/0003_rollups\.sql was changed"):
        migrate(pg_url, migrations_dir=copy)


def test_new_migration_applies_and_unknown_applied_is_refused(pg_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(pg_url, migrations_dir=copy)
    (copy / "0999_extra.sql").write_text("CREATE TABLE kota_extra (x int);\n")
    assert migrate(pg_url, migrations_dir=copy) == ["0999_extra.sql"]
    with pytest.raises(KotaError, match="newer version"):
        migrate(pg_url)


def test_failed_migration_rolls_back_and_names_the_file(pg_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    migrate(pg_url, migrations_dir=copy)
    (copy / "0998_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT no_such_function();\n"
    )
    with pytest.raises(
        KotaError, match=r"migration 0998_broken\.sql failed: function no_such_function"
    ):
        migrate(pg_url, migrations_dir=copy)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (
            max(m.version for m in discover("plain")),
        )


def test_concurrent_migrations_are_serialised(pg_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(pg_url))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, len(PLAIN_PLAN)]


def test_backend_selection() -> None:
    assert choose_backend(None, True, None) == "timescale"
    assert choose_backend(None, False, None) == "plain"
    assert choose_backend(None, True, "plain") == "plain"
    assert choose_backend(None, True, "auto") == "timescale"
    assert choose_backend("plain", True, None) == "plain"  # recorded branch wins
    assert choose_backend("timescale", False, "auto") == "timescale"
    with pytest.raises(KotaError, match="no timescaledb extension"):
        choose_backend(None, False, "timescale")
    with pytest.raises(KotaError, match="migrated for the plain backend"):
        choose_backend("plain", True, "timescale")
    with pytest.raises(KotaError, match="KOTA_DB_BACKEND"):
        choose_backend(None, True, "citus")


def test_timescale_plan_is_selected_when_available(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        available = timescale_available(conn)  # the embedded server has no timescaledb
    assert available is False
    plan = discover(choose_backend(None, True, None))
    assert [m.label for m in plan][:5] == [
        "0001_core.sql",
        "timescale/0002_readings.sql",
        "timescale/0003_rollups.sql",
        "0004_roles.sql",
        "timescale/0005_readings_security.sql",
    ]
    assert [m.version for m in plan] == [m.version for m in discover("plain")]
    text = "\n".join(m.sql for m in plan)
    for documented in (
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        "create_hypertable('readings', by_range('observed_at', INTERVAL '1 day'))",
        "timescaledb.compress_segmentby = 'device'",
        "add_compression_policy('readings'",
        "add_retention_policy('readings'",
        "timescaledb.continuous, timescaledb.materialized_only = false",
        "add_continuous_aggregate_policy('readings_hourly'",
        "add_continuous_aggregate_policy('readings_daily'",
    ):
        assert documented in text


def _syntax_check(conn: psycopg.Connection, sql_text: str) -> None:
    """Run PostgreSQL's own parser over every statement without executing any.

    PL/pgSQL compiles a DO block completely (raw-parsing each embedded SQL statement with
    the server's grammar, check_function_bodies = on) before running it, and RETURN ends it
    before the first statement. Names are not resolved: this checks syntax only.
    """
    assert "$kota_syntax$" not in sql_text
    conn.execute(f"DO $kota_syntax$ BEGIN RETURN;\n{sql_text}\nEND $kota_syntax$".encode())


def test_every_migration_parses_with_the_postgresql_grammar(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for backend in ("timescale", "plain"):
            for migration in discover(backend):
                _syntax_check(conn, migration.sql)
        # negative controls: the check does catch syntax errors in timescale-style statements
        with pytest.raises(psycopg.errors.SyntaxError):
            _syntax_check(conn, "ALTER TABLE readings SET (timescaledb.compress,, x);")
        with pytest.raises(psycopg.errors.SyntaxError):
            _syntax_check(
                conn, "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous AS SELECT 1;"
            )
        # and executes nothing
        assert conn.execute("SELECT to_regclass('readings')").fetchone() == (None,)


def test_status_before_and_after(pg_url: str) -> None:
    before = status(pg_url)
    assert before["backend"] == "plain" and before["backend_recorded"] is False
    assert before["pending"] == PLAIN_PLAN and before["applied"] == []
    migrate(pg_url)
    after = status(pg_url)
    assert after["pending"] == [] and len(after["applied"]) == len(PLAIN_PLAN)
    assert after["partitions"]["count"] == 22 and after["partitions"]["default_rows"] == 0
    assert after["rows_exact"]["cities"] == 31 and after["rows_exact"]["readings"] == 0
    text = format_status(after)
    assert "backend    plain" in text and f"{len(PLAIN_PLAN)} applied, 0 pending" in text
    assert "partitions 22 daily" in text


def test_cli_migrate_and_status(pg_url: str) -> None:
    runner = CliRunner()
    env = {"KOTA_DATABASE_URL": pg_url}
    result = runner.invoke(group, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "applied 0001_core.sql" in result.output
    assert runner.invoke(group, ["migrate"], env=env).output.strip() == "schema is up to date"
    result = runner.invoke(group, ["status", "--json"], env=env)
    assert result.exit_code == 0 and '"backend": "plain"' in result.output
    result = runner.invoke(group, ["ensure-partitions", "--database-url", pg_url])
    assert result.exit_code == 0 and "created 0 partitions" in result.output
    result = runner.invoke(group, ["refresh-rollups"], env=env)
    assert result.exit_code == 0 and "refreshed 0 buckets" in result.output


def _kota(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kota_cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_unreachable_database_is_one_line() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KOTA_DATABASE_URL"}
    env["KOTA_DATABASE_URL"] = f"postgresql://kota@127.0.0.1:{port}/kota"
    result = _kota("db", "status", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"kota: error: KOTA_DATABASE_URL: could not connect to 127.0.0.1:{port}: connection refused"
    )
    del env["KOTA_DATABASE_URL"]
    result = _kota("db", "migrate", env=env)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("kota: error: KOTA_DATABASE_URL: not set")
    result = _kota("db", "migrate", "--database-url", "postgresql://h:notaport/x", env=env)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("kota: error: KOTA_DATABASE_URL: ")
