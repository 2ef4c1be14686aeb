"""MQTT-native simulated devices: publish what real firmware publishes, shapes and units included.

Every device takes a ValueSource (firmware_sim.profiles.make_source) and publishes, with QoS 1,
in the shape, field names and units of a real firmware, so the edge agent's MQTT mapping and
unit conversions are exercised:

``EspHomeNode`` (ESPHome MQTT client component)
    ``<node>/sensor/<object_id>/state`` with a plain-text number (``"12.3"``), retained (ESPHome
    retains state messages by default); ``<node>/status`` birth ``online`` (retained) and last
    will ``offline``. The ``temperature`` sensor here reports **°F** (a sensor with a
    ``unit_of_measurement: °F`` filter); the unit is not in the message, the mapping must know.
    Shape: https://esphome.io/components/mqtt (topic_prefix defaults to the node name; birth
    and will messages on ``<prefix>/status``; state topic
    ``<prefix>/<component_type>/<object_id>/state``).

``TasmotaSensor`` / ``TasmotaPlug`` (Tasmota telemetry, every TelePeriod)
    ``tele/<topic>/SENSOR`` JSON: ``{"Time":"2026-11-22T14:03:00","SDS0X1":{"PM2.5":12.3,
    "PM10":20.1},"AM2301":{"Temperature":30.1,"Humidity":70.2},"TempUnit":"C"}`` and, for a
    power-monitoring plug, ``{"Time":...,"ENERGY":{"TotalStartTime":...,"Total":12.345,
    "Yesterday":..,"Today":1.2,"Period":..,"Power":120,"ApparentPower":..,"ReactivePower":..,
    "Factor":0.92,"Voltage":229,"Current":0.52}}`` (Total/Today/Yesterday in kWh, Power in W).
    ``Time`` is the device's LOCAL time without an offset. ``tele/<topic>/LWT``
    ``Online``/``Offline``, retained. Shapes: https://tasmota.github.io/docs/MQTT/ and
    https://tasmota.github.io/docs/JSON-Status-Responses/ (ENERGY fields as in Tasmota
    discovery logs, e.g. ``val_tpl: {{value_json['ENERGY']['Total']}}``, unit kWh).

``SensorCommunityNode`` (Sensor.Community / luftdaten.info airRohr firmware)
    The JSON the firmware POSTs to an API (forwarded to MQTT by a bridge), topic
    ``sensor.community/esp8266-<id>``: ``{"esp8266id":"1234567","software_version":
    "NRZ-2020-133","sensordatavalues":[{"value_type":"SDS_P1","value":"20.10"},...]}``:
    SDS_P1 = PM10, SDS_P2 = PM2.5, BME280_temperature (°C), BME280_humidity (%), plus
    ``samples``/``min_micro``/``max_micro``/``signal`` housekeeping; every value is a string.
    Shape: opendata-stuttgart/sensors-software (airRohr) and the luftdaten.info API docs.

``GasSensor``, ``WaterMeterMqtt``, ``EnergyMeterMqtt`` (Kota-style custom JSON firmware)
    NO2/O3/SO2 in **ppb** and CO in **ppm** (25 °C, 1 atm: ppb = µg/m³ x 24.45 / M);
    water volume in **litres** and flow in **L/min**; energy in **Wh** and power in **kW**.

Faults (:class:`MqttFaults`, seeded, logged to a FaultLog): a wrong device clock (the time
field shifted by hours, or counting from 1970 as after a reboot without NTP) and duplicate
publishes. Every message published is in ``sent_log`` as an :class:`MqttMessage` with the
values in canonical units *as a correct decoder reads them back* from the payload.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from firmware_sim.profiles import FaultEvent, FaultLog, ValueSource, stream_key

QOS = 1
MOLAR_VOLUME = 24.45  # L/mol at 25 °C, 1 atm (the usual ppb <-> µg/m³ convention)
MOLAR_MASS = {"no2": 46.0055, "o3": 47.9982, "so2": 64.066, "co": 28.010}


def ugm3_to_ppb(q: str, ugm3: float) -> float:
    return ugm3 * MOLAR_VOLUME / MOLAR_MASS[q]


def ppb_to_ugm3(q: str, ppb: float) -> float:
    return ppb * MOLAR_MASS[q] / MOLAR_VOLUME


class Publisher(Protocol):
    """What a device needs from a client: paho's ``publish`` (tests may pass a fake)."""

    def publish(
        self, topic: str, payload: Any = ..., qos: int = ..., retain: bool = ...
    ) -> Any: ...


