"""`kota gateway normalize`: the same normalisation offline, JSON Lines in and out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from gateway.bench import run_normalize_bench
from gateway.schema import Sample, encode_uplink, uplink_topic

ROOT = Path(__file__).resolve().parents[2]
NOW = "2025-06-01T12:00:00Z"
T = 1_748_779_080_000_000  # 2025-06-01T11:58:00Z


def kota(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kota_cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def lines(*objects: object) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def test_normalize_offline_with_devices_csv(tmp_path: Path) -> None:
    devices = tmp_path / "devices.csv"
    devices.write_text(
        "device_id,city,site_id,model,driver,quantities\n"
        "bkk-sht-01,THBKK,bkk-s1,SHT31,tasmota,temperature:°F;relative_humidity:%\n"
        "bkk-gas-01,THBKK,bkk-s1,Alphasense,gas,no2:ppb\n",
        "utf-8",
    )
    tasmota = {
        "schema": "kota.uplink/1",
        "city": "THBKK",
        "site": "bkk-s1",
        "device": "bkk-sht-01",
        "driver": "tasmota",
        "readings": {
            "quantity": ["temperature", "relative_humidity"],
            "value": [86, 64.5],
            "unit": ["°F", "%"],
            "observed_at": ["2025-06-01T18:58:00"] * 2,
        },
    }
    gas = json.loads(
        encode_uplink("THBKK", "bkk-s1", "bkk-gas-01", "gas", [Sample("no2", 100.0, "ppb", T)])
    )
    ghost = json.loads(
        encode_uplink("THBKK", "bkk-s1", "ghost", "x", [Sample("no2", 1.0, "ppb", T)])
    )
    stdin = (
        lines(
            tasmota, {"topic": uplink_topic("THBKK", "bkk-s1", "bkk-gas-01"), "payload": gas}, ghost
        )
        + "this is not json\n"
    )
    dead = tmp_path / "dead.jsonl"
    result = kota(
        "gateway",
        "normalize",
        "--devices",
        str(devices),
        "--now",
        NOW,
        "--dead-letters",
        str(dead),
        stdin=stdin,
    )
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    schema = json.loads((ROOT / "docs/schemas/reading-v1.schema.json").read_text())
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for row in out:
        checker.validate(row)
    by_q = {r["quantity"]: r for r in out}
    assert by_q["temperature"]["value"] == 30.0 and by_q["temperature"]["unit"] == "Cel"
    assert (
        by_q["temperature"]["observed_at"] == "2025-06-01T11:58:00.000000Z"
    )  # Bangkok local -> UTC
    assert abs(by_q["no2"]["value"] - 188.18) < 1e-3
    reasons = sorted(json.loads(line)["reason"] for line in dead.read_text().splitlines())
    assert reasons == ["invalid_json", "unknown_device"]
    assert "3 readings, 2 dead letters" in result.stderr


def test_normalize_accept_unknown_devices_and_errors() -> None:
    ghost = json.loads(
        encode_uplink("THBKK", "bkk-s1", "ghost", "x", [Sample("pm2_5", 1.0, "ug/m3", T)])
    )
    result = kota(
        "gateway", "normalize", "--accept-unknown-devices", "--now", NOW, stdin=lines(ghost)
    )
    assert result.returncode == 0 and json.loads(result.stdout)["device"] == "ghost"
    result = kota("gateway", "normalize", stdin=lines(ghost))
    assert (
        result.returncode == 2
        and result.stderr.startswith("kota: error:")
        and "--devices" in result.stderr
    )


def test_bench_reports_throughput() -> None:
    result = run_normalize_bench(messages=200, readings_per_message=10, repeat=1)
    assert result["readings_in"] == 2000 and result["dead_letters"] == 0
    assert result["readings_out"] == 2200  # + derived pm2_5_corrected
    assert result["readings_per_s"] > 0
