"""`kota devices` against a real PostgreSQL: import, add, list, retire; registry from the DB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from gateway.devices import DeviceRegistry, DeviceSpecError, parse_devices_csv
from gateway.devices_cli import group
from gateway.normalize import RawMessage, normalize_batch
from gateway.schema import Sample, encode_uplink, uplink_topic
from gateway.schema.uplink import to_epoch_us

ROOT = Path(__file__).resolve().parents[2]

CSV = """device_id,city,site_id,site_name,latitude,longitude,model,driver,quantities,calibrations
bkk-pms-01,THBKK,bkk-sukhumvit,Sukhumvit Soi 11,13.7437,100.5552,PMS5003,pms5003,pm2_5:ug/m3;pm10:µg/m³;pm2_5_cf1:ug/m3,pm2_5:0.9:-1.5:2025-01-01T00:00:00Z
bkk-sht-01,THBKK,bkk-sukhumvit,Sukhumvit Soi 11,13.7437,100.5552,SHT31 (Tasmota),tasmota,temperature:°F;relative_humidity:%,
sgp-mtr-01,SGSIN,sg-bishan,Bishan,1.3508,103.8485,SDM120,modbus_sdm120,active_energy_import:Wh;voltage:V,
"""


@pytest.fixture
def db(pg_url: str) -> str:
    from storage.migrate import migrate

    migrate(pg_url)
    return pg_url


def invoke(db: str, *args: str) -> str:
    result = CliRunner().invoke(group, [*args, "--database-url", db], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_import_then_list_and_registry(db: str, tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(CSV, "utf-8")
    assert "imported 3 devices" in invoke(db, "import", str(path))
    assert "imported 3 devices" in invoke(db, "import", str(path))  # idempotent upsert
    out = invoke(db, "list", "--city", "THBKK")
    assert "bkk-pms-01" in out and "bkk-sht-01" in out and "sgp-mtr-01" not in out
    assert "2 devices" in out
    rows = [json.loads(line) for line in invoke(db, "list", "--json").splitlines()]
    assert {r["device_id"] for r in rows} == {"bkk-pms-01", "bkk-sht-01", "sgp-mtr-01"}
    pms = next(r for r in rows if r["device_id"] == "bkk-pms-01")
    assert pms["quantities"] == "pm10:µg/m³;pm2_5:ug/m3;pm2_5_cf1:ug/m3"
    assert pms["latitude"] == pytest.approx(13.7437) and pms["site_name"] == "Sukhumvit Soi 11"
    with psycopg.connect(db) as conn:
        cal = conn.execute(
            'SELECT gain, "offset", valid_from, valid_to FROM calibrations'
        ).fetchall()
    assert cal == [(0.9, -1.5, datetime(2025, 1, 1, tzinfo=UTC), None)]

    # the gateway's registry reads the same tables
    now = datetime(2025, 6, 1, 12, tzinfo=UTC)
    t = to_epoch_us(now - timedelta(minutes=1))
    reg = DeviceRegistry.from_db(db)
    batch = normalize_batch(
        [
            RawMessage(
                uplink_topic("THBKK", "bkk-sukhumvit", "bkk-pms-01"),
                encode_uplink(
                    "THBKK",
                    "bkk-sukhumvit",
                    "bkk-pms-01",
                    "pms5003",
                    [Sample("pm2_5", 20.0, "ug/m3", t), Sample("no2", 5.0, "ppb", t)],
                ),
            ),
            RawMessage(
                uplink_topic("THBKK", "bkk-sukhumvit", "ghost"),
                encode_uplink(
                    "THBKK", "bkk-sukhumvit", "ghost", "x", [Sample("pm2_5", 1.0, "ug/m3", t)]
                ),
            ),
        ],
        reg,
        now=now,
    )
    assert batch.readings["value"].to_list() == [pytest.approx(16.5)]  # 20 × 0.9 − 1.5
    assert sorted(d.reason for d in batch.dead_letters) == ["undeclared_quantity", "unknown_device"]


def test_add_calibrate_and_retire(db: str) -> None:
    invoke(
        db,
        "add",
        "--id",
        "kul-sds-01",
        "--city",
        "MYKUL",
        "--site",
        "kul-klcc",
        "--latitude",
        "3.1579",
        "--longitude",
        "101.7116",
        "--model",
        "SDS011",
        "--driver",
        "sds011",
        "--quantity",
        "pm2_5:ug/m3",
        "--quantity",
        "pm10:ug/m3",
        "--calibrate",
        "pm2_5:1.1:0:2025-01-01",
    )
    # a new calibration closes the previous open one
    invoke(
        db,
        "add",
        "--id",
        "kul-sds-01",
        "--city",
        "MYKUL",
        "--site",
        "kul-klcc",
        "--model",
        "SDS011",
        "--driver",
        "sds011",
        "--quantity",
        "pm2_5:ug/m3",
        "--calibrate",
        "pm2_5:1.2:0.5:2025-03-01T00:00:00+08:00",
    )
    with psycopg.connect(db) as conn:
        cals = conn.execute(
            "SELECT gain, valid_from, valid_to FROM calibrations ORDER BY valid_from"
        ).fetchall()
    assert cals[0][2] == cals[1][1] == datetime(2025, 2, 28, 16, tzinfo=UTC)
    assert cals[1][2] is None
    assert "retired" in invoke(db, "retire", "kul-sds-01", "--at", "2025-05-01T00:00:00Z")
    rows = [
        json.loads(line) for line in invoke(db, "list", "--json", "--city", "MYKUL").splitlines()
    ]
    assert rows[0]["status"] == "retired"
    frames = DeviceRegistry.from_db(db).frames()
    assert frames.devices["retired_us"].to_list() == [to_epoch_us(datetime(2025, 5, 1, tzinfo=UTC))]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("x;y,THBKK,s1,,,,m,d,,", "device_id"),
        ("d1,XXBAD,s1,,,,m,d,,", "city"),
        ("d1,THBKK,s1,,,,m,d,pm2_5:ppb,", "cannot express pm2_5"),
        ("d1,THBKK,s1,,,,m,d,pm9:ug/m3,", "unknown quantity"),
        ("d1,THBKK,s1,,,,m,d,pm2_5:bananas,", "unknown unit"),
        ("d1,THBKK,s1,,95,10,m,d,,", "out of range"),
        ("d1,THBKK,s1,,abc,10,m,d,,", "not a number"),
        ("d1,THBKK,s1,,,,m,d,pm2_5:ug/m3,pm2_5:x:0:2025-01-01", "numbers"),
        ("d1,THBKK,s1,,,,m,d,pm2_5:ug/m3,pm10:1:0:2025-01-01", "does not declare"),
        ("d1,THBKK,s1,,,,m,d,pm2_5:ug/m3,pm2_5:1:0:someday", "ISO 8601"),
    ],
)
def test_csv_validation_names_line_and_problem(row: str, message: str) -> None:
    header = (
        "device_id,city,site_id,site_name,latitude,longitude,model,driver,quantities,calibrations\n"
    )
    with pytest.raises(DeviceSpecError, match=message) as info:
        parse_devices_csv(header + row + "\n", "devices.csv")
    assert str(info.value).startswith("devices.csv:2:")


def test_cli_errors_are_one_line(db: str, tmp_path: Path) -> None:
    env = {**os.environ, "KOTA_DATABASE_URL": db}
    bad = tmp_path / "bad.csv"
    bad.write_text("device_id,city\n")
    for args in (
        ["import", str(bad)],
        ["retire", "nope"],
        [
            "add",
            "--id",
            "d1",
            "--city",
            "THBKK",
            "--site",
            "no-such-site",
            "--model",
            "m",
            "--driver",
            "d",
        ],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "kota_cli.main", "devices", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("kota: error:") and result.stderr.count("\n") == 1, (
            result.stderr
        )
    result = subprocess.run(
        [sys.executable, "-m", "kota_cli.main", "devices", "list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in env.items() if k != "KOTA_DATABASE_URL"},
        timeout=60,
    )
    assert result.returncode == 2 and "KOTA_DATABASE_URL" in result.stderr