@dataclass(frozen=True)
class MqttMessage:
    """One message a device published."""

    time: float  # simulated epoch seconds (UTC) of the reading
    topic: str
    payload: str
    retain: bool = False
    values: Mapping[str, float] = field(default_factory=dict)  # canonical, as decoded
    faults: tuple[str, ...] = ()  # "clock", "duplicate"
    device_time: str = ""  # the device's own timestamp field, if any


@dataclass(frozen=True)
class MqttFaults:
    """MQTT-level faults; rates are chances per telemetry message.

    - ``clock_rate``: the device clock is wrong for that message: shifted by
      ``clock_offset_h`` hours (``clock_mode="offset"``), counting from 1970-01-01 as after
      a reboot without NTP (``"1970"``), or either at random (``"mixed"``).
    - ``duplicate_rate``: the message is published twice (QoS 1 redelivery, firmware retry).
    """

    clock_rate: float = 0.0
    clock_offset_h: float = -7.0
    clock_mode: str = "mixed"
    duplicate_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("clock_rate", "duplicate_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {v}")
        if self.clock_mode not in ("offset", "1970", "mixed"):
            raise ValueError(f"clock_mode must be offset, 1970 or mixed, not {self.clock_mode!r}")


class MqttDevice:
    """Base: scheduling, faults, availability (birth/will) and the sent log."""

    firmware = "generic"

    def __init__(
        self,
        source: ValueSource,
        name: str,
        *,
        interval_s: float = 60.0,
        timezone: str = "UTC",
        faults: MqttFaults | None = None,
        seed: int = 0,
        log: FaultLog | None = None,
        log_limit: int | None = 10_000,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"{name}: interval_s must be > 0")
        self.source = source
        self.name = name
        self.interval_s = float(interval_s)
        self.zone = ZoneInfo(timezone)
        self.faults = faults
        self.log = log if log is not None else FaultLog()
        self.log_limit = log_limit
        self.sent_log: list[MqttMessage] = []
        self._rng = random.Random(stream_key("kota-mqtt", seed, name))
        self._next: float | None = None
        self._lock = threading.Lock()
        self._boot = 0.0

    # -- what the device exposes ----------------------------------------------------------
    @property
    def client_id(self) -> str:
        return self.name

    @property
    def availability(self) -> tuple[str, str, str] | None:
        """(topic, online payload, offline payload) or None."""
        return None

    def topics(self) -> list[str]:
        """Topics (MQTT filters) this device publishes on, for humans and edge configs."""
        raise NotImplementedError

    # -- publishing -------------------------------------------------------------------------
    def publish_birth(self, client: Publisher) -> None:
        av = self.availability
        if av is not None:
            self._publish(client, MqttMessage(0.0, av[0], av[1], retain=True))

    def publish_offline(self, client: Publisher) -> Any:
        """Publish the offline status (a clean shutdown); returns the client's result."""
        av = self.availability
        if av is None:
            return None
        return self._publish(client, MqttMessage(0.0, av[0], av[2], retain=True))

    def publish_due(self, client: Publisher, now: float) -> list[MqttMessage]:
        """Publish the telemetry due at ``now`` (one report per interval, aligned to it).

        A clock that jumps ahead (virtual time) gives one report, not a backlog: firmware
        reports the current reading, it does not replay missed intervals.
        """
        with self._lock:
            if self._next is None:
                self._next = now
                self._boot = now
            if now < self._next:
                return []
            self._next = (math.floor(now / self.interval_s) + 1) * self.interval_s
        out: list[MqttMessage] = []
        for msg in self.messages(now):
            out.extend(self._emit(client, msg))
        return out

    def messages(self, now: float) -> list[MqttMessage]:
        """The telemetry messages for time ``now`` (before faults)."""
        raise NotImplementedError

    # -- helpers ----------------------------------------------------------------------------
    def _clock(self, now: float) -> tuple[float, str | None]:
        """The device's idea of the time, and the fault that skewed it (if any)."""
        f = self.faults
        if f is None or f.clock_rate <= 0 or self._rng.random() >= f.clock_rate:
            return now, None
        mode = f.clock_mode
        if mode == "mixed":
            mode = "offset" if self._rng.random() < 0.5 else "1970"
        if mode == "offset":
            return now + f.clock_offset_h * 3600.0, f"clock offset {f.clock_offset_h:+g} h"
        return max(0.0, now - self._boot) + self._rng.uniform(5.0, 600.0), "clock at 1970 (no NTP)"

    def _local_iso(self, t: float) -> str:
        """Tasmota-style local time without offset."""
        return (
            datetime.fromtimestamp(t, self.zone).replace(tzinfo=None).isoformat(timespec="seconds")
        )

    def _note_clock(self, now: float, fault: str | None, topic: str) -> tuple[str, ...]:
        if fault is None:
            return ()
        self.log.record(FaultEvent(now, self.name, "clock", "", f"{topic}: {fault}"))
        return ("clock",)

    def _emit(self, client: Publisher, msg: MqttMessage) -> list[MqttMessage]:
        f = self.faults
        copies = [msg]
        if f is not None and f.duplicate_rate > 0 and self._rng.random() < f.duplicate_rate:
            dup = MqttMessage(msg.time, msg.topic, msg.payload, msg.retain, msg.values,
                              (*msg.faults, "duplicate"), msg.device_time)  # fmt: skip
            copies.append(dup)
            self.log.record(FaultEvent(msg.time, self.name, "duplicate", "", msg.topic))
        for m in copies:
            self._publish(client, m)
        return copies

    def _publish(self, client: Publisher, msg: MqttMessage) -> Any:
        info = client.publish(msg.topic, msg.payload, qos=QOS, retain=msg.retain)
        self.sent_log.append(msg)
        if self.log_limit is not None and len(self.sent_log) > self.log_limit:
            del self.sent_log[: len(self.sent_log) - self.log_limit]
        return info


