"""`kota aqi`: JSON output through click's runner, and the real console script's error path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from indicators.aqi_cli import command
from kota_cli.errors import KotaError

KOTA = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kota"


def _run(*args: str) -> dict:
    result = CliRunner().invoke(command, list(args))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1  # exactly one JSON object
    return json.loads(lines[0])


def test_aqi_cli_prints_one_json_object() -> None:
    out = _run(
        "--standard", "us_epa", "--pollutant", "pm2_5", "--value", "35.5", "--averaging", "24h"
    )
    assert out["standard"] == "us_epa"
    assert out["pollutant"] == "pm2_5"
    assert out["averaging"] == "24h"
    assert out["value"] == 35.5
    assert out["unit"] == "ug/m3"
    assert out["index"] == 101
    assert out["category"] == "Unhealthy for Sensitive Groups"
    assert out["status"] == "ok"


def test_aqi_cli_unit_and_null_results() -> None:
    out = _run(
        "--standard",
        "us_epa",
        "--pollutant",
        "no2",
        "--value",
        "100",
        "--averaging",
        "1h",
        "--unit",
        "ppb",
    )
    assert (out["index"], out["unit"], out["unit_native"]) == (100, "ppb", "ppb")
    out = _run("--standard", "us_epa", "--pollutant", "pm2_5", "--value", "10", "--averaging", "1h")
    assert (out["index"], out["category"], out["status"]) == (None, None, "not_defined")
    out = _run(
        "--standard", "vn_aqi", "--pollutant", "pm10", "--value", "nan", "--averaging", "24h"
    )
    assert (out["value"], out["index"], out["status"]) == (None, None, "no_data")


def test_aqi_cli_list() -> None:
    out = _run("--list")
    ids = [s["id"] for s in out["standards"]]
    assert ids == ["us_epa", "th_pcd", "vn_aqi", "sg_psi", "my_api", "id_ispu"]
    assert out["standards"][0]["pollutants"]["pm2_5"] == ["24h", "nowcast"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["--standard", "nope", "--pollutant", "pm2_5", "--value", "1", "--averaging", "24h"],
            "valid standards",
        ),
        (
            ["--standard", "us_epa", "--pollutant", "pm1", "--value", "1", "--averaging", "24h"],
            "valid pollutants",
        ),
        (
            [
                "--standard",
                "us_epa",
                "--pollutant",
                "co",
                "--value",
                "1",
                "--averaging",
                "8h",
                "--unit",
                "x",
            ],
            "valid units",
        ),
        (["--standard", "us_epa"], "required"),
    ],
)
def test_aqi_cli_bad_input_is_kota_error(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(command, args)
    assert isinstance(result.exception, KotaError)
    assert fragment in str(result.exception)


def test_aqi_cli_console_script_error_is_one_line_exit_2() -> None:
    proc = subprocess.run(
        [
            str(KOTA),
            "aqi",
            "--standard",
            "nope",
            "--pollutant",
            "pm2_5",
            "--value",
            "1",
            "--averaging",
            "24h",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("kota: error:")
    assert "us_epa" in lines[0]
