"""MQTT source: paths, topics, rules and time handling; then a REAL Mosquitto with the
firmware_sim ESPHome/Tasmota/Sensor.Community devices."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from edge.drivers.base import AgentContext
from edge.drivers.metrics import driver_metrics
from edge.drivers.mqtt_source import (
    SPEC,
    MqttSourceDriver,
    TopicPattern,
    compile_path,
    resolve,
)
from edge.drivers.testing import CollectingSink, running
from firmware_sim.base import demo_source
from firmware_sim.mqtt_devices import (
    EspHomeNode,
    SensorCommunityNode,
    TasmotaPlug,
    TasmotaSensor,
    connect_device,
    disconnect_device,
)
from gateway.schema import QualityFlag
from kota_cli.errors import ConfigError

BKK = ZoneInfo("Asia/Bangkok")
# 2026-11-22 14:03:00 Bangkok = 07:03:00 UTC
READ_T = datetime(2026, 11, 22, 7, 3, 0, tzinfo=UTC).timestamp()
CTX = AgentContext("pi-test", "THBKK", "bkk-test", clock=lambda: READ_T)
TASMOTA = {
    "Time": "2026-11-22T14:03:00",
    "SDS0X1": {"PM2.5": 12.3, "PM10": 20.1},
    "AM2301": {"Temperature": 30.1, "Humidity": 70.2, "DewPoint": 24.0},
    "TempUnit": "C",
}
SENSOR_COMMUNITY = {
    "esp8266id": "1234567",
    "software_version": "NRZ-2020-133",
    "sensordatavalues": [
        {"value_type": "SDS_P1", "value": "20.10"},
        {"value_type": "SDS_P2", "value": "12.30"},
        {"value_type": "BME280_temperature", "value": "30.05"},
        {"value_type": "BME280_humidity", "value": "70.20"},
        {"value_type": "signal", "value": "-70"},
    ],
}
FAHRENHEIT_RULE = {
    "topic": "{node}/sensor/{sensor}/state",
    "device_id": "{node}",
    "format": "plain",
    "values": [{"match": {"sensor": "temperature"}, "quantity": "temperature", "unit": "[degF]"}],
}


def _driver(ctx: AgentContext = CTX, **table: object) -> MqttSourceDriver:
    cfg = {
        "kind": "mqtt",
        "device_id": "mq",
        "presets": ["esphome", "tasmota", "sensor_community"],
        **table,
    }
    drv = SPEC.build(cfg, ctx)
    assert isinstance(drv, MqttSourceDriver)
    drv.metrics = driver_metrics(CollectorRegistry())
    drv.stats.metrics = drv.metrics
    return drv


def _rows(sink: CollectingSink) -> list[tuple[str, str, float, str, int, int]]:
    return [
        (dev, s.quantity, s.value, s.unit, s.observed_us, s.flags)
        for dev, samples in sink.batches
        for s in samples
    ]


def test_paths() -> None:
    doc = json.loads(json.dumps(SENSOR_COMMUNITY))
    assert resolve(doc, compile_path("sensordatavalues[value_type=SDS_P2].value")) == "12.30"
    assert resolve(TASMOTA, compile_path('SDS0X1["PM2.5"]')) == 12.3
    assert resolve(TASMOTA, compile_path("AM2301.Humidity")) == 70.2
    assert resolve({"a": [1, {"b": 2}]}, compile_path("a[1].b")) == 2
    for bad in ("", "a..b", "a[", 'a["b]', "a]b"):
        with pytest.raises(ValueError):
            compile_path(bad)


def test_topic_patterns() -> None:
    t = TopicPattern.parse("sensor.community/esp8266-{id}")
    assert t.filter == "sensor.community/+"
    assert t.match("sensor.community/esp8266-42") == {"id": "42"}
    assert t.match("sensor.community/esp32-42") is None
    t = TopicPattern.parse("site/+/{node}/#")
    assert t.filter == "site/+/+/#" and t.match("site/x/n1/a/b") == {"node": "n1"}
    for bad in ("a/#/b", "a/b+", "{x}/{x}"):
        with pytest.raises(ValueError):
            TopicPattern.parse(bad)


def test_tasmota_local_time_converted_with_the_city_zone() -> None:
    drv, sink = _driver(), CollectingSink()
    assert drv.handle("tele/tas-1/SENSOR", json.dumps(TASMOTA).encode(), False, sink) == 4
    t_us = int(READ_T) * 1_000_000  # 14:03 Bangkok = 07:03 UTC
    assert _rows(sink) == [
        ("tas-1", "pm2_5", 12.3, "ug/m3", t_us, 0),
        ("tas-1", "pm10", 20.1, "ug/m3", t_us, 0),
        ("tas-1", "temperature", 30.1, "Cel", t_us, 0),
        ("tas-1", "relative_humidity", 70.2, "%", t_us, 0),
    ]
    # TempUnit F -> declared [degF]; a device clock 7 h off (set to UTC): read time + flag
    sink = CollectingSink()
    shifted = {
        **TASMOTA,
        "Time": "2026-11-22T07:03:00",
        "TempUnit": "F",
        "AM2301": {"Temperature": 86.2, "Humidity": 70.2},
    }
    drv.handle("tele/tas-1/SENSOR", json.dumps(shifted).encode(), False, sink)
    rows = _rows(sink)
    assert (
        "tas-1",
        "temperature",
        86.2,
        "[degF]",
        int(READ_T * 1e6),
        QualityFlag.CLOCK_SUSPECT,
    ) in rows
    # within 5 minutes: the device time is kept
    sink = CollectingSink()
    drv.handle(
        "tele/tas-1/SENSOR",
        json.dumps({**TASMOTA, "Time": "2026-11-22T14:07:59"}).encode(),
        False,
        sink,
    )
    assert {r[4] for r in _rows(sink)} == {int(READ_T + 299) * 1_000_000}
    assert {r[5] for r in _rows(sink)} == {0}


def test_tasmota_energy_plug() -> None:
    drv, sink = _driver(), CollectingSink()
    payload = {
        "Time": "2026-11-22T14:03:00",
        "ENERGY": {
            "TotalStartTime": "2025-10-18T14:03:00",
            "Total": 12.345,
            "Yesterday": 1.1,
            "Today": 0.5,
            "Period": 0,
            "Power": 120,
            "ApparentPower": 130,
            "ReactivePower": 50,
            "Factor": 0.92,
            "Voltage": 229,
            "Current": 0.52,
        },
    }
    drv.handle("tele/plug-1/SENSOR", json.dumps(payload).encode(), False, sink)
    assert [(q, v, u) for _, q, v, u, _, _ in _rows(sink)] == [
        ("active_energy_import", 12.345, "kW.h"),
        ("active_power", 120.0, "W"),
        ("voltage", 229.0, "V"),
        ("current", 0.52, "A"),
    ]


def test_sensor_community_string_values() -> None:
    drv, sink = _driver(), CollectingSink()
    drv.handle(
        "sensor.community/esp8266-1234567", json.dumps(SENSOR_COMMUNITY).encode(), False, sink
    )
    assert [(d, q, v, u, f) for d, q, v, u, _, f in _rows(sink)] == [
        ("sc-1234567", "pm10", 20.1, "ug/m3", 0),
        ("sc-1234567", "pm2_5", 12.3, "ug/m3", 0),
        ("sc-1234567", "temperature", 30.05, "Cel", 0),
        ("sc-1234567", "relative_humidity", 70.2, "%", 0),
    ]
    assert {r[4] for r in _rows(sink)} == {int(READ_T * 1e6)}  # no device time: read time


def test_esphome_plain_with_a_fahrenheit_rule_first() -> None:
    drv, sink = _driver(rules=[FAHRENHEIT_RULE]), CollectingSink()
    drv.handle("node1/sensor/temperature/state", b"86.5", False, sink)
    drv.handle("node1/sensor/pm_2_5/state", b"12", False, sink)
    drv.handle("node1/sensor/wifi_signal/state", b"-60", False, sink)
    assert [(d, q, v, u) for d, q, v, u, _, _ in _rows(sink)] == [
        ("node1", "temperature", 86.5, "[degF]"),
        ("node1", "pm2_5", 12.0, "ug/m3"),
    ]
    assert drv.devices["node1"].rejected == {"unmapped": 1}


def test_unparseable_payloads_are_counted_never_fatal() -> None:
    drv, sink = (
        _driver(
            rules=[
                {
                    "topic": "kota/gas/{name}",
                    "device_id": "{name}",
                    "time_path": "ts",
                    "time_format": "epoch_ms",
                    "values": [
                        {"path": "no2_ppb", "quantity": "no2", "unit": "ppb"},
                        {"path": "co_ppm", "quantity": "co", "unit": "ppm"},
                    ],
                }
            ]
        ),
        CollectingSink(),
    )
    cases = [
        ("tele/t1/SENSOR", b"{not json", "bad_json"),
        ("tele/t1/SENSOR", b"\xff\xfe", "bad_utf8"),
        (
            "tele/t1/SENSOR",
            json.dumps({"Time": "yesterday", "SDS0X1": {"PM10": 1}}).encode(),
            "bad_time",
        ),
        ("tele/t1/SENSOR", json.dumps({"Time": "2026-11-22T14:03:00"}).encode(), "no_value"),
        (
            "tele/t1/SENSOR",
            json.dumps({"Time": "2026-11-22T14:03:00", "SDS0X1": {"PM10": "n/a"}}).encode(),
            "bad_value",
        ),
        ("node 1/sensor/pm_2_5/state", b"1", "bad_device_id"),
        ("node1/sensor/pm_2_5/state", b"abc", "bad_value"),
        ("kota/gas/g1", json.dumps({"ts": int(READ_T * 1000), "no2_ppb": 21.5}).encode(), None),
    ]
    for topic, payload, _ in cases:
        drv.handle(topic, payload, False, sink)
    drv.handle("node1/sensor/pm_2_5/state", b"5", True, sink)  # retained on subscribe
    assert drv.devices["t1"].rejected == {
        "bad_json": 1,
        "bad_utf8": 1,
        "bad_time": 1,
        "no_value": 1,
        "bad_value": 1,
    }
    assert drv.devices["node1"].rejected == {"bad_value": 1, "retained": 1}
    assert drv.devices["mq"].rejected == {"bad_device_id": 1}
    assert _rows(sink) == [("g1", "no2", 21.5, "ppb", int(READ_T * 1000) * 1000, 0)]


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200),
    st.sampled_from(["tele/x/SENSOR", "n/sensor/pm_2_5/state", "sensor.community/esp8266-1"]),
)
def test_random_payloads_never_crash(payload: bytes, topic: str) -> None:
    drv = _DRV
    drv.handle(topic, payload, False, lambda _d, _s: None)


_DRV = _driver()


def test_config_errors() -> None:
    base = {"kind": "mqtt", "device_id": "mq"}
    for extra, message in [
        ({}, "rules: no rules and no presets"),
        ({"presets": ["homie"]}, "presets: unknown preset 'homie'"),
        ({"broker": "http://x"}, "broker: must look like mqtt://"),
        (
            {
                "rules": [
                    {
                        "topic": "a/{x}",
                        "device_id": "{y}",
                        "values": [{"path": "v", "quantity": "pm2_5"}],
                    }
                ]
            },
            r"rules\[0\]\.device_id: template",
        ),
        (
            {
                "rules": [
                    {
                        "topic": "a/{x}",
                        "device_id": "{x}",
                        "values": [{"path": "v", "quantity": "pm25"}],
                    }
                ]
            },
            r"rules\[0\]\.values\[0\]\.quantity: unknown",
        ),
        (
            {"rules": [{"topic": "a/{x}", "device_id": "{x}", "values": [{"quantity": "pm2_5"}]}]},
            r"rules\[0\]\.values\[0\]\.path: is required",
        ),
        (
            {
                "rules": [
                    {
                        "topic": "a/{x}",
                        "device_id": "{x}",
                        "values": [{"path": "v", "quantity": "pm2_5", "match": {"y": "1"}}],
                    }
                ]
            },
            r"rules\[0\]\.values\[0\]\.match\.y:",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            SPEC.build({**base, **extra}, CTX)
    with pytest.raises(ConfigError, match="city 'XXABC' is not in the city registry"):
        SPEC.build({**base, "presets": ["tasmota"]}, AgentContext("pi", "XXABC", "s"))


# -- a real Mosquitto -----------------------------------------------------------------------


def test_firmware_sim_devices_through_a_real_broker(mosquitto) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC).timestamp()
    ctx = AgentContext("pi-test", "THBKK", "bkk-test")
    drv = _driver(ctx, broker=mosquitto.url, rules=[FAHRENHEIT_RULE])
    devices = [
        EspHomeNode(demo_source, "esp-node-1", timezone="Asia/Bangkok"),
        TasmotaSensor(demo_source, "tas-air-1", timezone="Asia/Bangkok"),
        TasmotaPlug(
            lambda t: {**demo_source(t), "voltage": 229.0}, "tas-plug-1", timezone="Asia/Bangkok"
        ),
        SensorCommunityNode(demo_source, "7654321"),
    ]
    sink = CollectingSink()
    with running(drv, sink):
        assert drv.subscribed.wait(10)
        clients = [connect_device(d, mosquitto.url) for d in devices]
        try:
            for dev, client in zip(devices, clients, strict=True):
                assert dev.publish_due(client, now)
            expected = sum(len(m.values) for d in devices for m in d.sent_log if m.values)
            assert sink.wait_for(lambda: len(_rows(sink)) >= expected, timeout=10)
        finally:
            for dev, client in zip(devices, clients, strict=True):
                disconnect_device(dev, client)
    got = {(d, q): (v, u, t, f) for d, q, v, u, t, f in _rows(sink)}
    for dev in devices:
        dev_id = {"7654321": "sc-7654321"}.get(dev.name, dev.name)
        for msg in dev.sent_log:
            for q, canonical in msg.values.items():
                value, unit, t_us, flags = got[(dev_id, q)]
                if unit == "[degF]":
                    assert (value - 32) * 5 / 9 == pytest.approx(canonical, abs=1e-9)
                else:
                    assert value == pytest.approx(canonical, abs=1e-9), (dev_id, q)
                assert flags == 0
                if msg.device_time:  # Tasmota local time -> UTC, whole seconds
                    assert t_us == int(now) * 1_000_000
    assert got[("esp-node-1", "temperature")][1] == "[degF]"
    assert got[("tas-plug-1", "active_energy_import")][1] == "kW.h"
    # the birth/LWT/status topics are not subscribed; nothing was rejected
    assert all(not s.rejected for s in drv.devices.values())


def test_broker_restart_reconnects(mosquitto) -> None:  # type: ignore[no-untyped-def]
    drv = _driver(AgentContext("pi", "THBKK", "s"), broker=mosquitto.url, reopen_max_delay=1)
    sink = CollectingSink()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub")
    with running(drv, sink):
        assert drv.subscribed.wait(10)
        mosquitto.restart()
        assert drv.subscribed.wait(15)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        pub.publish("n1/sensor/pm_2_5/state", "7", qos=1).wait_for_publish(5)
        assert sink.wait_for(lambda: len(sink.batches) >= 1, timeout=10)
        pub.disconnect()
        pub.loop_stop()
    assert _rows(sink)[0][:3] == ("n1", "pm2_5", 7.0)
    assert drv.health()["reopens"] >= 1  # type: ignore[operator]