def _r(v: float, nd: int) -> float:
    return round(float(v), nd)


class EspHomeNode(MqttDevice):
    """An ESPHome node with a PMS5003 (pm_1_0/pm_2_5/pm_10_0), a DHT22 in °F and humidity."""

    firmware = "esphome"
    #: object_id -> (kota quantity, decimals, unit) ; unit "F" = converted from °C.
    SENSORS: Mapping[str, tuple[str, int, str]] = {
        "pm_1_0": ("pm1", 0, ""),
        "pm_2_5": ("pm2_5", 0, ""),
        "pm_10_0": ("pm10", 0, ""),
        "temperature": ("temperature", 1, "F"),
        "humidity": ("relative_humidity", 1, ""),
    }

    def __init__(self, source: ValueSource, name: str = "esphome-node", **kw: Any) -> None:
        super().__init__(source, name, **kw)

    @property
    def availability(self) -> tuple[str, str, str]:
        return (f"{self.name}/status", "online", "offline")

    def topics(self) -> list[str]:
        return [f"{self.name}/sensor/+/state", f"{self.name}/status"]

    def messages(self, now: float) -> list[MqttMessage]:
        values = self.source(now)
        out = []
        for obj, (q, nd, unit) in self.SENSORS.items():
            if q not in values:
                continue
            v = float(values[q])
            if unit == "F":
                shown = _r(v * 9.0 / 5.0 + 32.0, nd)
                canonical = (shown - 32.0) * 5.0 / 9.0
            else:
                shown = _r(v, nd)
                canonical = shown
            payload = f"{shown:.{nd}f}"
            out.append(MqttMessage(now, f"{self.name}/sensor/{obj}/state", payload,
                                   retain=True, values={q: canonical}))  # fmt: skip
        return out


