"""`kota edge decode`: decode_capture and the click command (CliRunner), plus the registry."""

from __future__ import annotations

import io
import json
import re

from click.testing import CliRunner

from edge.drivers import REGISTRY
from edge.drivers.base import AgentContext, Driver
from edge.drivers.decode import decode_capture, decode_command
from firmware_sim.base import demo_source
from firmware_sim.devices.pms5003 import encode_frame
from kota_cli.errors import ConfigError

PMS = bytes.fromhex(
    "42 4D 00 1C 00 08 00 0C 00 0F 00 08 00 0C 00 0F 05 88 01 A4 00 54 00 09 00 03 00 02"
    " 97 00 03 1C"
)  # docs/protocols.md worked example
SDS = bytes.fromhex("AA C0 7B 00 C8 01 A1 60 45 AB")  # docs/protocols.md: 12.3 / 45.6
NMEA = b"$KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13,2*64\r\n"


def test_decode_capture_pms_with_a_bad_frame() -> None:
    bad = bytearray(PMS)
    bad[-1] ^= 1
    readings, rejects = decode_capture("pms5003", io.BytesIO(b"\x00" + PMS + bytes(bad) + PMS))
    rows = list(readings)
    assert len(rows) == 24
    assert rows[4] == {"quantity": "pm2_5", "value": 12.0, "unit": "ug/m3", "frame_offset": 1}
    assert rows[12]["frame_offset"] == 65
    assert rejects == {"garbage": 1, "bad_checksum": 1}


def test_decode_capture_large_stream_in_chunks() -> None:
    data = b"".join(encode_frame(demo_source(1.7e9 + i)) for i in range(500))
    readings, rejects = decode_capture("pms5003", io.BytesIO(data))
    assert sum(1 for _ in readings) == 500 * 12 and not rejects


def test_cli_sds011_and_traffic() -> None:
    runner = CliRunner()
    result = runner.invoke(decode_command, ["--driver", "sds011", "-"], input=SDS + SDS[:5])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines == [
        {
            "quantity": "pm2_5",
            "value": 12.3,
            "unit": "ug/m3",
            "frame_offset": 0,
            "sensor_id": "A160",
        },
        {
            "quantity": "pm10",
            "value": 45.6,
            "unit": "ug/m3",
            "frame_offset": 0,
            "sensor_id": "A160",
        },
    ]
    assert "2 readings; rejected frames: truncated=1" in result.stderr
    result = runner.invoke(decode_command, ["--driver", "traffic-nmea", "-"], input=NMEA)
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert rows[0] == {
        "quantity": "vehicle_count",
        "value": 42.0,
        "unit": "{vehicle}",
        "frame_offset": 0,
        "counter_id": "KT0001",
        "lane": 1,
        "interval_s": 60,
        "interval_end": "2025-01-06T08:15:00Z",
    }
    assert "rejected frames: none" in result.stderr


def test_cli_reads_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cap.bin"
    path.write_bytes(PMS * 3)
    result = CliRunner().invoke(decode_command, ["--driver", "pms5003", str(path)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 36
    result = CliRunner().invoke(decode_command, ["--driver", "modbus", str(path)])
    assert result.exit_code == 2 and "Invalid value for '--driver'" in result.stderr


def test_registry_and_sample_configs_build() -> None:
    import tomllib

    assert set(REGISTRY) == {"pms5003", "sds011", "traffic_nmea", "modbus", "mqtt"}
    ctx = AgentContext("pi-test", "THBKK", "bkk-test")
    for kind, spec in REGISTRY.items():
        assert spec.kind == kind
        doc = tomllib.loads(spec.sample_config)
        (table,) = doc["devices"]
        assert table["kind"] == kind
        driver = spec.build(table, ctx)
        assert isinstance(driver, Driver)
        assert driver.kind == kind and driver.device_id == table["device_id"]
        assert isinstance(driver.health(), dict)
        # every option the builder knows is in the sample config (commented defaults count)
        try:
            spec.build({**table, "zz_not_an_option": 1}, ctx)
        except ConfigError as err:
            known = set(str(err).split("known: ")[1].rstrip(")").split(", "))
        documented = set(re.findall(r"^#? ?([a-z_]+) = ", spec.sample_config, re.M))
        documented |= set(re.findall(r"^\[\[devices\.([a-z_]+)\]\]", spec.sample_config, re.M))
        assert known <= documented, (kind, known - documented)


def test_docs_show_every_driver_sample_config_and_metric() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "edge/drivers/README.md").read_text()
    docs = (root / "docs/edge-drivers.md").read_text()
    for text in (readme, docs):
        for kind, spec in REGISTRY.items():
            assert f"## {kind}" in text
            assert spec.sample_config.rstrip() in text, kind
        for metric in (
            "kota_edge_frames_total",
            "kota_edge_frames_rejected_total",
            "kota_edge_readings_total",
            "kota_edge_port_reopens_total",
        ):
            assert metric in text
        for reason in (
            "bad_checksum",
            "bad_length",
            "bad_tail",
            "unknown_type",
            "bad_sum",
            "too_long",
            "bad_crc",
            "exception_illegal_address",
            "no_value",
            "bad_json",
            "retained",
            "no_response",
        ):
            assert f"`{reason}`" in text, reason
