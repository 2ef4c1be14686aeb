"""`kota sim frames` and `kota sim run` through click's CliRunner."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from firmware_sim.cli import group
from firmware_sim.devices import modbus
from kota_cli.errors import KotaError


def invoke(*args: str):
    return CliRunner().invoke(group, list(args))


@pytest.mark.parametrize(("device", "size"), [("pms5003", 32), ("sds011", 10)])
def test_frames_binary_sizes(device, size):
    result = invoke("frames", "--device", device, "--count", "7")
    assert result.exit_code == 0, result.output
    data = result.stdout_bytes
    assert len(data) == 7 * size
    assert data[:2] == (b"\x42\x4d" if device == "pms5003" else b"\xaa\xc0")


def test_frames_traffic_lines():
    result = invoke("frames", "--device", "traffic_nmea", "--count", "3")
    lines = result.stdout_bytes.split(b"\r\n")
    assert len(lines) == 4 and lines[-1] == b""
    assert lines[0].startswith(b"$KTTRF,KT0001,1,60,000100,010125,")


def test_frames_modbus_exchanges(tmp_path):
    out = tmp_path / "s8.bin"
    result = invoke("frames", "--device", "s8", "--count", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert len(data) == 4 * (8 + 7)  # request + reply with one register
    assert data[:8] == bytes.fromhex("680400030001") + modbus.crc16(bytes.fromhex("680400030001"))
    assert data[8:11] == bytes.fromhex("680402")


def test_frames_sdm630_addresses():
    result = invoke("frames", "--device", "sdm630", "--count", "2", "--address", "7")
    data = result.stdout_bytes
    assert data[0] == 7 and len(data) == 2 * (8 + 9)


def test_frames_with_faults_is_reproducible():
    args = ("frames", "--device", "pms5003", "--count", "50", "--seed", "3")
    a = invoke(*args, "--faults", "bad_checksum=0.2,garbage=0.2").stdout_bytes
    b = invoke(*args, "--faults", "bad_checksum=0.2,garbage=0.2").stdout_bytes
    assert a == b and len(a) > 50 * 32


@pytest.mark.parametrize(
    "args",
    [
        ("frames", "--device", "pms5003", "--count", "0"),
        ("frames", "--device", "pms5003", "--faults", "sparks=0.1"),
        ("frames", "--device", "pms5003", "--address", "3"),
        ("frames", "--device", "pms5003", "--start", "yesterday"),
        ("run", "--config", "/nonexistent/sim.toml"),
    ],
)
def test_bad_arguments_raise_kota_error(args):
    result = invoke(*args)
    assert isinstance(result.exception, KotaError), result.output
    assert "\n" not in str(result.exception)