class _Tasmota(MqttDevice):
    firmware = "tasmota"

    @property
    def availability(self) -> tuple[str, str, str]:
        return (f"tele/{self.name}/LWT", "Online", "Offline")

    def topics(self) -> list[str]:
        return [f"tele/{self.name}/SENSOR", f"tele/{self.name}/LWT"]

    def _sensor(self, now: float, body: dict[str, Any], values: dict[str, float]) -> MqttMessage:
        t, fault = self._clock(now)
        topic = f"tele/{self.name}/SENSOR"
        stamp = self._local_iso(t)
        payload = json.dumps({"Time": stamp, **body}, separators=(",", ":"))
        return MqttMessage(now, topic, payload, values=values,
                           faults=self._note_clock(now, fault, topic), device_time=stamp)  # fmt: skip


class TasmotaSensor(_Tasmota):
    """Tasmota with an SDS011 (``SDS0X1``) and an AM2301 (DHT21): PM and T/RH in °C."""

    def messages(self, now: float) -> list[MqttMessage]:
        v = self.source(now)
        pm25, pm10 = _r(v["pm2_5"], 1), _r(v["pm10"], 1)
        temp, rh = _r(v["temperature"], 1), _r(v["relative_humidity"], 1)
        body = {
            "SDS0X1": {"PM2.5": pm25, "PM10": pm10},
            "AM2301": {"Temperature": temp, "Humidity": rh, "DewPoint": _r(_dew(temp, rh), 1)},
            "TempUnit": "C",
        }
        canonical = {"pm2_5": pm25, "pm10": pm10, "temperature": temp, "relative_humidity": rh}
        return [self._sensor(now, body, canonical)]


