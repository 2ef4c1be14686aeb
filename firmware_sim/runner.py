"""Run a whole simulated deployment from a ``sim.toml``: serial devices on ptys, MQTT devices.

    from firmware_sim.runner import run
    run(Path("firmware_sim/examples/sim.toml"))          # until Ctrl-C

or ``kota sim run --config sim.toml``. For every device it prints the pty path (serial) or the
MQTT topics (MQTT) it exposes, one line each; ``on_ready`` receives the same as
:class:`Endpoint` records once everything is up. Ctrl-C or ``stop_event`` stops it cleanly:
MQTT devices publish their offline status and disconnect, every pty is closed and its temp dir
removed, no thread is left running.

The config is validated when loaded (:func:`load_config`); a bad setting raises
``kota_cli.errors.ConfigError`` with one line naming the file and the setting, e.g.
``sim.toml: devices[2].kind: unknown kind 'pms9000' (expected one of ...)``.
See docs/simulator.md for the sim.toml reference and firmware_sim/examples/sim.toml.

Broker: the ``mqtt_url`` argument, else the ``KOTA_MQTT_URL`` environment variable, else
``[mqtt] url`` in the config, else ``mqtt://127.0.0.1:1883``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from firmware_sim.clock import Clock, RealClock, VirtualClock
from firmware_sim.mqtt_devices import (
    MQTT_DEVICE_TYPES,
    MqttDevice,
    MqttFaults,
    connect_device,
    disconnect_device,
    parse_mqtt_url,
)
from firmware_sim.profiles import FaultLog, ValueFaults, city_profile, make_source, parse_kind
from kota_cli.errors import ConfigError, KotaError

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"

#: Serial device kinds -> default value-source kind (see firmware_sim.profiles.KINDS).
SERIAL_KINDS: dict[str, str] = {
    "pms5003": "pm",
    "sds011": "pm",
    "traffic_nmea": "traffic:{lanes}",
    "modbus:s8": "co2",
    "modbus:sdm120": "energy_1p",
    "modbus:sdm630": "energy_3p",
    "modbus:thprobe": "th",
    "modbus:watermeter": "water",
}
MQTT_KINDS: dict[str, str] = {f"mqtt:{k}": v[1] for k, v in MQTT_DEVICE_TYPES.items()}
ALL_KINDS = (*SERIAL_KINDS, *MQTT_KINDS)

_BYTE_FAULTS = ("bad_checksum", "truncated", "garbled", "dropped", "garbage", "duplicate")
_VALUE_FAULTS = tuple(f.name for f in fields(ValueFaults))
_MQTT_FAULTS = tuple(f.name for f in fields(MqttFaults))
_DEVICE_KEYS = {
    "name", "city", "kind", "profile", "interval_s", "seed", "bus", "address", "lanes",
    "link", "baudrate", "faults", "rollover", "initial_register", "options",
}  # fmt: skip
_TOP_KEYS = {"seed", "mqtt", "clock", "buses", "devices"}
_BUS_KEYS = {"name", "baudrate", "link"}


# --------------------------------------------------------------------------------------------
# Config model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusConfig:
    name: str
    baudrate: int = 9600
    link: str | None = None


@dataclass(frozen=True)
class DeviceConfig:
    index: int
    name: str
    city: str
    kind: str
    profile: str  # value-source kind
    seed: int
    interval_s: float | None = None
    bus: str | None = None
    address: int | None = None
    lanes: int = 1
    link: str | None = None
    baudrate: int | None = None
    value_faults: ValueFaults | None = None
    byte_faults: Mapping[str, float] = field(default_factory=dict)
    mqtt_faults: MqttFaults | None = None
    rollover: float | None = None
    initial_register: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_mqtt(self) -> bool:
        return self.kind.startswith("mqtt:")


@dataclass(frozen=True)
class ClockConfig:
    mode: str = "real"  # real | virtual
    start: float | None = None
    step_s: float = 60.0
    pace_s: float = 0.05  # real seconds between virtual steps


@dataclass(frozen=True)
class SimConfig:
    path: Path
    seed: int
    mqtt_url: str | None
    clock: ClockConfig
    buses: dict[str, BusConfig]
    devices: list[DeviceConfig]


@dataclass(frozen=True)
class Endpoint:
    """What one running device exposes."""

    name: str
    kind: str
    city: str
    transport: str  # "pty" | "mqtt"
    address: str  # pty path (symlink), or MQTT topics separated by spaces
    detail: str = ""  # e.g. "bus bkk-rs485, address 2"

    def line(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return (
            f"{self.name:<22} {self.kind:<22} {self.city}  {self.transport} {self.address}{extra}"
        )


@dataclass
class RunSummary:
    """What a finished run did (returned by :func:`run`)."""

    endpoints: list[Endpoint]
    fault_log: FaultLog
    mqtt_devices: list[MqttDevice]
    serial_devices: list[Any]
    buses: list[Any]


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _expect(where: str, value: Any, types: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value


def _epoch(where: str, value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{where}: give a time zone offset (e.g. 2026-01-01T00:00:00Z)")
        return value.timestamp()
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an ISO-8601 time") from None
        return _epoch(where, dt)
    raise ConfigError(f"{where}: expected a time (ISO-8601 string or epoch seconds)")


def load_config(path: str | Path) -> SimConfig:
    """Read and validate a sim.toml; raises ConfigError with one line naming the setting."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}") from None
    return parse_config(raw, p)


