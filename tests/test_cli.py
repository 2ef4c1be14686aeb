"""The `kota` command: every group explains itself and errors are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kota_cli.main import SUBCOMMANDS

KOTA = [sys.executable, "-m", "kota_cli.main"]
ROOT = Path(__file__).resolve().parents[1]


def kota(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KOTA, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )


def test_root_help_lists_every_group() -> None:
    result = kota("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_every_group_has_working_help(name: str) -> None:
    result = kota(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert "Traceback" not in result.stderr


def test_cities_prints_31_cities_with_zone_and_population() -> None:
    result = kota("cities")
    assert result.returncode == 0
    assert result.stdout.rstrip().endswith("31 cities")
    assert "Asia/Bangkok" in result.stdout and "5,471,588" in result.stdout


def test_bad_registry_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "cities.csv"
    bad.write_text("locode,name\nTHBKK,Bangkok\n")
    result = kota("cities", "--registry", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kota: error:")
    assert "missing columns" in result.stderr


def test_unknown_command_is_one_clear_line() -> None:
    result = kota("frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr and "Traceback" not in result.stderr