class TasmotaPlug(_Tasmota):
    """A Tasmota power-monitoring plug: ``ENERGY`` with Total/Today/Yesterday in kWh."""

    def __init__(self, source: ValueSource, name: str = "tasmota-plug", **kw: Any) -> None:
        super().__init__(source, name, **kw)
        self._start_stamp: str | None = None

    def _midnight(self, t: float, days_back: int = 0) -> float:
        local = datetime.fromtimestamp(t, self.zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight.timestamp() - days_back * 86400.0

    def messages(self, now: float) -> list[MqttMessage]:
        v = self.source(now)
        total = float(v["active_energy_import"])
        m0 = self._midnight(now)
        at_m0 = float(self.source(m0)["active_energy_import"])
        at_m1 = float(self.source(m0 - 86400.0)["active_energy_import"])
        if self._start_stamp is None:
            self._start_stamp = self._local_iso(now - 86400.0 * 400)
        power = round(float(v["active_power"]))
        volts = round(float(v["voltage"]))
        amps = _r(v["current"], 3)
        apparent = round(volts * amps)
        factor = _r(power / apparent, 2) if apparent else 0.0
        reactive = round(math.sqrt(max(0.0, apparent**2 - power**2)))
        body = {
            "ENERGY": {
                "TotalStartTime": self._start_stamp,
                "Total": _r(total, 3),
                "Yesterday": _r(max(0.0, at_m0 - at_m1), 3),
                "Today": _r(max(0.0, total - at_m0), 3),
                "Period": 0,
                "Power": power,
                "ApparentPower": apparent,
                "ReactivePower": reactive,
                "Factor": factor,
                "Voltage": volts,
                "Current": amps,
            }
        }
        canonical = {"active_energy_import": _r(total, 3), "active_power": float(power),
                     "voltage": float(volts), "current": amps}  # fmt: skip
        return [self._sensor(now, body, canonical)]


def _dew(t: float, rh: float) -> float:
    """Magnus dew point (°C), as Tasmota reports with DHT/AM2301 sensors."""
    rh = max(1.0, min(100.0, rh))
    g = math.log(rh / 100.0) + 17.62 * t / (243.12 + t)
    return 243.12 * g / (17.62 - g)


class SensorCommunityNode(MqttDevice):
    """An airRohr (Sensor.Community) node with SDS011 + BME280; values are strings."""

    firmware = "sensor.community"
    SOFTWARE_VERSION = "NRZ-2020-133"

    def __init__(
        self, source: ValueSource, name: str = "1234567", *, esp8266id: str | None = None,
        **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(source, name, **kw)
        self.esp8266id = esp8266id or "".join(ch for ch in name if ch.isdigit()) or "1234567"

    @property
    def topic(self) -> str:
        return f"sensor.community/esp8266-{self.esp8266id}"

    def topics(self) -> list[str]:
        return [self.topic]

    def messages(self, now: float) -> list[MqttMessage]:
        v = self.source(now)
        p1, p2 = _r(v["pm10"], 2), _r(v["pm2_5"], 2)
        temp, rh = _r(v["temperature"], 2), _r(v["relative_humidity"], 2)
        samples = 600_000 + self._rng.randrange(400_000)
        data = [
            ("SDS_P1", f"{p1:.2f}"),
            ("SDS_P2", f"{p2:.2f}"),
            ("BME280_temperature", f"{temp:.2f}"),
            ("BME280_pressure", f"{100800 + self._rng.uniform(-400, 400):.2f}"),
            ("BME280_humidity", f"{rh:.2f}"),
            ("samples", str(samples)),
            ("min_micro", str(self._rng.randrange(150, 250))),
            ("max_micro", str(self._rng.randrange(20_000, 30_000))),
            ("interval", str(int(self.interval_s * 1000))),
            ("signal", str(-self._rng.randrange(45, 85))),
        ]
        payload = json.dumps({
            "esp8266id": self.esp8266id,
            "software_version": self.SOFTWARE_VERSION,
            "sensordatavalues": [{"value_type": k, "value": s} for k, s in data],
        }, separators=(",", ":"))  # fmt: skip
        canonical = {"pm10": p1, "pm2_5": p2, "temperature": temp, "relative_humidity": rh}
        return [MqttMessage(now, self.topic, payload, values=canonical)]


class _KotaJson(MqttDevice):
    """Custom firmware: ``<prefix>/<name>`` JSON plus ``<prefix>/<name>/status`` online/offline."""

    prefix = "kota"

    @property
    def topic(self) -> str:
        return f"{self.prefix}/{self.name}"

    @property
    def availability(self) -> tuple[str, str, str]:
        return (f"{self.topic}/status", "online", "offline")

    def topics(self) -> list[str]:
        return [self.topic, f"{self.topic}/status"]

    def _json(self, now: float, body: dict[str, Any], values: dict[str, float],
              stamp: str) -> MqttMessage:  # fmt: skip
        payload = json.dumps(body, separators=(",", ":"))
        return MqttMessage(now, self.topic, payload, values=values, device_time=stamp)


class GasSensor(_KotaJson):
    """Electrochemical gas sensor: NO2/O3/SO2 in ppb, CO in ppm, epoch-ms timestamp ``ts``."""

    prefix = "kota/gas"

    def messages(self, now: float) -> list[MqttMessage]:
        v = self.source(now)
        t, fault = self._clock(now)
        body: dict[str, Any] = {"device": self.name, "ts": int(t * 1000)}
        canonical: dict[str, float] = {}
        for q in ("no2", "o3", "so2"):
            if q in v:
                ppb = _r(ugm3_to_ppb(q, float(v[q])), 1)
                body[f"{q}_ppb"] = ppb
                canonical[q] = ppb_to_ugm3(q, ppb)
        if "co" in v:
            ppm = _r(float(v["co"]) * MOLAR_VOLUME / MOLAR_MASS["co"], 3)
            body["co_ppm"] = ppm
            canonical["co"] = ppm * MOLAR_MASS["co"] / MOLAR_VOLUME
        msg = self._json(now, body, canonical, str(body["ts"]))
        return [_with_faults(msg, self._note_clock(now, fault, msg.topic))]


class WaterMeterMqtt(_KotaJson):
    """Smart water meter: cumulative volume in litres, flow in L/min, ISO-8601 UTC time."""

    prefix = "kota/water"

    def messages(self, now: float) -> list[MqttMessage]:
        v = self.source(now)
        t, fault = self._clock(now)
        litres = math.floor(float(v["water_volume"]) * 1000.0)  # registers truncate
        lpm = _r(float(v["water_flow"]) * 1000.0 / 60.0, 2)
        stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"meter": self.name, "time": stamp, "volume_l": litres, "flow_lpm": lpm}
        canonical = {"water_volume": litres / 1000.0, "water_flow": lpm * 60.0 / 1000.0}
        msg = self._json(now, body, canonical, stamp)
        return [_with_faults(msg, self._note_clock(now, fault, msg.topic))]


class EnergyMeterMqtt(_KotaJson):
    """Smart energy meter: import register in Wh, power in kW, epoch-seconds ``ts``."""

    prefix = "kota/energy"

    def messages(self, now: float) -> list[MqttMessage]:
        v = self.source(now)
        t, fault = self._clock(now)
        wh = math.floor(float(v["active_energy_import"]) * 1000.0)
        kw = _r(float(v["active_power"]) / 1000.0, 3)
        volts, amps, hz = _r(v["voltage"], 1), _r(v["current"], 2), _r(v["frequency"], 2)
        body = {
            "id": self.name, "ts": int(t), "energy_wh": wh, "power_kw": kw,
            "voltage_v": volts, "current_a": amps, "freq_hz": hz,
        }  # fmt: skip
        canonical = {
            "active_energy_import": wh / 1000.0, "active_power": kw * 1000.0,
            "voltage": volts, "current": amps, "frequency": hz,
        }  # fmt: skip
        msg = self._json(now, body, canonical, str(int(t)))
        return [_with_faults(msg, self._note_clock(now, fault, msg.topic))]


def _with_faults(msg: MqttMessage, faults: tuple[str, ...]) -> MqttMessage:
    if not faults:
        return msg
    return MqttMessage(msg.time, msg.topic, msg.payload, msg.retain, msg.values,
                       (*msg.faults, *faults), msg.device_time)  # fmt: skip


#: Device type names used in sim.toml -> (class, profile kind of its value source).
MQTT_DEVICE_TYPES: dict[str, tuple[type[MqttDevice], str]] = {
    "esphome": (EspHomeNode, "air"),
    "tasmota_sensor": (TasmotaSensor, "air"),
    "tasmota_plug": (TasmotaPlug, "energy_1p"),
    "sensor_community": (SensorCommunityNode, "air"),
    "gas": (GasSensor, "gas"),
    "water_meter": (WaterMeterMqtt, "water"),
    "energy_meter": (EnergyMeterMqtt, "energy_1p"),
}


# --------------------------------------------------------------------------------------------
# Connecting devices to a broker
# --------------------------------------------------------------------------------------------


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` -> (host, port); port defaults to 1883."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "tcp") or not u.hostname:
        raise ValueError(f"MQTT URL {url!r} must look like mqtt://host:port")
    return u.hostname, u.port or 1883


def connect_device(device: MqttDevice, url: str, *, timeout: float = 10.0) -> Any:
    """A paho-mqtt 2.x client for ``device``: its own connection, LWT set, birth on connect.

    The network loop runs in paho's thread (``loop_start``); reconnects re-publish the
    birth message. Raises ConnectionError if the broker does not accept within ``timeout``.
    """
    import paho.mqtt.client as mqtt

    host, port = parse_mqtt_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device.client_id,
                         protocol=mqtt.MQTTv311)  # fmt: skip
    av = device.availability
    if av is not None:
        client.will_set(av[0], av[2], qos=QOS, retain=True)
    ready = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            device.publish_birth(c)
            ready.set()

    client.on_connect = on_connect
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as err:
        raise ConnectionError(f"MQTT broker {url} unreachable: {err}") from None
    client.loop_start()
    if not ready.wait(timeout):
        client.loop_stop()
        client.disconnect()
        raise ConnectionError(f"MQTT broker {url} did not accept {device.client_id!r}")
    return client


def disconnect_device(device: MqttDevice, client: Any, *, timeout: float = 5.0) -> None:
    """Clean shutdown: publish the offline status (retained), flush, disconnect, stop loop."""
    try:
        if client.is_connected():
            info = device.publish_offline(client)
            if info is not None:
                info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):
        pass
    finally:
        client.disconnect()
        client.loop_stop()
