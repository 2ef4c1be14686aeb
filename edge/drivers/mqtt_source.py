"""Readings from MQTT devices on the Pi's LOCAL broker (ESPHome, Tasmota, Sensor.Community...).

The driver subscribes (paho-mqtt 2.x, CallbackAPIVersion.VERSION2, QoS 1) to the topics of its
rules and maps every payload to samples. A rule has:

* ``topic``: an MQTT topic with named parts, ``tele/{device}/SENSOR``,
  ``{node}/sensor/{sensor}/state``, ``sensor.community/esp8266-{id}``: a ``{name}`` matches
  (part of) one level; ``+`` and a final ``#`` work as in MQTT.
* ``device_id``: a template over those names (``"{device}"``, ``"sc-{id}"``).
* ``format``: ``json`` or ``plain`` (the payload is the number, ESPHome style).
* ``values``: per quantity, ``path`` (JSON path: ``ENERGY.Total``, ``SDS0X1["PM2.5"]``,
  ``sensordatavalues[value_type=SDS_P2].value``, ``list[0]``), ``quantity`` (catalogue
  name), ``unit`` (the DECLARED unit of the payload, UCUM: ``ppb``, ``[degF]``, ``W.h``,
  ``L``; default the quantity's canonical unit; the gateway converts), optional ``scale``
  (multiplier applied here, e.g. 0.1 for tenths), optional ``match`` (``{sensor =
  "pm_2_5"}``: the value applies only when the topic's named parts are equal), optional
  ``unit_path`` + ``unit_map`` (Tasmota's ``TempUnit`` "C"/"F" -> "Cel"/"[degF]").
* ``time_path`` + ``time_format`` (``iso``, ``epoch_s``, ``epoch_ms``): the device's own
  timestamp. An ISO time without offset (Tasmota's ``Time``) is local time in the agent city's
  IANA zone (gateway.schema.load_cities). When it differs from the read time by more than
  ``max_clock_skew`` (300 s), the READ time is used and the samples are flagged CLOCK_SUSPECT
  (a device that lost NTP reports 1970 or a wrong zone; its reading is still current). If the
  agent clock itself is unset (before 2024) and the device time is sane, the device time is
  used. Without ``time_path``: the read time (flagged CLOCK_SUSPECT when the Pi's clock is
  unset).

Rules are tried in order (your own ``rules`` first, then the ``presets``); the first rule whose
topic matches and that has a value for the message handles it. Retained messages delivered on
subscribe are stale state and are skipped (``ignore_retained``).

Reject reasons (counted per device id of the topic): ``bad_utf8``, ``bad_json``, ``no_value``
(no configured path found), ``bad_value`` (not a number), ``bad_time``, ``bad_device_id``,
``unmapped`` (a topic of a rule, e.g. an ESPHome sensor without a value rule), ``retained``,
``queue_full`` (the driver thread could not keep up).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt

from edge.drivers.base import (
    CLOCK_SANE_AFTER_S,
    AgentContext,
    DeviceStats,
    DriverSpec,
    Options,
    Sink,
    deliver,
    device_options,
    now_us,
)
from edge.drivers.metrics import DriverMetrics, driver_metrics
from gateway.schema import QUANTITIES, QualityFlag, Sample, load_cities
from gateway.schema.uplink import ID_RE, to_epoch_us

log = logging.getLogger("kota.edge.drivers.mqtt")

KIND = "mqtt"
MAX_DEVICES = 1000  # distinct device ids tracked (bounds metric label cardinality)

# -- JSON paths -----------------------------------------------------------------------------

_PATH_TOKEN = re.compile(
    r"""(?:(?P<dot>^|\.)(?P<name>[^.\[\]"]+))"""
    r"""|\[(?P<index>\d+)\]"""
    r"""|\["(?P<quoted>[^"]*)"\]"""
    r"""|\[(?P<fkey>[^=\]"]+)=(?P<fvalue>[^\]]*)\]"""
)


def compile_path(path: str) -> tuple[tuple[str, Any, Any], ...]:
    """``a.b["c.d"][0][k=v]`` -> tokens (("key", "a"), ..., ("filter", "k", "v"))."""
    tokens: list[tuple[str, Any, Any]] = []
    pos = 0
    while pos < len(path):
        m = _PATH_TOKEN.match(path, pos)
        if m is None or m.end() == pos or (m.group("name") and pos > 0 and not m.group("dot")):
            raise ValueError(f"cannot parse JSON path {path!r} at character {pos}")
        if m.group("name") is not None:
            tokens.append(("key", m.group("name"), None))
        elif m.group("index") is not None:
            tokens.append(("index", int(m.group("index")), None))
        elif m.group("quoted") is not None:
            tokens.append(("key", m.group("quoted"), None))
        else:
            tokens.append(("filter", m.group("fkey"), m.group("fvalue")))
        pos = m.end()
    if not tokens:
        raise ValueError("empty JSON path")
    return tuple(tokens)


_MISSING = object()


def resolve(doc: Any, tokens: Sequence[tuple[str, Any, Any]]) -> Any:
    """The value at ``tokens`` in ``doc``, or _MISSING."""
    cur = doc
    for kind, a, b in tokens:
        if kind == "key":
            if not isinstance(cur, dict) or a not in cur:
                return _MISSING
            cur = cur[a]
        elif kind == "index":
            if not isinstance(cur, list) or a >= len(cur):
                return _MISSING
            cur = cur[a]
        else:
            if not isinstance(cur, list):
                return _MISSING
            cur = next((el for el in cur if isinstance(el, dict) and str(el.get(a)) == b), _MISSING)
            if cur is _MISSING:
                return _MISSING
    return cur


def to_number(value: Any) -> float | None:
    """A finite float from a JSON number or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


# -- topics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicPattern:
    """An MQTT topic with ``{name}`` parts: the subscription filter and a matcher."""

    pattern: str
    filter: str
    regex: re.Pattern[str]
    names: tuple[str, ...]

    @classmethod
    def parse(cls, pattern: str) -> TopicPattern:
        levels = pattern.split("/")
        filt: list[str] = []
        rx: list[str] = []
        names: list[str] = []
        for i, level in enumerate(levels):
            if level == "#":
                if i != len(levels) - 1:
                    raise ValueError("'#' must be the last level")
                filt.append("#")
                rx.append(".*")
                continue
            if level == "+":
                filt.append("+")
                rx.append("[^/]*")
                continue
            if "#" in level or "+" in level:
                raise ValueError(f"'+' and '#' must be whole levels, not {level!r}")
            parts = re.split(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", level)
            if len(parts) == 1:
                if "{" in level or "}" in level:
                    raise ValueError(f"bad named part in {level!r}")
                filt.append(level)
                rx.append(re.escape(level))
                continue
            filt.append("+")
            piece = ""
            for j, part in enumerate(parts):
                if j % 2:
                    if part in names:
                        raise ValueError(f"name {{{part}}} used twice")
                    names.append(part)
                    piece += f"(?P<{part}>[^/]+?)"
                else:
                    if "{" in part or "}" in part:
                        raise ValueError(f"bad named part in {level!r}")
                    piece += re.escape(part)
            rx.append(piece)
        regex = re.compile("^" + "/".join(rx) + "$")
        return cls(pattern, "/".join(filt), regex, tuple(names))

    def match(self, topic: str) -> dict[str, str] | None:
        m = self.regex.match(topic)
        return None if m is None else m.groupdict()


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueRule:
    """One quantity taken from a payload."""

    quantity: str
    unit: str
    path: tuple[tuple[str, Any, Any], ...] | None = None  # None: the plain payload
    scale: float = 1.0
    match: Mapping[str, str] = field(default_factory=dict)
    unit_path: tuple[tuple[str, Any, Any], ...] | None = None
    unit_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """A topic pattern, the device id template, the payload format and its values."""

    topic: TopicPattern
    device_id: str
    format: str = "json"
    values: tuple[ValueRule, ...] = ()
    time_path: tuple[tuple[str, Any, Any], ...] | None = None
    time_format: str = "iso"
    name: str = ""


def _v(quantity: str, path: str | None = None, unit: str | None = None, **kw: Any) -> ValueRule:
    return ValueRule(
        quantity,
        unit or QUANTITIES[quantity].ucum,
        None if path is None else compile_path(path),
        **kw,
    )


_TEMP_PATH = compile_path("TempUnit")
_TEMP_MAP = {"C": "Cel", "F": "[degF]"}


def _esphome(sensor: str, quantity: str, unit: str | None = None) -> ValueRule:
    return _v(quantity, unit=unit, match={"sensor": sensor})


#: Ready rule sets, used by name in ``presets = [...]``.
PRESETS: dict[str, tuple[Rule, ...]] = {
    # ESPHome MQTT: <node>/sensor/<object_id>/state, plain number, no time. Object ids of the
    # pmsx003, sds011, dht/bme280 components' usual names; units as ESPHome's defaults (°C).
    "esphome": (
        Rule(
            TopicPattern.parse("{node}/sensor/{sensor}/state"),
            "{node}",
            "plain",
            (
                _esphome("pm_1_0", "pm1"),
                _esphome("pm_2_5", "pm2_5"),
                _esphome("pm_10_0", "pm10"),
                _esphome("pm10", "pm10"),
                _esphome("pm2_5", "pm2_5"),
                _esphome("temperature", "temperature"),
                _esphome("humidity", "relative_humidity"),
                _esphome("co2", "co2"),
            ),
            name="esphome",
        ),
    ),
    # Tasmota telemetry: tele/<topic>/SENSOR JSON, "Time" = local time without offset.
    "tasmota": (
        Rule(
            TopicPattern.parse("tele/{device}/SENSOR"),
            "{device}",
            "json",
            (
                _v("pm2_5", 'SDS0X1["PM2.5"]'),
                _v("pm10", "SDS0X1.PM10"),
                _v("pm1", 'PMS5003["PM1"]'),
                _v("pm2_5", 'PMS5003["PM2.5"]'),
                _v("pm10", "PMS5003.PM10"),
                _v("temperature", "AM2301.Temperature", unit_path=_TEMP_PATH, unit_map=_TEMP_MAP),
                _v("relative_humidity", "AM2301.Humidity"),
                _v("temperature", "BME280.Temperature", unit_path=_TEMP_PATH, unit_map=_TEMP_MAP),
                _v("relative_humidity", "BME280.Humidity"),
                _v("active_energy_import", "ENERGY.Total"),
                _v("active_power", "ENERGY.Power"),
                _v("voltage", "ENERGY.Voltage"),
                _v("current", "ENERGY.Current"),
            ),
            time_path=compile_path("Time"),
            time_format="iso",
            name="tasmota",
        ),
    ),
    # Sensor.Community (airRohr) JSON forwarded to MQTT: every value a string.
    "sensor_community": (
        Rule(
            TopicPattern.parse("sensor.community/esp8266-{id}"),
            "sc-{id}",
            "json",
            tuple(
                _v(q, f"sensordatavalues[value_type={vt}].value")
                for vt, q in (
                    ("SDS_P1", "pm10"),
                    ("SDS_P2", "pm2_5"),
                    ("PMS_P0", "pm1"),
                    ("PMS_P1", "pm10"),
                    ("PMS_P2", "pm2_5"),
                    ("BME280_temperature", "temperature"),
                    ("BME280_humidity", "relative_humidity"),
                    ("temperature", "temperature"),
                    ("humidity", "relative_humidity"),
                )
            ),
            name="sensor_community",
        ),
    ),
}


# -- the driver -----------------------------------------------------------------------------


class MqttSourceDriver:
    """Subscribes to the local broker and turns matching messages into samples."""

    kind = KIND

    def __init__(
        self,
        device_id: str,
        ctx: AgentContext,
        *,
        broker: str = "mqtt://127.0.0.1:1883",
        rules: Sequence[Rule],
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        qos: int = 1,
        keepalive: int = 30,
        ignore_retained: bool = True,
        max_clock_skew: float = 300.0,
        zone: ZoneInfo | None = None,
        queue_size: int = 10_000,
        reopen_max_delay: float = 30.0,
        metrics: DriverMetrics | None = None,
    ) -> None:
        self.device_id = device_id
        self.ctx = ctx
        self.broker = broker
        self.rules = tuple(rules)
        self.username, self.password = username, password
        self.client_id = client_id or f"kota-edge-{ctx.agent_id}-{device_id}"
        self.qos = qos
        self.keepalive = keepalive
        self.ignore_retained = ignore_retained
        self.max_clock_skew = max_clock_skew
        self.zone = zone or ZoneInfo("UTC")
        self.reopen_max_delay = reopen_max_delay
        self.metrics = metrics or driver_metrics()
        self.stats = DeviceStats(KIND, device_id, self.metrics)  # the connection itself
        self.devices: dict[str, DeviceStats] = {}
        self.messages = 0
        self._queue: queue.Queue[tuple[str, bytes, bool]] = queue.Queue(queue_size)
        self.subscribed = threading.Event()  # set once the broker acknowledged the filters
        self._state = "starting"

    # -- paho callbacks (paho's network thread) ----------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.stats.last_error = f"connect refused: {reason}"
            return
        filters = sorted({rule.topic.filter for rule in self.rules})
        client.subscribe([(f, self.qos) for f in filters])
        self._state = "ok"

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, _codes: Any, _p: Any) -> None:
        self.subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.subscribed.clear()
        if self._state != "stopped":
            self._state = "reopening"
            self.stats.last_error = f"disconnected: {reason}"
            self.stats.reopen()

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._state = "reopening"
        self.stats.last_error = f"cannot connect to {self.broker}"
        self.stats.reopen()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._queue.put_nowait((msg.topic, bytes(msg.payload), bool(msg.retain)))
        except queue.Full:
            self._device_stats(self.device_id).reject("queue_full")

    # -- Driver ------------------------------------------------------------------------
    def run(self, sink: Sink, stop: threading.Event) -> None:
        url = urlparse(self.broker)
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.username:
            client.username_pw_set(self.username, self.password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(self.reopen_max_delay)))
        client.connect_async(url.hostname or "127.0.0.1", url.port or 1883, self.keepalive)
        client.loop_start()
        try:
            while not stop.is_set():
                try:
                    topic, payload, retained = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                try:
                    self.handle(topic, payload, retained, sink)
                except Exception as err:
                    self.stats.last_error = f"internal: {err!r}"
                    log.exception("%s: message on %s failed", self.device_id, topic)
        finally:
            self._state = "stopped"
            client.disconnect()
            client.loop_stop()

    def health(self) -> dict[str, object]:
        out = self.stats.snapshot(self._state)
        out["broker"] = self.broker
        out["messages"] = self.messages
        out["devices"] = {d: s.snapshot("ok") for d, s in sorted(self.devices.items())}
        return out

    # -- message handling (also usable without a broker) -------------------------------
    def _device_stats(self, device: str) -> DeviceStats:
        stats = self.devices.get(device)
        if stats is None:
            if len(self.devices) >= MAX_DEVICES:
                return self.stats
            stats = self.devices[device] = DeviceStats(KIND, device, self.metrics)
        return stats

    def handle(self, topic: str, payload: bytes, retained: bool, sink: Sink) -> int:
        """Map one message; returns the number of samples delivered."""
        self.messages += 1
        first_reason = None
        for rule in self.rules:
            parts = rule.topic.match(topic)
            if parts is None:
                continue
            device = _render(rule.device_id, parts)
            stats = self._device_stats(device if ID_RE.match(device) else self.device_id)
            if not ID_RE.match(device):
                stats.reject("bad_device_id")
                return 0
            if retained and self.ignore_retained:
                stats.reject("retained")
                return 0
            result = self._apply(rule, parts, payload)
            if isinstance(result, str):
                # another rule (e.g. a preset after your own) may still know this message
                first_reason = first_reason or (result, stats)
                continue
            samples, bad_values = result
            for _ in range(bad_values):
                stats.reject("bad_value")
            if not samples:
                first_reason = first_reason or ("bad_value" if bad_values else "no_value", stats)
                continue
            if deliver(sink, device, samples, stats):
                stats.ok(len(samples))
            return len(samples)
        if first_reason is not None:
            reason, stats = first_reason
            if reason != "bad_value":
                stats.reject(reason)
        return 0

    def _apply(
        self, rule: Rule, parts: Mapping[str, str], payload: bytes
    ) -> tuple[list[Sample], int] | str:
        values = [v for v in rule.values if all(parts.get(k) == x for k, x in v.match.items())]
        if not values:
            return "unmapped"
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return "bad_utf8"
        doc: Any = text
        if rule.format == "json":
            try:
                doc = json.loads(text)
            except (ValueError, RecursionError):
                return "bad_json"
        read_us, flags = now_us(self.ctx.clock)
        observed_us = read_us
        if rule.time_path is not None and rule.format == "json":
            device_us = self._device_time(resolve(doc, rule.time_path), rule.time_format)
            if device_us is None:
                return "bad_time"
            observed_us, flags = self._choose_time(device_us, read_us, flags)
        samples: list[Sample] = []
        bad = 0
        found = False
        for v in values:
            raw = doc if v.path is None else resolve(doc, v.path)
            if raw is _MISSING:
                continue
            found = True
            number = to_number(raw)
            if number is None:
                bad += 1
                continue
            unit = v.unit
            if v.unit_path is not None:
                given = resolve(doc, v.unit_path)
                if isinstance(given, str) and given in v.unit_map:
                    unit = v.unit_map[given]
            samples.append(Sample(v.quantity, number * v.scale, unit, observed_us, flags))
        if not found:
            return "no_value"
        return samples, bad

    def _device_time(self, raw: Any, fmt: str) -> int | None:
        if raw is _MISSING or isinstance(raw, bool):
            return None
        try:
            if fmt == "iso":
                if not isinstance(raw, str) or len(raw) > 40:
                    return None
                moment = datetime.fromisoformat(raw)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=self.zone)
                return to_epoch_us(moment.astimezone(UTC))
            number = to_number(raw)
            if number is None:
                return None
            seconds = number / 1000 if fmt == "epoch_ms" else number
            if not 0 <= seconds < 4102444800:  # before 2100
                return None
            return round(seconds * 1_000_000)
        except (ValueError, OverflowError):
            return None

    def _choose_time(self, device_us: int, read_us: int, read_flags: int) -> tuple[int, int]:
        """Device time if it agrees with the read time; else read time + CLOCK_SUSPECT."""
        device_sane = device_us >= CLOCK_SANE_AFTER_S * 1_000_000
        if read_flags:  # the Pi's clock is unset: trust a sane device clock
            return (device_us, 0) if device_sane else (read_us, read_flags)
        if device_sane and abs(device_us - read_us) <= self.max_clock_skew * 1_000_000:
            return device_us, 0
        return read_us, int(QualityFlag.CLOCK_SUSPECT)


def _render(template: str, parts: Mapping[str, str]) -> str:
    return template.format_map(dict(parts))


# -- config ---------------------------------------------------------------------------------

SAMPLE_CONFIG = """\
[[devices]]
kind = "mqtt"
## The MQTT source itself (connection health, reopens); readings use the rules' device ids.
device_id = "bkk-mqtt-local"
## The Pi's own broker, where ESPHome/Tasmota/bridges publish.
# broker = "mqtt://127.0.0.1:1883"
# username = ""
# password = ""
# client_id = "kota-edge-<agent_id>-<device_id>"
# qos = 1
# keepalive = 30
## Ready rule sets: "esphome", "tasmota", "sensor_community". Your rules are tried first.
presets = ["tasmota", "sensor_community"]
## Skip retained messages delivered on subscribe (stale state, e.g. ESPHome's).
# ignore_retained = true
## Device times further than this from the read time: read time + CLOCK_SUSPECT instead.
# max_clock_skew = 300.0
# reopen_max_delay = 30.0

## An ESPHome node whose temperature sensor is set up in °F (the payload has no unit).
[[devices.rules]]
topic = "{node}/sensor/{sensor}/state"
device_id = "{node}"
format = "plain"                       # json | plain
values = [
  { match = { sensor = "temperature" }, quantity = "temperature", unit = "[degF]" },
  { match = { sensor = "pm_2_5" }, quantity = "pm2_5" },
]

## Custom JSON firmware: ppb, epoch milliseconds.
[[devices.rules]]
topic = "kota/gas/{name}"
device_id = "{name}"
time_path = "ts"
time_format = "epoch_ms"               # iso (no offset = city local time) | epoch_s | epoch_ms
values = [
  { path = "no2_ppb", quantity = "no2", unit = "ppb" },
  { path = "co_ppm", quantity = "co", unit = "ppm" },
  # { path = "raw.tenths", quantity = "temperature", scale = 0.1 },
  # { path = 'SDS0X1["PM2.5"]', quantity = "pm2_5" },
  # { path = "sensordatavalues[value_type=SDS_P2].value", quantity = "pm2_5" },
]
"""


def _value_rule(o: Options, prefix: str, raw: Any, names: Sequence[str], fmt: str) -> ValueRule:
    v = Options(raw, prefix)
    quantity = v.get_str("quantity")
    if quantity not in QUANTITIES:
        raise v.error("quantity", f"unknown quantity {quantity!r}; see `kota quantities`")
    path = v.get_str("path", None)
    if path is None and fmt == "json":
        raise v.error("path", 'is required for format = "json"')
    if path is not None and fmt == "plain":
        raise v.error("path", 'must not be set for format = "plain"')
    try:
        tokens = None if path is None else compile_path(path)
        unit_path = v.get_str("unit_path", None)
        unit_tokens = None if unit_path is None else compile_path(unit_path)
    except ValueError as err:
        raise v.error("path", str(err)) from None
    unit = v.get_str("unit", QUANTITIES[quantity].ucum)
    if len(unit) > 32:
        raise v.error("unit", "at most 32 characters")
    match = v.raw("match", {})
    if not isinstance(match, Mapping) or not all(isinstance(x, str) for x in match.values()):
        raise v.error("match", "must be a table of topic name = string")
    for key in match:
        if key not in names:
            raise v.error(f"match.{key}", f"is not a {{name}} of the topic ({', '.join(names)})")
    unit_map = v.raw("unit_map", {})
    if not isinstance(unit_map, Mapping):
        raise v.error("unit_map", "must be a table")
    scale = v.get_float("scale", 1.0)
    v.finish()
    return ValueRule(quantity, unit, tokens, scale, dict(match), unit_tokens, dict(unit_map))


def _rule(o: Options, i: int, raw: Any) -> Rule:
    r = Options(raw, f"rules[{i}].")
    try:
        topic = TopicPattern.parse(r.get_str("topic"))
    except ValueError as err:
        raise r.error("topic", str(err)) from None
    template = r.get_str("device_id")
    try:
        template.format_map({n: "x" for n in topic.names})
    except (KeyError, ValueError, IndexError) as err:
        raise r.error("device_id", f"template {template!r} uses an unknown name {err}") from None
    fmt = r.get_str("format", "json", choices=("json", "plain"))
    raw_values = r.raw("values")
    if not isinstance(raw_values, list) or not raw_values:
        raise r.error("values", "must be a non-empty list of tables")
    values = tuple(
        _value_rule(r, f"rules[{i}].values[{j}].", item, topic.names, fmt)
        for j, item in enumerate(raw_values)
    )
    time_path = r.get_str("time_path", None)
    time_format = r.get_str("time_format", "iso", choices=("iso", "epoch_s", "epoch_ms"))
    try:
        time_tokens = None if time_path is None else compile_path(time_path)
    except ValueError as err:
        raise r.error("time_path", str(err)) from None
    if time_path is not None and fmt == "plain":
        raise r.error("time_path", 'needs format = "json"')
    r.finish()
    return Rule(topic, template, fmt, values, time_tokens, time_format, name=f"rules[{i}]")


def build(table: Mapping[str, Any], ctx: AgentContext) -> MqttSourceDriver:
    """Validate a [[devices]] table of kind mqtt and build the driver."""
    o = device_options(table)
    device_id = o.get_ident("device_id")
    broker = o.get_str("broker", "mqtt://127.0.0.1:1883")
    url = urlparse(broker)
    if url.scheme not in ("mqtt", "tcp") or not url.hostname:
        raise o.error("broker", f"must look like mqtt://host:port, got {broker!r}")
    try:
        url.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise o.error("broker", str(err)) from None
    presets = o.raw("presets", [])
    if not isinstance(presets, list) or not all(isinstance(p, str) for p in presets):
        raise o.error("presets", "must be a list of names")
    for name in presets:
        if name not in PRESETS:
            raise o.error("presets", f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    raw_rules = o.raw("rules", [])
    if not isinstance(raw_rules, list):
        raise o.error("rules", "must be a list of [[devices.rules]] tables")
    rules = [_rule(o, i, raw) for i, raw in enumerate(raw_rules)]
    for name in presets:
        rules.extend(PRESETS[name])
    if not rules:
        raise o.error("rules", "no rules and no presets: nothing to subscribe to")
    zone = None
    if any(r.time_path is not None and r.time_format == "iso" for r in rules):
        city = load_cities().get(ctx.city)
        if city is None:
            raise o.error(
                "rules",
                f"city {ctx.city!r} is not in the city registry: local "
                "device times cannot be converted",
            )
        zone = city.zone
    kwargs = {
        "username": o.get_str("username", None),
        "password": o.get_str("password", None),
        "client_id": o.get_str("client_id", None),
        "qos": o.get_int("qos", 1, min=0, max=1),
        "keepalive": o.get_int("keepalive", 30, min=5),
        "ignore_retained": o.get_bool("ignore_retained", True),
        "max_clock_skew": o.get_float("max_clock_skew", 300.0, min=1.0),
        "reopen_max_delay": o.get_float("reopen_max_delay", 30.0, min=1.0),
    }
    o.finish()
    return MqttSourceDriver(device_id, ctx, broker=broker, rules=rules, zone=zone, **kwargs)


SPEC = DriverSpec(kind=KIND, sample_config=SAMPLE_CONFIG, build=build)

__all__ = [
    "PRESETS",
    "SPEC",
    "MqttSourceDriver",
    "Rule",
    "TopicPattern",
    "ValueRule",
    "compile_path",
    "resolve",
]
