"""MQTT-native simulated devices against a real (private, throwaway) Mosquitto broker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from firmware_sim.mqtt_devices import (
    EnergyMeterMqtt,
    EspHomeNode,
    GasSensor,
    MqttDevice,
    MqttFaults,
    SensorCommunityNode,
    TasmotaPlug,
    TasmotaSensor,
    WaterMeterMqtt,
    connect_device,
    disconnect_device,
    parse_mqtt_url,
    ppb_to_ugm3,
)
from firmware_sim.profiles import FaultLog, make_source

# 2026-11-22T07:03:00Z = 14:03 in Bangkok
NOW = datetime(2026, 11, 22, 7, 3, tzinfo=UTC).timestamp()


class Collector:
    """A paho subscriber on '#' that records (topic, payload, retain)."""

    def __init__(self, url: str) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        host, port = parse_mqtt_url(url)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-collector")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(10), "collector did not subscribe"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))

    def on(self, topic: str) -> list[str]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; got {self.messages[-10:]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(mosquitto: Any) -> Iterator[Collector]:
    c = Collector(mosquitto.url)
    yield c
    c.close()


def _run(device: MqttDevice, url: str, times: list[float]) -> Any:
    client = connect_device(device, url)
    for t in times:
        device.publish_due(client, t)
    return client


def test_esphome_state_topics_plain_numbers_and_fahrenheit(
    mosquitto: Any, collector: Collector
) -> None:
    src = make_source("THBKK", "air", "esphome-bkk-01", seed=1)
    dev = EspHomeNode(src, "esphome-bkk-01", interval_s=60, timezone="Asia/Bangkok")
    client = _run(dev, mosquitto.url, [NOW, NOW + 30, NOW + 60])  # NOW+30 is not due
    collector.wait(lambda: len(collector.on("esphome-bkk-01/sensor/humidity/state")) == 2)
    assert collector.on("esphome-bkk-01/status") == ["online"]
    pm25 = collector.on("esphome-bkk-01/sensor/pm_2_5/state")
    assert len(pm25) == 2 and all(p.isdigit() for p in pm25)  # "12" as the PMS5003 reports
    temp_f = float(collector.on("esphome-bkk-01/sensor/temperature/state")[0])
    temp_c = src(NOW)["temperature"]
    assert temp_f == pytest.approx(temp_c * 9 / 5 + 32, abs=0.06)
    logged = next(m for m in dev.sent_log if m.topic.endswith("/temperature/state"))
    assert logged.values["temperature"] == pytest.approx(temp_c, abs=0.04)  # canonical °C
    assert all(m.retain for m in dev.sent_log)
    disconnect_device(dev, client)
    collector.wait(lambda: collector.on("esphome-bkk-01/status")[-1:] == ["offline"])


def test_last_will_on_a_dropped_connection(mosquitto: Any, collector: Collector) -> None:
    dev = TasmotaSensor(
        make_source("VNHAN", "air", "t", 1), "tasmota_5A9AE8", timezone="Asia/Ho_Chi_Minh"
    )
    client = connect_device(dev, mosquitto.url)
    collector.wait(lambda: collector.on("tele/tasmota_5A9AE8/LWT") == ["Online"])
    client.loop_stop()
    client.socket().close()  # the device loses power: no DISCONNECT, the broker sends the will
    collector.wait(lambda: collector.on("tele/tasmota_5A9AE8/LWT")[-1:] == ["Offline"])


def test_tasmota_sensor_json_with_local_time(mosquitto: Any, collector: Collector) -> None:
    src = make_source("THBKK", "air", "tasmota-bkk", seed=2)
    dev = TasmotaSensor(src, "tasmota-bkk", timezone="Asia/Bangkok")
    client = _run(dev, mosquitto.url, [NOW])
    collector.wait(lambda: bool(collector.on("tele/tasmota-bkk/SENSOR")))
    body = json.loads(collector.on("tele/tasmota-bkk/SENSOR")[0])
    assert body["Time"] == "2026-11-22T14:03:00"  # local time, no offset
    assert set(body) == {"Time", "SDS0X1", "AM2301", "TempUnit"} and body["TempUnit"] == "C"
    v = src(NOW)
    assert body["SDS0X1"]["PM2.5"] == round(v["pm2_5"], 1)
    assert body["SDS0X1"]["PM10"] == round(v["pm10"], 1)
    assert body["AM2301"]["Temperature"] == round(v["temperature"], 1)
    assert body["AM2301"]["Humidity"] == round(v["relative_humidity"], 1)
    disconnect_device(dev, client)


def test_tasmota_plug_energy(mosquitto: Any, collector: Collector) -> None:
    src = make_source("PHMNL", "energy_1p", "plug", seed=3)
    dev = TasmotaPlug(src, "plug-mnl", timezone="Asia/Manila")
    client = _run(dev, mosquitto.url, [NOW])
    collector.wait(lambda: bool(collector.on("tele/plug-mnl/SENSOR")))
    e = json.loads(collector.on("tele/plug-mnl/SENSOR")[0])["ENERGY"]
    v = src(NOW)
    assert e["Total"] == pytest.approx(v["active_energy_import"], abs=0.001)  # kWh
    assert e["Power"] == round(v["active_power"]) and isinstance(e["Power"], int)
    assert 205 <= e["Voltage"] <= 235  # Philippines 220 V
    assert 0 <= e["Today"] < 30 and 0 < e["Yesterday"] < 30
    assert {"TotalStartTime", "Current", "Factor", "ApparentPower"} <= set(e)
    disconnect_device(dev, client)


def test_sensor_community_values_are_strings(mosquitto: Any, collector: Collector) -> None:
    src = make_source("THCNX", "air", "1234567", seed=4)
    dev = SensorCommunityNode(src, "1234567", timezone="Asia/Bangkok")
    client = _run(dev, mosquitto.url, [NOW])
    topic = "sensor.community/esp8266-1234567"
    collector.wait(lambda: bool(collector.on(topic)))
    body = json.loads(collector.on(topic)[0])
    assert body["esp8266id"] == "1234567" and body["software_version"].startswith("NRZ-")
    vals = {d["value_type"]: d["value"] for d in body["sensordatavalues"]}
    assert all(isinstance(s, str) for s in vals.values())
    v = src(NOW)
    assert float(vals["SDS_P1"]) == pytest.approx(v["pm10"], abs=0.006)  # P1 = PM10
    assert float(vals["SDS_P2"]) == pytest.approx(v["pm2_5"], abs=0.006)  # P2 = PM2.5
    assert float(vals["BME280_temperature"]) == pytest.approx(v["temperature"], abs=0.006)
    assert float(vals["BME280_humidity"]) == pytest.approx(v["relative_humidity"], abs=0.006)
    disconnect_device(dev, client)


def test_unit_conversions_gas_water_energy(mosquitto: Any, collector: Collector) -> None:
    gas_src = make_source("THBKK", "gas", "gas-1", seed=5)
    water_src = make_source("VNHAN", "water", "water-1", seed=5)
    energy_src = make_source("THCNX", "energy_1p", "energy-1", seed=5)
    devs = [
        GasSensor(gas_src, "gas-1"),
        WaterMeterMqtt(water_src, "water-1"),
        EnergyMeterMqtt(energy_src, "energy-1"),
    ]
    clients = [_run(d, mosquitto.url, [NOW]) for d in devs]
    collector.wait(lambda: all(collector.on(d.topics()[0]) for d in devs))
    gas = json.loads(collector.on("kota/gas/gas-1")[0])
    g = gas_src(NOW)
    assert gas["ts"] == int(NOW * 1000)
    assert ppb_to_ugm3("no2", gas["no2_ppb"]) == pytest.approx(g["no2"], rel=0.01)
    assert gas["no2_ppb"] == pytest.approx(g["no2"] * 24.45 / 46.0055, abs=0.06)
    assert gas["co_ppm"] == pytest.approx(g["co"] * 24.45 / 28.010, abs=0.001)
    water = json.loads(collector.on("kota/water/water-1")[0])
    w = water_src(NOW)
    assert water["time"] == "2026-11-22T07:03:00Z"
    assert water["volume_l"] == int(w["water_volume"] * 1000)
    assert water["flow_lpm"] == pytest.approx(w["water_flow"] * 1000 / 60, abs=0.006)
    energy = json.loads(collector.on("kota/energy/energy-1")[0])
    e = energy_src(NOW)
    assert energy["energy_wh"] == int(e["active_energy_import"] * 1000)
    assert energy["power_kw"] == pytest.approx(e["active_power"] / 1000, abs=0.0006)
    logged = devs[1].sent_log[-1].values
    assert logged["water_volume"] == water["volume_l"] / 1000
    for d, c in zip(devs, clients, strict=True):
        disconnect_device(d, c)


def test_clock_and_duplicate_faults_are_logged(mosquitto: Any, collector: Collector) -> None:
    log = FaultLog()
    src = make_source("THBKK", "air", "t", seed=6)
    wrong = TasmotaSensor(src, "tasmota-1970", timezone="Asia/Bangkok", log=log,
                          faults=MqttFaults(clock_rate=1.0, clock_mode="1970"))  # fmt: skip
    shifted = TasmotaSensor(src, "tasmota-shift", timezone="Asia/Bangkok", log=log,
                            faults=MqttFaults(clock_rate=1.0, clock_mode="offset",
                                              clock_offset_h=-7.0))  # fmt: skip
    dup = WaterMeterMqtt(make_source("THBKK", "water", "w", 6), "dup", log=log,
                         faults=MqttFaults(duplicate_rate=1.0))  # fmt: skip
    clients = [_run(d, mosquitto.url, [NOW]) for d in (wrong, shifted, dup)]
    collector.wait(lambda: len(collector.on("kota/water/dup")) == 2)
    collector.wait(lambda: bool(collector.on("tele/tasmota-shift/SENSOR")))
    collector.wait(lambda: bool(collector.on("tele/tasmota-1970/SENSOR")))
    assert json.loads(collector.on("tele/tasmota-1970/SENSOR")[0])["Time"].startswith("1970-01-01T")
    assert json.loads(collector.on("tele/tasmota-shift/SENSOR")[0])["Time"] == "2026-11-22T07:03:00"
    a, b = collector.on("kota/water/dup")
    assert a == b
    kinds = sorted(e.kind for e in log.events)
    assert kinds == ["clock", "clock", "duplicate"]
    assert dup.sent_log[-1].faults == ("duplicate",)
    assert wrong.sent_log[-1].faults == ("clock",)
    for d, c in zip((wrong, shifted, dup), clients, strict=True):
        disconnect_device(d, c)


def test_publish_due_schedule_without_a_broker() -> None:
    class Fake:
        def __init__(self) -> None:
            self.sent: list[tuple[str, str, int, bool]] = []

        def publish(
            self, topic: str, payload: str = "", qos: int = 0, retain: bool = False
        ) -> None:
            self.sent.append((topic, payload, qos, retain))

    fake = Fake()
    dev = GasSensor(make_source("THBKK", "gas", "g", 1), "g", interval_s=60)
    assert len(dev.publish_due(fake, NOW + 5)) == 1
    assert dev.publish_due(fake, NOW + 30) == []
    assert len(dev.publish_due(fake, NOW + 60)) == 1  # aligned to the minute
    assert len(dev.publish_due(fake, NOW + 86400)) == 1  # a clock jump gives one report
    assert all(qos == 1 for _, _, qos, _ in fake.sent)
    with pytest.raises(ValueError):
        parse_mqtt_url("http://x")
    with pytest.raises(ValueError):
        MqttFaults(clock_mode="sometimes")