def parse_config(raw: Mapping[str, Any], path: Path) -> SimConfig:
    """Validate an already-parsed config (``path`` names it in messages)."""
    src = str(path)
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"{src}: unknown setting {sorted(unknown)[0]!r} "
                          f"(expected {', '.join(sorted(_TOP_KEYS))})")  # fmt: skip
    seed = _expect(f"{src}: seed", raw.get("seed", 0), int, "an integer")

    mqtt = _expect(f"{src}: mqtt", raw.get("mqtt", {}), dict, "a table")
    for k in mqtt:
        if k != "url":
            raise ConfigError(f"{src}: mqtt.{k}: unknown setting (expected url)")
    url = mqtt.get("url")
    if url is not None:
        _expect(f"{src}: mqtt.url", url, str, "a string")
        try:
            parse_mqtt_url(url)
        except ValueError as err:
            raise ConfigError(f"{src}: mqtt.url: {err}") from None

    c = _expect(f"{src}: clock", raw.get("clock", {}), dict, "a table")
    for k in c:
        if k not in ("mode", "start", "step_s", "pace_s"):
            raise ConfigError(
                f"{src}: clock.{k}: unknown setting (expected mode, start, step_s, pace_s)"
            )
    mode = c.get("mode", "real")
    if mode not in ("real", "virtual"):
        raise ConfigError(f"{src}: clock.mode: {mode!r} is not real or virtual")
    step = float(_expect(f"{src}: clock.step_s", c.get("step_s", 60.0), (int, float), "a number"))
    pace = float(_expect(f"{src}: clock.pace_s", c.get("pace_s", 0.05), (int, float), "a number"))
    if step <= 0 or pace < 0:
        raise ConfigError(f"{src}: clock.step_s must be > 0 and clock.pace_s >= 0")
    start = _epoch(f"{src}: clock.start", c["start"]) if "start" in c else None
    clock = ClockConfig(mode, start, step, pace)

    buses: dict[str, BusConfig] = {}
    for i, b in enumerate(_expect(f"{src}: buses", raw.get("buses", []), list, "an array")):
        where = f"{src}: buses[{i}]"
        _expect(where, b, dict, "a table")
        for k in b:
            if k not in _BUS_KEYS:
                raise ConfigError(
                    f"{where}.{k}: unknown setting (expected {', '.join(sorted(_BUS_KEYS))})"
                )
        name = _expect(f"{where}.name", b.get("name"), str, "a bus name")
        if name in buses:
            raise ConfigError(f"{where}.name: duplicate bus {name!r}")
        baud = _expect(f"{where}.baudrate", b.get("baudrate", 9600), int, "an integer")
        link = b.get("link")
        if link is not None:
            _expect(f"{where}.link", link, str, "a path")
        buses[name] = BusConfig(name, baud, link or None)

    devs_raw = _expect(f"{src}: devices", raw.get("devices", []), list, "an array of tables")
    if not devs_raw:
        raise ConfigError(f"{src}: devices: no devices configured (add [[devices]] tables)")
    devices: list[DeviceConfig] = []
    names: set[str] = set()
    addresses: set[tuple[str, int]] = set()
    for i, d in enumerate(devs_raw):
        dev = _parse_device(src, i, d, seed, buses)
        if dev.name in names:
            raise ConfigError(f"{src}: devices[{i}].name: duplicate device name {dev.name!r}")
        names.add(dev.name)
        if dev.bus is not None and dev.address is not None:
            if (dev.bus, dev.address) in addresses:
                raise ConfigError(f"{src}: devices[{i}].address: {dev.address} is already used "
                                  f"on bus {dev.bus!r}")  # fmt: skip
            addresses.add((dev.bus, dev.address))
        devices.append(dev)
    return SimConfig(path, seed, url, clock, buses, devices)


