"""A plain (non-editable) wheel carries every data file the code loads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUST_SHIP = [
    "gateway/schema/quantities.toml",
    "gateway/schema/cities.csv",
    "gateway/schema/uplink-v1.schema.json",
    "storage/migrations/0001_core.sql",
    "storage/migrations/plain/0002_readings.sql",
    "storage/migrations/timescale/0002_readings.sql",
    "firmware_sim/examples/sim.toml",
    "edge/examples/edge.toml",
    "dashboards/provisioning/datasources/kota.yaml",
    "dashboards/provisioning/dashboards/ASEAN/kota-asean-comparison.json",
    "indicators/catalogue.toml",
    "indicators/targets.toml",
]


def test_wheel_contains_runtime_data(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("kota_iot-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in MUST_SHIP if name not in names]
    assert not missing, missing
