"""`kota export ngsi-ld`: Smart Data Models entities from real stored readings."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.devices import DeviceRegistry, DeviceSpec, upsert_devices
from gateway.export_cli import group
from gateway.export_ngsi import CORE_CONTEXT, MODEL_CONTEXT
from gateway.normalize import Normalizer, RawMessage
from gateway.schema import QUANTITIES, Sample, encode_uplink, uplink_topic
from gateway.schema.uplink import to_epoch_us

NOW = datetime.now(UTC).replace(microsecond=0)
T = NOW - timedelta(minutes=10)
URN = re.compile(
    r"^urn:ngsi-ld:[A-Za-z]+:[A-Za-z0-9._-]+:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$"
)

SPECS = [
    DeviceSpec(
        "bkk-pms-01",
        "THBKK",
        "bkk-sukhumvit",
        "PMS5003",
        "pms5003",
        "Sukhumvit",
        13.7437,
        100.5552,
        {"pm2_5": "ug/m3", "pm10": "ug/m3", "relative_humidity": "%", "no2": "ppb"},
    ),
    DeviceSpec(
        "bkk-trf-01",
        "THBKK",
        "bkk-asok",
        "NMEA counter",
        "traffic_nmea",
        "Asok",
        13.7370,
        100.5603,
        {
            "vehicle_count": "{vehicle}",
            "vehicle_count_motorcycle": "{vehicle}",
            "vehicle_speed": "km/h",
            "lane_occupancy": "%",
        },
    ),
    DeviceSpec(
        "bkk-wtr-01",
        "THBKK",
        "bkk-asok",
        "Water meter",
        "modbus",
        None,
        None,
        None,
        {"water_volume": "L", "water_flow": "L/min"},
    ),
    DeviceSpec(
        "bkk-mtr-01",
        "THBKK",
        "bkk-asok",
        "SDM120",
        "modbus",
        None,
        None,
        None,
        {
            "active_energy_import": "Wh",
            "active_power": "W",
            "voltage": "V",
            "current": "A",
            "frequency": "Hz",
        },
    ),
]


@pytest.fixture
def stored(pg_url: str) -> str:
    from ingest.writer import ReadingWriter
    from storage.migrate import migrate

    migrate(pg_url)
    upsert_devices(pg_url, SPECS)
    t = to_epoch_us(T)
    samples = {
        "bkk-pms-01": [
            Sample("pm2_5", 12.5, "ug/m3", t),
            Sample("pm10", 20.0, "ug/m3", t),
            Sample("relative_humidity", 64.0, "%", t),
            Sample("no2", 100.0, "ppb", t),
        ],
        "bkk-trf-01": [
            Sample("vehicle_count", 42, "{vehicle}", t),
            Sample("vehicle_count_motorcycle", 30, "{vehicle}", t),
            Sample("vehicle_speed", 38.5, "km/h", t),
            Sample("lane_occupancy", 12.0, "%", t),
        ],
        "bkk-wtr-01": [
            Sample("water_volume", 250.0, "L", t),
            Sample("water_flow", 100.0, "L/min", t),
        ],
        "bkk-mtr-01": [
            Sample("active_energy_import", 1500.0, "Wh", t),
            Sample("active_power", 450.0, "W", t),
            Sample("voltage", 230.0, "V", t),
            Sample("current", 2.0, "A", t),
            Sample("frequency", 50.0, "Hz", t),
        ],
    }
    site = {s.device_id: s.site_id for s in SPECS}
    messages = [
        RawMessage(
            uplink_topic("THBKK", site[d], d), encode_uplink("THBKK", site[d], d, "drv", rows)
        )
        for d, rows in samples.items()
    ]
    batch = Normalizer(DeviceRegistry.from_db(pg_url)).normalize(messages, now=NOW)
    assert batch.dead_letters == []
    with ReadingWriter(pg_url) as writer:
        writer.write(batch.readings, batch.dead_letters)
    return pg_url


def export(db: str, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    out = tmp_path / "out.jsonld"
    result = CliRunner().invoke(
        group,
        [
            "ngsi-ld",
            "--city",
            "THBKK",
            "--from",
            (T - timedelta(hours=1)).isoformat(),
            "--to",
            (T + timedelta(hours=1)).isoformat(),
            "--out",
            str(out),
            "--database-url",
            db,
            *extra,
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    if "--jsonl" in extra:
        return [json.loads(line) for line in text.splitlines()]
    entities = json.loads(text)
    assert isinstance(entities, list)
    return entities


def test_ngsi_ld_entities_are_structurally_valid(stored: str, tmp_path: Path) -> None:
    entities = export(stored, tmp_path)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in entities:
        by_type.setdefault(e["type"], []).append(e)
        assert URN.match(e["id"]), e["id"]
        assert e["id"].startswith(f"urn:ngsi-ld:{e['type']}:")
        assert e["@context"] == [MODEL_CONTEXT[e["type"]], CORE_CONTEXT]
        assert e["refDevice"] == {
            "type": "Relationship",
            "object": f"urn:ngsi-ld:Device:{e['id'].split(':')[3].split('-motorcycle')[0]}",
        }
        for name, prop in e.items():
            if (
                isinstance(prop, dict)
                and prop.get("type") == "Property"
                and name not in {"dateObserved", "name", "vehicleType"}
            ):
                assert prop["observedAt"].endswith("Z")
                assert isinstance(prop["value"], (int, float, dict))
    assert len({e["id"] for e in entities}) == len(entities)
    assert sorted(by_type) == [
        "AirQualityObserved",
        "ThreePhaseAcMeasurement",
        "TrafficFlowObserved",
        "WaterConsumptionObserved",
    ]

    (air,) = by_type["AirQualityObserved"]
    stamp = T.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert air["id"] == f"urn:ngsi-ld:AirQualityObserved:bkk-pms-01:{stamp}"
    assert air["dateObserved"] == {
        "type": "Property",
        "value": {"@type": "DateTime", "@value": stamp},
    }
    assert air["location"] == {
        "type": "GeoProperty",
        "value": {"type": "Point", "coordinates": [100.5552, 13.7437]},
    }
    assert air["pm25"]["value"] == 12.5 and air["pm25"]["unitCode"] == "GQ"
    assert air["no2"]["value"] == pytest.approx(188.18, abs=1e-3) and air["no2"]["unitCode"] == "GQ"
    # catalogue: relativeHumidity is a 0-1 fraction in FIWARE
    assert (
        air["relativeHumidity"]["value"] == pytest.approx(0.64)
        and air["relativeHumidity"]["unitCode"] == "C62"
    )

    traffic = {e["id"]: e for e in by_type["TrafficFlowObserved"]}
    total = traffic[f"urn:ngsi-ld:TrafficFlowObserved:bkk-trf-01:{stamp}"]
    assert total["intensity"]["value"] == 42 and total["intensity"]["unitCode"] == "C62"
    assert total["averageVehicleSpeed"]["unitCode"] == "KMH"
    assert total["occupancy"]["value"] == pytest.approx(0.12)
    moto = traffic[f"urn:ngsi-ld:TrafficFlowObserved:bkk-trf-01-motorcycle:{stamp}"]
    assert moto["vehicleType"]["value"] == "motorcycle" and moto["intensity"]["value"] == 30

    (water,) = by_type["WaterConsumptionObserved"]
    assert water["waterConsumption"] == {
        "type": "Property",
        "value": 0.25,
        "observedAt": stamp,
        "unitCode": "MTQ",
    }
    assert water["flow"]["value"] == pytest.approx(6.0) and water["flow"]["unitCode"] == "MQH"
    assert "location" in water  # bkk-asok got coordinates from the traffic counter's row

    (meter,) = by_type["ThreePhaseAcMeasurement"]
    assert (
        meter["totalActiveEnergyImport"]["value"] == 1.5
        and meter["totalActiveEnergyImport"]["unitCode"] == "KWH"
    )
    assert (
        meter["phaseVoltage"]["value"] == {"L1": 230.0}
        and meter["phaseVoltage"]["unitCode"] == "VLT"
    )
    assert meter["frequency"]["unitCode"] == "HTZ"
    for e in entities:  # every unitCode is the catalogue's UN/CEFACT code (or C62 for fractions)
        for prop in e.values():
            if isinstance(prop, dict) and "unitCode" in prop:
                assert prop["unitCode"] in {q.cefact for q in QUANTITIES.values()} | {"C62"}


def test_jsonl_and_empty_window(stored: str, tmp_path: Path) -> None:
    assert len(export(stored, tmp_path, "--jsonl")) == 5
    result = CliRunner().invoke(
        group,
        [
            "ngsi-ld",
            "--city",
            "SGSIN",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-02",
            "--database-url",
            stored,
        ],
    )
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_hourly_entities_from_rollups(stored: str, tmp_path: Path) -> None:
    import psycopg

    from storage.rollups import refresh_rollups

    with psycopg.connect(stored, autocommit=True) as conn:
        refresh_rollups(conn, since=T - timedelta(hours=2))
    entities = export(stored, tmp_path, "--hourly")
    air = next(e for e in entities if e["type"] == "AirQualityObserved")
    hour = T.replace(minute=0, second=0)
    start, end = (
        hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
        (hour + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    assert air["id"] == f"urn:ngsi-ld:AirQualityObserved:bkk-pms-01:{start}"
    assert air["dateObserved"]["value"]["@value"] == f"{start}/{end}"
    assert air["pm25"]["value"] == 12.5