def _parse_device(
    src: str, i: int, d: Any, seed: int, buses: Mapping[str, BusConfig]
) -> DeviceConfig:
    where = f"{src}: devices[{i}]"
    _expect(where, d, dict, "a table")
    for k in d:
        if k not in _DEVICE_KEYS:
            raise ConfigError(f"{where}.{k}: unknown setting (expected one of "
                              f"{', '.join(sorted(_DEVICE_KEYS))})")  # fmt: skip
    kind = d.get("kind")
    if kind not in ALL_KINDS:
        raise ConfigError(
            f"{where}.kind: unknown kind {kind!r} (expected one of {', '.join(ALL_KINDS)})"
        )
    name = _expect(f"{where}.name", d.get("name"), str, "a device name")
    if not name or any(ch in name for ch in "/#+ "):
        raise ConfigError(f"{where}.name: {name!r} must be non-empty without / # + or spaces")
    city = _expect(f"{where}.city", d.get("city"), str, "a UN/LOCODE such as THBKK")
    try:
        city_profile(city)
    except ValueError as err:
        raise ConfigError(f"{where}.city: {err}") from None
    lanes = _expect(f"{where}.lanes", d.get("lanes", 1), int, "an integer")
    if not 1 <= lanes <= 99:
        raise ConfigError(f"{where}.lanes: must be 1..99, got {lanes}")
    default_profile = (SERIAL_KINDS.get(kind) or MQTT_KINDS[kind]).format(lanes=lanes)
    profile = _expect(f"{where}.profile", d.get("profile", default_profile), str, "a profile kind")
    try:
        parse_kind(profile)
    except ValueError as err:
        raise ConfigError(f"{where}.profile: {err}") from None
    dseed = _expect(f"{where}.seed", d.get("seed", seed), int, "an integer")
    interval = d.get("interval_s")
    if interval is not None:
        _expect(f"{where}.interval_s", interval, (int, float), "a number of seconds")
        if interval <= 0:
            raise ConfigError(f"{where}.interval_s: must be > 0, got {interval}")
    bus = d.get("bus")
    is_modbus = kind.startswith("modbus:")
    if bus is not None:
        _expect(f"{where}.bus", bus, str, "a bus name")
        if kind.startswith("mqtt:"):
            raise ConfigError(f"{where}.bus: MQTT devices are not on a serial bus")
        if bus not in buses:
            raise ConfigError(f"{where}.bus: no bus named {bus!r} in [[buses]] "
                              f"(have: {', '.join(buses) or 'none'})")  # fmt: skip
    address = d.get("address")
    if address is not None:
        _expect(f"{where}.address", address, int, "an integer")
        if not is_modbus:
            raise ConfigError(f"{where}.address: only modbus devices have an address")
        if not 1 <= address <= 254:
            raise ConfigError(f"{where}.address: must be 1..247 (or 254 for any), got {address}")
    link = d.get("link")
    if link is not None:
        _expect(f"{where}.link", link, str, "a path")
    baud = d.get("baudrate")
    if baud is not None:
        _expect(f"{where}.baudrate", baud, int, "an integer")

    faults = _expect(f"{where}.faults", d.get("faults", {}), dict, "a table")
    vf: dict[str, Any] = {}
    bf: dict[str, float] = {}
    mf: dict[str, Any] = {}
    mqtt_dev = kind.startswith("mqtt:")
    for k, v in faults.items():
        fw = f"{where}.faults.{k}"
        if k in _MQTT_FAULTS:
            if not mqtt_dev:
                raise ConfigError(f"{fw}: MQTT fault on a serial device "
                                  f"(byte faults: {', '.join(_BYTE_FAULTS)})")  # fmt: skip
            mf[k] = v
        elif k in _BYTE_FAULTS:
            if mqtt_dev:
                raise ConfigError(f"{fw}: byte-level fault on an MQTT device "
                                  f"(MQTT faults: {', '.join(_MQTT_FAULTS)})")  # fmt: skip
            bf[k] = float(_expect(fw, v, (int, float), "a rate 0..1"))
        elif k in _VALUE_FAULTS:
            vf[k] = tuple(v) if k == "quantities" and isinstance(v, list) else v
        else:
            raise ConfigError(f"{fw}: unknown fault (value: {', '.join(_VALUE_FAULTS)}; "
                              f"bytes: {', '.join(_BYTE_FAULTS)}; mqtt: {', '.join(_MQTT_FAULTS)})")  # fmt: skip
    try:
        value_faults = ValueFaults(**vf) if vf else None
        mqtt_faults = MqttFaults(**mf) if mf else None
        if bf:
            from firmware_sim.faults import FaultInjector

            FaultInjector(bf, 0)  # validates the rates
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}.faults: {err}") from None
    except ImportError:
        raise ConfigError(f"{where}.faults: byte faults need firmware_sim.faults") from None
    rollover = d.get("rollover")
    if rollover is not None and (
        _expect(f"{where}.rollover", rollover, (int, float), "a number") <= 0
    ):
        raise ConfigError(f"{where}.rollover: must be > 0")
    initial = d.get("initial_register")
    if initial is not None:
        _expect(f"{where}.initial_register", initial, (int, float), "a number")
    options = _expect(f"{where}.options", d.get("options", {}), dict, "a table")
    return DeviceConfig(
        index=i, name=name, city=city.upper(), kind=kind, profile=profile, seed=dseed,
        interval_s=None if interval is None else float(interval), bus=bus, address=address,
        lanes=lanes, link=link, baudrate=baud, value_faults=value_faults, byte_faults=bf,
        mqtt_faults=mqtt_faults, rollover=None if rollover is None else float(rollover),
        initial_register=None if initial is None else float(initial), options=options,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Building and running
# --------------------------------------------------------------------------------------------


def _serial_device(src: Path, dev: DeviceConfig, source: Any, bus_baud: int | None) -> Any:
    from firmware_sim.base import SerialSettings
    from firmware_sim.devices import make_device
    from firmware_sim.faults import FaultInjector

    opts: dict[str, Any] = dict(dev.options)
    if dev.byte_faults:
        opts["faults"] = FaultInjector(dict(dev.byte_faults), dev.seed)
    if dev.interval_s is not None and not dev.kind.startswith("modbus:"):
        opts["interval_s"] = int(dev.interval_s) if dev.kind == "traffic_nmea" else dev.interval_s
    if dev.kind == "traffic_nmea":
        opts.setdefault("lanes", dev.lanes)
        opts.setdefault("counter_id", "".join(c for c in dev.name if c.isalnum() or c in "-_")[:16])
    if dev.kind.startswith("modbus:"):
        if dev.address is not None:
            opts["address"] = dev.address
        if bus_baud is not None:
            opts.setdefault("serial", SerialSettings(bus_baud))
    elif dev.baudrate is not None:
        opts.setdefault("serial", SerialSettings(dev.baudrate))
    try:
        return make_device(dev.kind, source, dev.name, **opts)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{src}: devices[{dev.index}] ({dev.name}): {err}") from None


def _mqtt_device(src: Path, dev: DeviceConfig, source: Any, log: FaultLog) -> MqttDevice:
    cls = MQTT_DEVICE_TYPES[dev.kind.removeprefix("mqtt:")][0]
    try:
        return cls(
            source, dev.name, interval_s=dev.interval_s or 60.0,
            timezone=city_profile(dev.city).timezone, faults=dev.mqtt_faults, seed=dev.seed,
            log=log, **dict(dev.options),
        )  # fmt: skip
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{src}: devices[{dev.index}] ({dev.name}): {err}") from None


def _make_clock(cfg: SimConfig, clock: Clock | None) -> Clock:
    if clock is not None:
        return clock
    if cfg.clock.mode == "virtual":
        start = cfg.clock.start if cfg.clock.start is not None else RealClock().now()
        return VirtualClock(start, cfg.clock.step_s)
    return RealClock()


def run(
    config_path: str | Path,
    *,
    clock: Clock | None = None,
    stop_event: threading.Event | None = None,
    on_ready: Callable[[list[Endpoint]], None] | None = None,
    mqtt_url: str | None = None,
    out: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run every device of ``config_path`` until ``stop_event`` is set or Ctrl-C.

    ``clock``: a RealClock (default) or a VirtualClock (time advances ``step`` per loop,
    paced by ``[clock] pace_s``). ``on_ready`` is called once with the endpoints after every
    device is up. ``out`` receives the printed lines (default: stdout). Raises ConfigError for
    a bad config and KotaError when the broker is unreachable.
    """
    cfg = load_config(config_path)
    emit = out or (lambda line: print(line, flush=True))
    stop = stop_event or threading.Event()
    clk = _make_clock(cfg, clock)
    log = FaultLog()
    url = mqtt_url or os.environ.get("KOTA_MQTT_URL") or cfg.mqtt_url or DEFAULT_MQTT_URL
    if any(d.is_mqtt for d in cfg.devices):
        try:
            parse_mqtt_url(url)
        except ValueError as err:
            raise ConfigError(f"KOTA_MQTT_URL / mqtt.url: {err}") from None

    restore = _stop_on_sigterm(stop)
    buses: list[Any] = []
    serial_devices: list[Any] = []
    clients: list[tuple[MqttDevice, Any]] = []
    mqtt_devices: list[MqttDevice] = []
    endpoints: list[Endpoint] = []
    try:
        # -- build every device first (config errors surface before anything starts) ------
        groups: dict[str, list[tuple[DeviceConfig, Any]]] = {}
        singles: list[tuple[DeviceConfig, Any]] = []
        for dev in cfg.devices:
            src = make_source(
                dev.city, dev.profile, dev.name, dev.seed, dev.value_faults,
                interval_s=dev.interval_s or 60.0, rollover=dev.rollover,
                initial_register=dev.initial_register, log=log,
            )  # fmt: skip
            if dev.is_mqtt:
                mqtt_devices.append(_mqtt_device(cfg.path, dev, src, log))
                continue
            bus_cfg = cfg.buses.get(dev.bus) if dev.bus else None
            sdev = _serial_device(cfg.path, dev, src, bus_cfg.baudrate if bus_cfg else None)
            serial_devices.append(sdev)
            if bus_cfg is not None:
                groups.setdefault(bus_cfg.name, []).append((dev, sdev))
            else:
                singles.append((dev, sdev))

        # -- serial: one pty per bus / per UART device ------------------------------------
        if groups or singles:
            from firmware_sim.transport import PtyBus

            for bus_name, members in groups.items():
                b = cfg.buses[bus_name]
                bus = PtyBus([s for _, s in members], link=b.link, baudrate=b.baudrate,
                             clock=clk.now, name=bus_name)  # fmt: skip
                buses.append(bus)
                for dev, _ in members:
                    detail = f"bus {bus_name}, address {dev.address or 'default'}"
                    endpoints.append(
                        Endpoint(dev.name, dev.kind, dev.city, "pty", bus.path, detail)
                    )
            for dev, sdev in singles:
                bus = PtyBus([sdev], link=dev.link, baudrate=dev.baudrate, clock=clk.now,
                             name=dev.name)  # fmt: skip
                buses.append(bus)
                endpoints.append(Endpoint(dev.name, dev.kind, dev.city, "pty", bus.path))

        # -- MQTT: one client (connection, LWT) per device --------------------------------
        for mdev, dev in zip(mqtt_devices, [d for d in cfg.devices if d.is_mqtt], strict=True):
            try:
                client = connect_device(mdev, url)
            except ConnectionError as err:
                raise KotaError(f"devices[{dev.index}] ({dev.name}): {err}") from None
            clients.append((mdev, client))
            endpoints.append(Endpoint(dev.name, dev.kind, dev.city, "mqtt",
                                      " ".join(mdev.topics())))  # fmt: skip

        order = {d.name: d.index for d in cfg.devices}
        endpoints.sort(key=lambda e: order[e.name])
        for ep in endpoints:
            emit(ep.line())
        if clients:
            emit(f"MQTT broker: {url}")
        emit(f"{len(endpoints)} simulated devices running ({'virtual' if clk.virtual else 'real'} "
             "clock); Ctrl-C to stop")  # fmt: skip
        if on_ready is not None:
            on_ready(list(endpoints))

        _loop(clk, cfg, clients, stop)
    except KeyboardInterrupt:
        emit("stopping")
    finally:
        for mdev, client in clients:
            try:
                disconnect_device(mdev, client)
            except Exception as err:  # shutdown must go on for the other devices
                print(f"kota sim: {mdev.name}: {err}", file=sys.stderr)
        for bus in buses:
            bus.shutdown()
        restore()
    return RunSummary(endpoints, log, mqtt_devices, serial_devices, buses)


def _stop_on_sigterm(stop: threading.Event) -> Callable[[], None]:
    """In the main thread, SIGTERM (systemd, docker stop) stops the run like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _loop(
    clk: Clock, cfg: SimConfig, clients: list[tuple[MqttDevice, Any]], stop: threading.Event
) -> None:
    """Publish due MQTT telemetry until stopped (serial devices run in their bus threads)."""
    virtual = isinstance(clk, VirtualClock)
    while not stop.is_set():
        now = clk.now()
        for mdev, client in clients:
            mdev.publish_due(client, now)
        if virtual:
            assert isinstance(clk, VirtualClock)
            clk.tick()
            if stop.wait(cfg.clock.pace_s):
                return
        else:
            due = min((_next_due(m) for m, _ in clients), default=now + 0.5)
            stop.wait(min(0.5, max(0.01, due - clk.now())))


def _next_due(dev: MqttDevice) -> float:
    nxt = getattr(dev, "_next", None)
    return float(nxt) if nxt is not None else 0.0


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_sim.runner sim.toml``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m firmware_sim.runner SIM.TOML", file=sys.stderr)
        return 2
    try:
        run(Path(args[0]))
    except KotaError as err:
        print(f"kota: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
