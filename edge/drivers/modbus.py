"""Modbus RTU polling of several slaves on one RS-485 line (pymodbus ModbusSerialClient).

One port, one client; the slaves are polled in turn once per ``interval``, with
``pause_between_requests`` of bus silence between requests (some meters need it). Register
maps are data tables per model (``MODELS``), matching docs/protocols.md and
firmware_sim/devices/modbus.py: function 04 (input registers); float32 = IEEE-754 with the
high word first (big-endian bytes); ``int16x10``/``uint16x10`` = tenths.

Models: ``sdm120``, ``sdm630`` (Eastron energy meters), ``senseair_s8`` (CO2), ``kota_thprobe``
(temperature/humidity probe), ``kota_watermeter``. The simulator's short names ``s8``,
``thprobe`` and ``watermeter`` are accepted as aliases.

Adjacent registers are read in one request (the SDM630's 18 words of voltage, current and
power per phase); unmapped gaps are never read (the devices answer exception 02 for them).
Per-phase values (SDM630 L1-L3) go to the device ``<device_id>-L<n>``: the readings key is
device + quantity + time, so three voltages cannot share one device id.

A non-zero status word (S8 meter status, water meter status) flags that slave's samples
DEVICE_WARNING. Per slave, never fatal: ``timeout`` (no reply), ``bad_crc`` (bytes came back
but no valid frame), ``exception_<name>`` (exception response: ``illegal_function``,
``illegal_address``, ``illegal_value``, ``device_failure``, ``busy``, ``code_<n>``),
``non_finite`` (a float32 NaN/Inf register). A failing slave never stops the others; a port
that disappears is reopened with capped backoff.
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from edge.drivers.base import (
    AgentContext,
    Backoff,
    DeviceStats,
    DriverSpec,
    Options,
    Sink,
    deliver,
    device_options,
    now_us,
)
from edge.drivers.metrics import DriverMetrics
from gateway.schema import QualityFlag, Sample

log = logging.getLogger("kota.edge.drivers.modbus")

KIND = "modbus"
FLOAT32, INT16_X10, UINT16_X10, UINT16 = "float32", "int16x10", "uint16x10", "uint16"
WORDS = {FLOAT32: 2, INT16_X10: 1, UINT16_X10: 1, UINT16: 1}
STATUS = "status"  # quantity of a status word: non-zero = DEVICE_WARNING, not a reading
IGNORE = ""  # a register read only to keep a request contiguous
EXCEPTIONS = {
    1: "illegal_function",
    2: "illegal_address",
    3: "illegal_value",
    4: "device_failure",
    6: "busy",
}


@dataclass(frozen=True)
class Register:
    """One value in a register map (0-based protocol address)."""

    address: int
    encoding: str
    quantity: str  # kota quantity, or STATUS
    unit: str = ""
    channel: str = ""  # "L1".. -> device "<device_id>-L1"

    @property
    def words(self) -> int:
        return WORDS[self.encoding]


@dataclass(frozen=True)
class Model:
    """A device model: its register table and serial defaults."""

    name: str
    title: str
    registers: tuple[Register, ...]
    default_address: int = 1
    default_baudrate: int = 9600
    blocks: tuple[tuple[int, int, tuple[Register, ...]], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", read_blocks(self.registers))


def read_blocks(registers: Sequence[Register]) -> tuple[tuple[int, int, tuple[Register, ...]], ...]:
    """Group registers into requests: (start, count, registers), adjacent ones merged."""
    blocks: list[tuple[int, int, list[Register]]] = []
    for reg in sorted(registers, key=lambda r: r.address):
        if blocks:
            start, count, regs = blocks[-1]
            if start + count == reg.address and count + reg.words <= 125:
                blocks[-1] = (start, count + reg.words, [*regs, reg])
                continue
        blocks.append((reg.address, reg.words, [reg]))
    return tuple((s, c, tuple(r)) for s, c, r in blocks)


def _phases(base: int, quantity: str, unit: str) -> tuple[Register, ...]:
    return tuple(
        Register(base + 2 * i, FLOAT32, quantity, unit, channel=f"L{i + 1}") for i in range(3)
    )


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model(
            "sdm120",
            "Eastron SDM120 single-phase energy meter",
            (
                Register(0x0000, FLOAT32, "voltage", "V"),
                Register(0x0006, FLOAT32, "current", "A"),
                Register(0x000C, FLOAT32, "active_power", "W"),
                Register(0x0046, FLOAT32, "frequency", "Hz"),
                Register(0x0048, FLOAT32, "active_energy_import", "kW.h"),
                Register(0x004A, FLOAT32, "active_energy_export", "kW.h"),
            ),
            default_baudrate=2400,
        ),
        Model(
            "sdm630",
            "Eastron SDM630 three-phase energy meter",
            (
                *_phases(0x0000, "voltage", "V"),
                *_phases(0x0006, "current", "A"),
                *_phases(0x000C, "active_power", "W"),
                Register(0x0034, FLOAT32, "active_power", "W"),
                Register(0x0046, FLOAT32, "frequency", "Hz"),
                Register(0x0048, FLOAT32, "active_energy_import", "kW.h"),
                Register(0x004A, FLOAT32, "active_energy_export", "kW.h"),
            ),
        ),
        Model(
            "senseair_s8",
            "Senseair S8 CO2 sensor",
            (
                Register(0x0000, UINT16, STATUS),  # meter status, 0 = OK
                Register(0x0001, UINT16, IGNORE),  # alarm status
                Register(0x0002, UINT16, IGNORE),  # output status
                Register(0x0003, UINT16, "co2", "ppm"),
            ),
            default_address=0xFE,
        ),
        Model(
            "kota_thprobe",
            "Kota RS-485 temperature/humidity probe",
            (
                Register(0x0001, INT16_X10, "temperature", "Cel"),
                Register(0x0002, UINT16_X10, "relative_humidity", "%"),
            ),
        ),
        Model(
            "kota_watermeter",
            "Kota ultrasonic water meter",
            (
                Register(0x0000, FLOAT32, "water_volume", "m3"),
                Register(0x0002, FLOAT32, "water_flow", "m3/h"),
                Register(0x0004, UINT16, STATUS),
            ),
        ),
    )
}
ALIASES = {"s8": "senseair_s8", "thprobe": "kota_thprobe", "watermeter": "kota_watermeter"}


def decode_value(encoding: str, words: Sequence[int]) -> float:
    """The value of one register from its words."""
    if encoding == FLOAT32:
        return float(struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0])
    if encoding == INT16_X10:
        return struct.unpack(">h", struct.pack(">H", words[0]))[0] / 10
    if encoding == UINT16_X10:
        return words[0] / 10
    if encoding == UINT16:
        return float(words[0])
    raise ValueError(f"unknown encoding {encoding!r}")


def decode_block(
    start: int, registers: Sequence[Register], words: Sequence[int]
) -> tuple[list[tuple[Register, float]], int, int]:
    """(register, value) pairs of a block read; the status bits; the count of non-finite."""
    out: list[tuple[Register, float]] = []
    status = non_finite = 0
    for reg in registers:
        i = reg.address - start
        value = decode_value(reg.encoding, words[i : i + reg.words])
        if reg.quantity == STATUS:
            status |= int(value)
        elif reg.quantity == IGNORE:
            continue
        elif not math.isfinite(value):
            non_finite += 1
        else:
            out.append((reg, value))
    return out, status, non_finite


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (init FFFF, reflected polynomial A001)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def decode_read_response(
    adu: bytes, address: int, count: int, function: int = 4
) -> list[int] | str:
    """Register words of a read reply ADU, or a reject reason (CRC checked first)."""
    if len(adu) < 5:
        return "bad_crc"
    body, crc = adu[:-2], adu[-2] | (adu[-1] << 8)
    if crc16(body) != crc:
        return "bad_crc"
    if body[0] != address:
        return "wrong_address"
    if body[1] == function | 0x80 and len(body) == 3:
        return "exception_" + EXCEPTIONS.get(body[2], f"code_{body[2]}")
    if body[1] != function or body[2] != 2 * count or len(body) != 3 + 2 * count:
        return "bad_length"
    return list(struct.unpack(f">{count}H", body[3:]))


@dataclass
class Slave:
    """One polled device on the bus."""

    address: int
    model: Model
    device_id: str
    stats: DeviceStats


class ModbusDriver:
    """Polls every slave on one RS-485 line in turn, once per interval."""

    kind = KIND

    def __init__(
        self,
        device_id: str,
        ctx: AgentContext,
        *,
        port: str,
        slaves: Sequence[tuple[int, str, str]],
        baudrate: int = 9600,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        timeout: float = 1.0,
        retries: int = 0,
        interval: float = 60.0,
        pause_between_requests: float = 0.05,
        reopen_max_delay: float = 30.0,
        metrics: DriverMetrics | None = None,
    ) -> None:
        self.device_id = device_id
        self.ctx = ctx
        self.port = port
        self.serial: dict[str, Any] = {
            "baudrate": baudrate,
            "parity": parity,
            "bytesize": bytesize,
            "stopbits": stopbits,
        }
        self.timeout = timeout
        self.retries = retries
        self.interval = interval
        self.pause = pause_between_requests
        self.reopen_max_delay = reopen_max_delay
        self.stats = DeviceStats(KIND, device_id, metrics)  # the bus: port reopens
        self.slaves = [
            Slave(addr, MODELS[ALIASES.get(model, model)], dev, DeviceStats(KIND, dev, metrics))
            for addr, model, dev in slaves
        ]
        self.client: ModbusSerialClient | None = None
        self._state = "starting"
        self._rx = b""
        self._pending: dict[str, tuple[list[tuple[Register, float]], int]] = {}
        self.cycles = 0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._rx = b""
        else:
            self._rx = data
        return data

    def _new_client(self) -> ModbusSerialClient:
        return ModbusSerialClient(
            self.port,
            framer=FramerType.RTU,
            timeout=self.timeout,
            retries=self.retries,
            reconnect_delay=0,
            trace_packet=self._trace,
            **self.serial,
        )

    # -- Driver ------------------------------------------------------------------------
    def run(self, sink: Sink, stop: threading.Event) -> None:
        backoff = Backoff(0.5, self.reopen_max_delay)
        attempts = 0
        try:
            while not stop.is_set():
                client = self.client
                if client is None or not client.connected:
                    if attempts:
                        self.stats.reopen()
                    attempts += 1
                    client = self.client = client or self._new_client()
                    if not self._connect(client):
                        self._state = "reopening"
                        stop.wait(backoff.next())
                        continue
                    backoff.reset()
                    self._state = "ok"
                started = time.monotonic()
                try:
                    self.poll_all(client, sink, stop)
                except Exception as err:
                    self.stats.last_error = f"internal: {err!r}"
                    log.exception("%s: poll cycle failed", self.device_id)
                    client.close()
                if not client.connected:
                    self._state = "reopening"
                    continue
                self.cycles += 1
                stop.wait(max(0.0, started + self.interval - time.monotonic()))
        finally:
            if self.client is not None:
                self.client.close()
            self._state = "stopped"

    def _connect(self, client: ModbusSerialClient) -> bool:
        try:
            ok = bool(client.connect())
        except Exception as err:
            self.stats.last_error = f"open {self.port}: {err}"
            return False
        if not ok:
            self.stats.last_error = f"open {self.port}: failed"
        return ok

    def poll_all(self, client: ModbusSerialClient, sink: Sink, stop: threading.Event) -> None:
        """One cycle: every slave in turn; stops early when the port is lost."""
        first = True
        for slave in self.slaves:
            for start, count, regs in slave.model.blocks:
                if stop.is_set() or not client.connected:
                    return
                if not first and self.pause:
                    stop.wait(self.pause)
                first = False
                self._read_block(client, slave, start, count, regs)
            self._emit(slave, sink)

    def _read_block(
        self,
        client: ModbusSerialClient,
        slave: Slave,
        start: int,
        count: int,
        regs: Sequence[Register],
    ) -> None:
        pending = self._pending.setdefault(slave.device_id, ([], 0))
        try:
            reply = client.read_input_registers(start, count=count, device_id=slave.address)
        except ConnectionException as err:
            self.stats.last_error = f"{self.port}: {err}"
            client.close()
            return
        except ModbusException as err:
            reason = "bad_crc" if self._rx else "timeout"
            slave.stats.last_error = str(err)[:200]
            slave.stats.reject(reason)
            return
        if reply.isError():
            code = int(getattr(reply, "exception_code", 0))
            slave.stats.reject("exception_" + EXCEPTIONS.get(code, f"code_{code}"))
            return
        words = list(reply.registers)
        if len(words) != count:
            slave.stats.reject("bad_length")
            return
        slave.stats.last_error = None  # answering again
        values, status, non_finite = decode_block(start, regs, words)
        for _ in range(non_finite):
            slave.stats.reject("non_finite")
        slave.stats.ok(0)
        pending[0].extend(values)
        self._pending[slave.device_id] = (pending[0], pending[1] | status)

    def _emit(self, slave: Slave, sink: Sink) -> None:
        values, status = self._pending.pop(slave.device_id, ([], 0))
        if not values:
            return
        observed_us, flags = now_us(self.ctx.clock)
        if status:
            flags |= int(QualityFlag.DEVICE_WARNING)
        by_device: dict[str, list[Sample]] = {}
        for reg, value in values:
            dev = f"{slave.device_id}-{reg.channel}" if reg.channel else slave.device_id
            by_device.setdefault(dev, []).append(
                Sample(reg.quantity, value, reg.unit, observed_us, flags)
            )
        for dev, samples in by_device.items():
            if deliver(sink, dev, samples, slave.stats):
                slave.stats.add_readings(len(samples))

    def health(self) -> dict[str, object]:
        out = self.stats.snapshot(self._state)
        out["port"] = self.port
        out["slaves"] = {
            s.device_id: {
                "address": s.address,
                "model": s.model.name,
                **s.stats.snapshot("ok" if not s.stats.last_error else "error"),
            }
            for s in self.slaves
        }
        return out


SAMPLE_CONFIG = """\
[[devices]]
kind = "modbus"
## The bus (its port reopens are counted under this id); each slave has its own device_id.
device_id = "bkk-rs485-1"
port = "/dev/serial/by-id/usb-FTDI_USB_RS485_Cable_FT1ABCDE-if00-port0"
## Line settings shared by every slave on the bus (SDM120 factory default is 2400 8N1).
# baudrate = 9600
# parity = "N"          # N | E | O
# bytesize = 8
# stopbits = 1
## Seconds to wait for a reply; a missing reply counts "timeout" for that slave.
# timeout = 1.0
## Extra attempts per request before counting it failed.
# retries = 0
## Seconds between poll cycles (every slave once per cycle).
# interval = 60.0
## Bus silence between two requests (some meters answer the next request garbled without it).
# pause_between_requests = 0.05
# reopen_max_delay = 30.0

