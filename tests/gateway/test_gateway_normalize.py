"""normalize_batch: canonical units, UTC times, dead-letter reasons, flags, batch isolation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.devices import Calibration, DeviceRegistry, DeviceSpec
from gateway.normalize import (
    NormalizeConfig,
    Normalizer,
    RawMessage,
    normalize_batch,
    readings_to_jsonl,
)
from gateway.schema import READING_COLUMNS, QualityFlag, uplink_topic
from gateway.schema.uplink import to_epoch_us

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T0 = to_epoch_us(NOW - timedelta(minutes=2))
MIN = 60_000_000


def spec(
    device: str,
    quantities: dict[str, str],
    *,
    city: str = "THBKK",
    site: str = "bkk-s1",
    calibrations: list[Calibration] | None = None,
) -> DeviceSpec:
    return DeviceSpec(
        device, city, site, "model", "drv", quantities=quantities, calibrations=calibrations or []
    )


DEVICES = [
    spec(
        "pms-01",
        {
            "pm1": "ug/m3",
            "pm2_5": "µg/m³",
            "pm10": "μg/m3",
            "pm2_5_cf1": "ug/m3",
            "particles_0_3": "/0.1L",
            "relative_humidity": "%",
            "temperature": "°C",
        },
        calibrations=[Calibration("pm2_5", 0.8, 1.0, NOW - timedelta(days=10))],
    ),
    spec("sds-01", {"pm2_5": "ug/m3", "pm10": "ug/m3"}),
    spec("gas-01", {"no2": "ppb", "co": "ppm", "o3": "ppb", "so2": "ug/m3", "co2": "ppm"}),
    spec("tasmota-01", {"temperature": "°F", "relative_humidity": "%"}),
    spec(
        "traffic-01",
        {
            "vehicle_count": "{vehicle}",
            "vehicle_speed": "m/s",
            "lane_occupancy": "%",
            "vehicle_count_motorcycle": "{vehicle}",
        },
    ),
    spec("water-01", {"water_volume": "L", "water_flow": "L/min"}, site="bkk-s2"),
    spec(
        "meter-01",
        {
            "active_energy_import": "W.h",
            "active_power": "kW",
            "voltage": "V",
            "current": "A",
            "frequency": "Hz",
        },
        site="bkk-s2",
    ),
    spec("sgp-01", {"pm2_5": "ug/m3"}, city="SGSIN", site="sg-s1"),
    spec("open-01", {}),  # declares nothing: every catalogue quantity accepted
    spec("old-01", {"pm2_5": "ug/m3"}),
]
RETIRED = {"old-01": NOW - timedelta(days=1)}


def registry() -> DeviceRegistry:
    return DeviceRegistry.from_specs(DEVICES, RETIRED)


def uplink(
    device: str,
    rows: list[tuple[str, Any, str, Any]],
    *,
    city: str = "THBKK",
    site: str = "bkk-s1",
    flags: list[int] | None = None,
    sent_us: int | None = None,
    driver: str = "drv",
) -> RawMessage:
    """A hand-built uplink (the JSON the edge sends), rows = (quantity, value, unit, observed)."""
    body: dict[str, Any] = {
        "schema": "kota.uplink/1",
        "city": city,
        "site": site,
        "device": device,
        "driver": driver,
        "readings": {
            "quantity": [r[0] for r in rows],
            "value": [r[1] for r in rows],
            "unit": [r[2] for r in rows],
            "observed_at": [r[3] for r in rows],
        },
    }
    if flags is not None:
        body["readings"]["flags"] = flags
    if sent_us is not None:
        body["sent_at"] = sent_us
    return RawMessage(uplink_topic(city, site, device), json.dumps(body, allow_nan=True).encode())


def run(*messages: RawMessage, config: NormalizeConfig | None = None):  # type: ignore[no-untyped-def]
    return normalize_batch(list(messages), registry(), now=NOW, config=config)


def value_of(df: pl.DataFrame, device: str, quantity: str) -> dict[str, Any]:
    rows = df.filter((pl.col("device") == device) & (pl.col("quantity") == quantity)).to_dicts()
    assert len(rows) == 1, (device, quantity, rows)
    return rows[0]


def reasons(batch: Any) -> list[str]:
    return sorted(d.reason for d in batch.dead_letters)


# --------------------------------------------------------------------------- units and time


def test_every_device_kind_comes_out_in_canonical_units() -> None:
    t = T0
    batch = run(
        uplink(
            "pms-01",
            [
                ("pm1", 5.0, "ug/m3", t),
                ("pm2_5", 10.0, "µg/m³", t),
                ("pm10", 20, "μg/m3", t),
                ("particles_0_3", 1200, "/0.1L", t),
                ("temperature", 31.5, "°C", t),
            ],
        ),
        uplink("sds-01", [("pm2_5", 7.5, "ug/m3", t), ("pm10", 12.0, "ug/m3", t)]),
        uplink(
            "gas-01",
            [
                ("no2", 100.0, "ppb", t),
                ("co", 1.0, "ppm", t),
                ("o3", 50.0, "ppb", t),
                ("so2", 9.0, "ug/m3", t),
                ("co2", 1800.0, "mg/m3", t),
            ],
        ),
        uplink("tasmota-01", [("temperature", 86.0, "°F", t), ("relative_humidity", 64, "%", t)]),
        uplink(
            "traffic-01",
            [
                ("vehicle_count", 42, "{vehicle}", t),
                ("vehicle_speed", 10.0, "m/s", t),
                ("lane_occupancy", 12.5, "%", t),
            ],
        ),
        uplink(
            "water-01",
            [("water_volume", 250.0, "L", t), ("water_flow", 100.0, "L/min", t)],
            site="bkk-s2",
        ),
        uplink(
            "meter-01",
            [
                ("active_energy_import", 1500.0, "W.h", t),
                ("active_power", 2.5, "kW", t),
                ("voltage", 230.1, "V", t),
                ("current", 4.2, "A", t),
                ("frequency", 50.0, "Hz", t),
            ],
            site="bkk-s2",
        ),
    )
    assert batch.dead_letters == []
    df = batch.readings
    expected = {
        ("pms-01", "pm1"): (5.0, "ug/m3"),
        ("pms-01", "pm10"): (20.0, "ug/m3"),
        ("pms-01", "particles_0_3"): (1200.0, "/dL"),
        ("pms-01", "temperature"): (31.5, "Cel"),
        ("sds-01", "pm2_5"): (7.5, "ug/m3"),
        ("sds-01", "pm10"): (12.0, "ug/m3"),
        ("gas-01", "no2"): (188.18, "ug/m3"),
        ("gas-01", "co"): (1.1456, "mg/m3"),
        ("gas-01", "o3"): (98.1595, "ug/m3"),
        ("gas-01", "so2"): (9.0, "ug/m3"),
        ("gas-01", "co2"): (1000.0, "ppm"),
        ("tasmota-01", "temperature"): (30.0, "Cel"),
        ("tasmota-01", "relative_humidity"): (64.0, "%"),
        ("traffic-01", "vehicle_count"): (42.0, "{vehicle}"),
        ("traffic-01", "vehicle_speed"): (36.0, "km/h"),
        ("traffic-01", "lane_occupancy"): (12.5, "%"),
        ("water-01", "water_volume"): (0.25, "m3"),
        ("water-01", "water_flow"): (6.0, "m3/h"),
        ("meter-01", "active_energy_import"): (1.5, "kW.h"),
        ("meter-01", "active_power"): (2500.0, "W"),
        ("meter-01", "voltage"): (230.1, "V"),
        ("meter-01", "current"): (4.2, "A"),
        ("meter-01", "frequency"): (50.0, "Hz"),
    }
    for (device, quantity), (value, unit) in expected.items():
        row = value_of(df, device, quantity)
        assert row["value"] == pytest.approx(value, abs=1e-4), (device, quantity)
        assert row["raw_value"] == pytest.approx(value, abs=1e-4)
        assert row["unit"] == unit
        assert row["observed_at"] == NOW - timedelta(minutes=2)
        assert row["received_at"] == NOW
        assert row["source"] == "drv"
    assert value_of(df, "water-01", "water_volume")["site"] == "bkk-s2"


def test_output_columns_and_dtypes_are_the_contract() -> None:
    df = run(uplink("sds-01", [("pm2_5", 7.5, "ug/m3", T0)])).readings
    assert tuple(df.columns) == READING_COLUMNS
    assert df.schema == pl.Schema(
        {
            "city": pl.Utf8,
            "site": pl.Utf8,
            "device": pl.Utf8,
            "quantity": pl.Utf8,
            "value": pl.Float64,
            "unit": pl.Utf8,
            "raw_value": pl.Float64,
            "observed_at": pl.Datetime("us", "UTC"),
            "received_at": pl.Datetime("us", "UTC"),
            "flags": pl.Int16,
            "source": pl.Utf8,
        }
    )
    empty = run(RawMessage("x", b"nope")).readings
    assert empty.height == 0 and empty.schema == df.schema


def test_tasmota_local_time_in_bangkok_becomes_utc() -> None:
    # Tasmota reports "Time":"2025-06-01T18:58:00" in local time; Bangkok is UTC+7 all year.
    batch = run(
        uplink(
            "tasmota-01",
            [
                ("temperature", 86.0, "°F", "2025-06-01T18:58:00"),
                ("relative_humidity", 60, "%", "2025-06-01T18:58:00+07:00"),
            ],
        )
    )
    assert batch.dead_letters == []
    for row in batch.readings.to_dicts():
        assert row["observed_at"] == datetime(2025, 6, 1, 11, 58, tzinfo=UTC)


def test_microseconds_are_kept_exactly() -> None:
    t = T0 + 123_457
    row = run(uplink("sds-01", [("pm2_5", 1.0, "ug/m3", t)])).readings.row(0, named=True)
    assert to_epoch_us(row["observed_at"]) == t


def test_reading_jsonl_validates_against_reading_v1_schema() -> None:
    schema = json.loads((ROOT / "docs/schemas/reading-v1.schema.json").read_text())
    batch = run(
        uplink(
            "pms-01",
            [
                ("pm2_5", 10.0, "ug/m3", T0),
                ("pm2_5_cf1", 20.0, "ug/m3", T0),
                ("relative_humidity", 70.0, "%", T0),
            ],
        ),
        uplink("gas-01", [("no2", 100.0, "ppb", T0 + 1)]),
    )
    lines = readings_to_jsonl(batch.readings).decode().splitlines()
    assert len(lines) == batch.readings.height == 5
    checker = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for line in lines:
        checker.validate(json.loads(line))


# --------------------------------------------------------------------------- dead letters


def test_each_dead_letter_reason_from_a_crafted_input() -> None:
    t = T0
    good = uplink("sds-01", [("pm2_5", 5.0, "ug/m3", t)])
    huge = RawMessage(uplink_topic("THBKK", "bkk-s1", "sds-01"), b" " * 300_000)
    cases: dict[str, RawMessage] = {
        "invalid_json": RawMessage(uplink_topic("THBKK", "bkk-s1", "sds-01"), b'{"schema": '),
        "oversized": huge,
        "unsupported_schema": RawMessage(None, b'{"schema": "kota.uplink/9"}'),
        "not_an_object": RawMessage(None, b"[1, 2]"),
        "topic_mismatch": RawMessage(uplink_topic("THBKK", "bkk-s1", "other"), good.payload),
        "bad_device": uplink("x'; DROP TABLE readings;--", [("pm2_5", 1.0, "ug/m3", t)]),
        "bad_site": uplink("sds-01", [("pm2_5", 1.0, "ug/m3", t)], site="s" * 65),
        "invalid_utf8": RawMessage(None, b'{"schema": "\xff\xfe"}'),
        "unknown_device": uplink("ghost-01", [("pm2_5", 1.0, "ug/m3", t)]),
        "retired_device": uplink("old-01", [("pm2_5", 1.0, "ug/m3", t)]),
        "device_city_mismatch": uplink("sgp-01", [("pm2_5", 1.0, "ug/m3", t)]),  # registered SGSIN
        "unknown_quantity": uplink("open-01", [("pm3", 1.0, "ug/m3", t)]),
        "undeclared_quantity": uplink("sds-01", [("no2", 1.0, "ppb", t)]),
        "incompatible_unit": uplink("open-01", [("pm2_5", 1.0, "ppb", t)]),
        "future_timestamp": uplink("sds-01", [("pm2_5", 1.0, "ug/m3", to_epoch_us(NOW) + 6 * MIN)]),
        "ancient_timestamp": uplink("sds-01", [("pm2_5", 1.0, "ug/m3", 0)]),  # unset RTC: 1970
        "bad_value": uplink("sds-01", [("pm2_5", "12", "ug/m3", t + 1)]),
        "non_finite_value": uplink("sds-01", [("pm2_5", float("nan"), "ug/m3", t + 2)]),
        "bad_unit": uplink("sds-01", [("pm2_5", 1.0, "", t + 3)]),
        "bad_quantity": uplink("sds-01", [(None, 1.0, "ug/m3", t + 4)]),
        "bad_observed_at": uplink("sds-01", [("pm2_5", 1.0, "ug/m3", "yesterday")]),
    }
    for reason, message in cases.items():
        batch = normalize_batch([message, good], registry(), now=NOW)
        assert reasons(batch) == [reason], (reason, batch.dead_letters)
        # the good message in the same batch always survives
        assert batch.readings.filter(pl.col("device") == "sds-01").height == 1, reason
        dead = batch.dead_letters[0]
        assert dead.received_at == NOW and dead.detail
        whole = reason in {
            "invalid_json",
            "oversized",
            "unsupported_schema",
            "not_an_object",
            "topic_mismatch",
            "bad_device",
            "bad_site",
            "invalid_utf8",
        }
        if whole:
            assert dead.payload is not None and dead.row is None
            assert len(dead.payload) <= 64 * 1024
        else:
            assert dead.row is not None and dead.payload is None
            json.dumps(dead.row, allow_nan=False)  # storable as jsonb


def test_one_bad_reading_never_rejects_its_batch_mates() -> None:
    t = T0
    batch = run(
        uplink(
            "gas-01",
            [
                ("no2", 100.0, "ppb", t),
                ("no2", float("inf"), "ppb", t + 1),
                ("co", 1.0, "ppm", t),
                ("pm2_5", 3.0, "ug/m3", t),
                ("o3", 50.0, "furlongs", t),
                ("so2", 1.0, "ug/m3", to_epoch_us(NOW) + 3600 * 10**6),
                ("co2", 600.0, "ppm", t),
            ],
        )
    )
    assert reasons(batch) == [
        "future_timestamp",
        "incompatible_unit",
        "non_finite_value",
        "undeclared_quantity",
    ]
    assert sorted(batch.readings["quantity"].to_list()) == ["co", "co2", "no2"]
    assert batch.stats["rows"] == 6 and batch.stats["readings"] == 3


def test_sql_metacharacters_in_row_fields_are_data_not_code() -> None:
    sneaky = "pm2_5'); DELETE FROM readings; --"
    batch = run(uplink("open-01", [(sneaky, 1.0, "ug/m3", T0), ("pm2_5", 2.0, "ug/m3", T0)]))
    assert reasons(batch) == ["unknown_quantity"]
    assert batch.dead_letters[0].row is not None and batch.dead_letters[0].row["quantity"] == sneaky
    assert batch.readings.height == 1


def test_unknown_devices_pass_with_accept_unknown() -> None:
    batch = normalize_batch(
        [uplink("ghost-01", [("pm2_5", 1.0, "ug/m3", T0)])], DeviceRegistry.accept_all(), now=NOW
    )
    assert batch.dead_letters == [] and batch.readings["device"].to_list() == ["ghost-01"]


def test_registry_reloads_early_when_an_unknown_device_appears() -> None:
    loads: list[int] = []
    clock = [0.0]

    def loader():  # type: ignore[no-untyped-def]
        from gateway.devices import frames_from_specs

        loads.append(1)
        return frames_from_specs(DEVICES if len(loads) > 1 else DEVICES[:1])

    reg = DeviceRegistry(loader, refresh_s=30.0, min_reload_s=5.0, clock=lambda: clock[0])
    normalizer = Normalizer(reg)
    message = uplink("sds-01", [("pm2_5", 1.0, "ug/m3", T0)])
    assert reasons(normalizer.normalize([message], now=NOW)) == ["unknown_device"]
    clock[0] = 6.0  # provisioned meanwhile; the next unknown triggers a reload
    assert normalizer.normalize([message], now=NOW).readings.height == 1
    assert len(loads) == 2


# --------------------------------------------------------------------------- flags


def flags_of(batch: Any, device: str, quantity: str) -> int:
    return int(value_of(batch.readings, device, quantity)["flags"])


def test_out_of_range_is_flagged_not_deleted() -> None:
    batch = run(
        uplink(
            "open-01",
            [
                ("pm2_5", 2500.0, "ug/m3", T0),
                ("temperature", 80.0, "Cel", T0),
                ("pm10", 40.0, "ug/m3", T0),
            ],
        )
    )
    assert flags_of(batch, "open-01", "pm2_5") == QualityFlag.OUT_OF_RANGE
    assert flags_of(batch, "open-01", "temperature") == QualityFlag.OUT_OF_RANGE
    assert flags_of(batch, "open-01", "pm10") == 0


def test_calibration_applies_gain_offset_and_keeps_raw_value() -> None:
    batch = run(uplink("pms-01", [("pm2_5", 10.0, "ug/m3", T0), ("pm10", 10.0, "ug/m3", T0)]))
    row = value_of(batch.readings, "pms-01", "pm2_5")
    assert row["raw_value"] == 10.0 and row["value"] == pytest.approx(9.0)  # 10 × 0.8 + 1
    assert row["flags"] == QualityFlag.CALIBRATED
    assert flags_of(batch, "pms-01", "pm10") == 0


def test_calibration_only_inside_its_validity_window() -> None:
    cals = [
        Calibration("pm2_5", 2.0, 0.0, NOW - timedelta(days=10), NOW - timedelta(days=5)),
        Calibration("pm2_5", 3.0, 0.0, NOW - timedelta(days=2)),
    ]
    reg = DeviceRegistry.from_specs([spec("cal-01", {"pm2_5": "ug/m3"}, calibrations=cals)])
    t = [to_epoch_us(NOW - timedelta(days=d)) for d in (11, 7, 3, 1)]
    batch = normalize_batch(
        [uplink("cal-01", [("pm2_5", 10.0, "ug/m3", x) for x in t])], reg, now=NOW
    )
    values = batch.readings.sort("observed_at")["value"].to_list()
    assert values == [10.0, 20.0, 10.0, 30.0]


def test_edge_flags_kept_but_edge_cannot_claim_calibrated() -> None:
    edge = int(QualityFlag.CLOCK_SUSPECT | QualityFlag.DEVICE_WARNING | QualityFlag.CALIBRATED)
    batch = run(uplink("sds-01", [("pm2_5", 5.0, "ug/m3", T0)], flags=[edge]))
    assert (
        flags_of(batch, "sds-01", "pm2_5") == QualityFlag.CLOCK_SUSPECT | QualityFlag.DEVICE_WARNING
    )


def test_late_and_clock_suspect() -> None:
    old = to_epoch_us(NOW - timedelta(hours=2))
    batch = run(
        uplink("sds-01", [("pm2_5", 5.0, "ug/m3", old)]),
        # edge clock 10 minutes ahead of the gateway: sent_at in the future
        uplink("gas-01", [("no2", 5.0, "ppb", T0)], sent_us=to_epoch_us(NOW) + 10 * MIN),
        # device clock ahead of the edge: observed 4 minutes after the message was sent
        uplink("pms-01", [("pm10", 5.0, "ug/m3", T0 + 4 * MIN + 5 * 10**6)], sent_us=T0 - 2 * MIN),
        uplink("tasmota-01", [("temperature", 86.0, "°F", T0)], sent_us=T0 + 1_000_000),
    )
    assert flags_of(batch, "sds-01", "pm2_5") == QualityFlag.LATE
    assert flags_of(batch, "gas-01", "no2") == QualityFlag.CLOCK_SUSPECT
    assert flags_of(batch, "pms-01", "pm10") == QualityFlag.CLOCK_SUSPECT
    assert flags_of(batch, "tasmota-01", "temperature") == 0


def test_spike_within_a_batch_and_across_batches() -> None:
    normalizer = Normalizer(registry())
    # pm2_5 max_step = 500 per minute
    first = normalizer.normalize(
        [
            uplink(
                "sds-01",
                [
                    ("pm2_5", 10.0, "ug/m3", T0 - 3 * MIN),
                    ("pm2_5", 900.0, "ug/m3", T0 - 2 * MIN),
                    ("pm2_5", 950.0, "ug/m3", T0 - MIN),
                ],
            )
        ],
        now=NOW,
    )
    spikes = first.readings.sort("observed_at")["flags"].to_list()
    assert spikes == [0, QualityFlag.SPIKE, 0]
    # next batch: compared with the remembered 950 a minute earlier
    second = normalizer.normalize([uplink("sds-01", [("pm2_5", 20.0, "ug/m3", T0)])], now=NOW)
    assert second.readings["flags"].to_list() == [QualityFlag.SPIKE]
    # slow change over a long gap is no spike: 600 over 10 minutes = 60/min
    third = normalizer.normalize(
        [uplink("sds-01", [("pm2_5", 620.0, "ug/m3", T0 + 10 * MIN)])],
        now=NOW + timedelta(minutes=10),
    )
    assert third.readings["flags"].to_list() == [0]
    # a fresh process (restart) has no memory: the first reading cannot be spike-checked
    fresh = Normalizer(registry()).normalize(
        [uplink("sds-01", [("pm2_5", 5.0, "ug/m3", T0 + 11 * MIN)])],
        now=NOW + timedelta(minutes=11),
    )
    assert fresh.readings["flags"].to_list() == [0]


def test_flatline_after_n_identical_values_across_batches() -> None:
    normalizer = Normalizer(registry())
    n = 120  # pm2_5 flatline_n
    start = T0 - 200 * 1_000_000
    rows = [("pm2_5", 7.0, "ug/m3", start + i * 1_000_000) for i in range(n - 1)]
    first = normalizer.normalize([uplink("sds-01", rows)], now=NOW)
    assert first.readings["flags"].to_list() == [0] * (n - 1)
    second = normalizer.normalize(
        [
            uplink(
                "sds-01",
                [
                    ("pm2_5", 7.0, "ug/m3", start + (n - 1) * 1_000_000),
                    ("pm2_5", 7.0, "ug/m3", start + n * 1_000_000),
                    ("pm2_5", 7.5, "ug/m3", start + (n + 1) * 1_000_000),
                ],
            )
        ],
        now=NOW,
    )
    assert second.readings.sort("observed_at")["flags"].to_list() == [
        QualityFlag.FLATLINE,
        QualityFlag.FLATLINE,
        0,
    ]


def test_purpleair_correction_is_a_derived_quantity() -> None:
    t = T0
    batch = run(
        uplink(
            "pms-01",
            [
                ("pm2_5_cf1", 20.0, "ug/m3", t),
                ("relative_humidity", 70.0, "%", t),
                ("pm2_5", 18.0, "ug/m3", t),
                ("pm2_5_cf1", 1.0, "ug/m3", t + 1),
                ("relative_humidity", 95.0, "%", t + 1),
                ("pm2_5_cf1", 30.0, "ug/m3", t + 2),
            ],
        )
    )  # no RH at t+2: nothing derived
    derived = batch.readings.filter(pl.col("quantity") == "pm2_5_corrected").sort("observed_at")
    # 0.524 × 20 − 0.0862 × 70 + 5.75 = 10.196 ; 0.524 × 1 − 0.0862 × 95 + 5.75 = −1.915 -> 0
    assert derived["value"].to_list() == pytest.approx([10.196, 0.0])
    assert set(derived["flags"].to_list()) == {QualityFlag.DERIVED}
    assert derived["unit"].to_list() == ["ug/m3", "ug/m3"]
    assert value_of(batch.readings, "pms-01", "pm2_5")["value"] == pytest.approx(18.0 * 0.8 + 1.0)
    off = run(
        uplink("pms-01", [("pm2_5_cf1", 20.0, "ug/m3", t), ("relative_humidity", 70.0, "%", t)]),
        config=NormalizeConfig(purpleair_correction=False),
    )
    assert "pm2_5_corrected" not in off.readings["quantity"].to_list()


def test_purpleair_pairs_across_messages_of_one_batch() -> None:
    batch = run(
        uplink("pms-01", [("pm2_5_cf1", 20.0, "ug/m3", T0)]),
        uplink("pms-01", [("relative_humidity", 70.0, "%", T0)]),
    )
    assert value_of(batch.readings, "pms-01", "pm2_5_corrected")["value"] == pytest.approx(10.196)


def test_duplicates_in_a_batch_collapse_to_the_first() -> None:
    message = uplink("sds-01", [("pm2_5", 5.0, "ug/m3", T0)])
    batch = run(message, message)
    assert batch.readings.height == 1 and batch.stats["duplicates"] == 1


# --------------------------------------------------------------------------- robustness

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["pm2_5", "no2", "ug/m3", "ppb", "°F", "2025-06-01T19:00:00", "Cel", "THBKK"]),
)
_column = st.lists(_scalar, max_size=6)
_uplink = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.sampled_from(["kota.uplink/1", "kota.uplink/2", 1]),
        "city": st.sampled_from(["THBKK", "SGSIN", "XXXXX", "", 5]),
        "site": st.sampled_from(["bkk-s1", "bkk-s2", "sg-s1", "../x"]),
        "device": st.sampled_from(["sds-01", "pms-01", "gas-01", "ghost", "old-01", "a" * 70]),
        "driver": st.sampled_from(["drv", "", None]),
        "sent_at": st.one_of(st.integers(min_value=-(2**66), max_value=2**66), st.text(max_size=3)),
        "readings": st.one_of(
            st.fixed_dictionaries(
                {"quantity": _column, "value": _column, "unit": _column, "observed_at": _column},
                optional={"flags": _column},
            ),
            _scalar,
        ),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_uplink, st.booleans()), max_size=5))
def test_random_uplinks_never_raise(items: list[tuple[dict[str, Any], bool]]) -> None:
    messages = []
    for body, with_topic in items:
        payload = json.dumps(body, allow_nan=True).encode()
        topic = (
            uplink_topic(str(body.get("city")), str(body.get("site")), str(body.get("device")))
            if with_topic
            else None
        )
        messages.append(RawMessage(topic, payload))
    batch = normalize_batch(messages, registry(), now=NOW)
    assert tuple(batch.readings.columns) == READING_COLUMNS
    assert batch.stats["readings"] <= batch.stats["rows"] + batch.stats["derived"]
    for dead in batch.dead_letters:
        if dead.row is not None:
            orjson.dumps(dead.row)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(payload: bytes) -> None:
    batch = normalize_batch(
        [RawMessage("kota/v1/THBKK/bkk-s1/sds-01/up", payload)], registry(), now=NOW
    )
    assert batch.readings.height == 0 and len(batch.dead_letters) == 1


def test_integer_too_large_for_a_float_is_dead_lettered_not_raised() -> None:
    # decode_uplink raises OverflowError here (reported to the lead); the gateway turns it
    # into a dead letter of the whole message instead of failing the batch.
    body = (
        b'{"schema":"kota.uplink/1","city":"THBKK","site":"bkk-s1","device":"sds-01","driver":"d",'
        b'"readings":{"quantity":["pm2_5"],"value":[1' + b"0" * 400 + b'],"unit":["ug/m3"],'
        b'"observed_at":[1]}}'
    )
    good = uplink("gas-01", [("no2", 1.0, "ppb", T0)])
    batch = run(RawMessage(None, body), good)
    assert len(batch.dead_letters) == 1
    assert batch.dead_letters[0].reason in {"invalid_uplink", "bad_value", "non_finite_value"}
    assert batch.readings.height == 1