## One table per slave: address 1-247 (the S8 also answers 0xFE = 254, "any address";
## use it only when the S8 is alone on the bus), model, device_id.
## Models: sdm120, sdm630, senseair_s8, kota_thprobe, kota_watermeter.
## SDM630 phases become devices "<device_id>-L1" .. "-L3".
[[devices.slaves]]
address = 1
model = "sdm120"
device_id = "bkk-sdm120-01"

[[devices.slaves]]
address = 2
model = "kota_thprobe"
device_id = "bkk-th-01"
"""


def _slave(o: Options, i: int, raw: Any) -> tuple[int, str, str]:
    s = Options(raw, f"slaves[{i}].")
    address = s.get_int("address", min=1, max=254)
    model = s.get_str("model")
    if ALIASES.get(model, model) not in MODELS:
        raise s.error("model", f"unknown model {model!r}; known: {', '.join(MODELS)}")
    device_id = s.get_ident("device_id")
    s.finish()
    if address > 247 and ALIASES.get(model, model) != "senseair_s8":
        raise s.error("address", f"must be 1..247, got {address}")
    return address, model, device_id


def build(table: Mapping[str, Any], ctx: AgentContext) -> ModbusDriver:
    """Validate a [[devices]] table of kind modbus and build the driver."""
    o = device_options(table)
    device_id = o.get_ident("device_id")
    raw_slaves = o.raw("slaves")
    if not isinstance(raw_slaves, list) or not raw_slaves:
        raise o.error("slaves", "must be a non-empty list of [[devices.slaves]] tables")
    slaves = [_slave(o, i, raw) for i, raw in enumerate(raw_slaves)]
    seen_addr: dict[int, int] = {}
    seen_dev: dict[str, int] = {}
    for i, (address, _model, dev) in enumerate(slaves):
        if address in seen_addr:
            raise o.error(f"slaves[{i}].address", f"{address} is also slaves[{seen_addr[address]}]")
        if dev in seen_dev or dev == device_id:
            raise o.error(f"slaves[{i}].device_id", f"{dev!r} is used twice")
        seen_addr[address], seen_dev[dev] = i, i
    kwargs = {
        "port": o.get_str("port"),
        "baudrate": o.get_int("baudrate", 9600, min=300),
        "parity": o.get_str("parity", "N", choices=("N", "E", "O")),
        "bytesize": o.get_int("bytesize", 8, min=5, max=8),
        "stopbits": o.get_int("stopbits", 1, min=1, max=2),
        "timeout": o.get_float("timeout", 1.0, min=0.01),
        "retries": o.get_int("retries", 0, min=0, max=10),
        "interval": o.get_float("interval", 60.0, min=0.0),
        "pause_between_requests": o.get_float("pause_between_requests", 0.05, min=0.0),
        "reopen_max_delay": o.get_float("reopen_max_delay", 30.0, min=0.5),
    }
    o.finish()
    return ModbusDriver(device_id, ctx, slaves=slaves, **kwargs)


SPEC = DriverSpec(kind=KIND, sample_config=SAMPLE_CONFIG, build=build)
