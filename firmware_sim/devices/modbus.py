"""Modbus RTU slaves (function 0x04, read input registers) with register maps as data tables.

Register maps (addresses are 0-based protocol addresses; float32 = IEEE-754 big-endian bytes,
high word first; int16 x10 / uint16 x10 = value in tenths):

* Senseair S8 (``s8``): 0x0000 meter status, 0x0001 alarm status, 0x0002 output status
  (all 0 = OK), 0x0003 CO2 ppm (uint16). Answers its own address (default 0x68) and the
  "any address" 0xFE. 9600 8N1. Source: Senseair "Modbus on Senseair S8" (TDE2067) via
  /work/shared/reference/protocols.md; request ``FE 04 00 03 00 01 D5 C5`` as used by
  SFeli/ESP32_S8 and jcomas/S8_UART.
* Eastron SDM120 (``sdm120``): float32 at 0x0000 voltage V, 0x0006 current A, 0x000C active
  power W, 0x0046 frequency Hz, 0x0048 import kWh, 0x004A export kWh. Address 1, 2400 8N1
  (factory default). Source: Eastron SDM120-Modbus protocol V2.1 ("Input registers").
* Eastron SDM630 (``sdm630``): float32 L1/L2/L3 voltage 0x0000/0x0002/0x0004, current
  0x0006/0x0008/0x000A, power 0x000C/0x000E/0x0010, total power 0x0034, frequency 0x0046,
  import 0x0048, export 0x004A. Address 1, 9600 8N1 here (the factory baud is unconfirmed;
  it is an option). Source: Eastron SDM630 Modbus protocol V1.8.
* Kota RS-485 temperature/humidity probe (``thprobe``, Kota's own map modelled on common
  SHT-based RS-485 probes): 0x0001 temperature int16 x10 degC, 0x0002 relative humidity
  uint16 x10 %. 0x0000 is not mapped. Address 1, 9600 8N1.
* Kota ultrasonic water meter (``watermeter``, Kota's own map): 0x0000-0x0001 cumulative
  volume float32 m3, 0x0002-0x0003 flow float32 m3/h, 0x0004 status (0 = OK). Address 1,
  9600 8N1.

Reading an address that is not in the map (or a range that includes one) answers exception
0x02 (illegal data address); functions other than 0x04 answer 0x01 (illegal function);
a bad count answers 0x03. Requests for other addresses, broadcasts (address 0) and frames
with a bad CRC get no answer, as on a real bus.

How pymodbus is used (pymodbus 3.16): the framing is pymodbus's server side, driven without
its asyncio server: each slave feeds the bytes the master wrote into pymodbus's
``FramerRTU`` with a server-side ``DecodePDU`` (frame hunting, CRC-16 check, PDU decode),
runs the request's own ``datastore_update()`` against :class:`LiveContext` (a duck-typed
pymodbus datastore whose ``async_getValues`` reads the ValueSource at request time), and
encodes the response or ``ExceptionResponse`` with ``FramerRTU.buildFrame`` (CRC appended).
This keeps one byte-level ``receive()/emit()`` interface for every device, lets several slaves
share one pty exactly like drops on an RS-485 line (every slave sees every request; only the
addressed one answers), and needs no second pty pair or relay. pymodbus's serial server would
need a real path and its own event loop per bus, and its datastore classes are being
replaced (``ModbusDeviceContext`` is deprecated in 3.16), so only the stable framer/PDU layer
and the ``async_getValues`` datastore protocol are relied on.
"""

from __future__ import annotations

import struct
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from firmware_sim.base import (
    DeviceBase,
    FrameShape,
    SerialSettings,
    ValueSource,
    channel_value,
    finite,
)
from firmware_sim.faults import FaultInjector

FLOAT32, INT16_X10, UINT16_X10, UINT16 = "float32", "int16x10", "uint16x10", "uint16"
WORDS = {FLOAT32: 2, INT16_X10: 1, UINT16_X10: 1, UINT16: 1}


@dataclass(frozen=True)
class Register:
    """One value in a register map."""

    address: int  # first register (0-based protocol address)
    encoding: str  # FLOAT32 (2 words, high word first) | INT16_X10 | UINT16_X10 | UINT16
    quantity: str  # kota quantity; "" for a status word
    unit: str  # canonical unit (UCUM code of quantities.toml)
    channel: str = ""  # "L1".. for per-phase values; source key "<quantity>:<channel>"
    scale_fallback: float = 1.0  # factor applied when only the plain quantity is given
    const: int = 0  # value of a status word
    label: str = ""

    @property
    def words(self) -> int:
        return WORDS[self.encoding]

    @property
    def key(self) -> str:
        """The key of this value in ValueSource mappings and in ``sent_log``."""
        return f"{self.quantity}:{self.channel}" if self.channel else self.quantity


@dataclass(frozen=True)
class ModbusModel:
    """A device model: its register table and defaults."""

    model: str
    title: str
    registers: tuple[Register, ...]
    default_address: int
    serial: SerialSettings
    any_address: int | None = None  # an extra address the device always answers (S8: 0xFE)


def _phases(base: int, quantity: str, unit: str, scale: float = 1.0) -> tuple[Register, ...]:
    return tuple(
        Register(base + 2 * i, FLOAT32, quantity, unit, channel=f"L{i + 1}", scale_fallback=scale)
        for i in range(3)
    )


MODELS: dict[str, ModbusModel] = {
    m.model: m
    for m in (
        ModbusModel(
            "s8",
            "Senseair S8 CO2 sensor",
            (
                Register(0x0000, UINT16, "", "", label="meter status"),
                Register(0x0001, UINT16, "", "", label="alarm status"),
                Register(0x0002, UINT16, "", "", label="output status"),
                Register(0x0003, UINT16, "co2", "ppm", label="space CO2"),
            ),
            default_address=0x68,
            serial=SerialSettings(9600),
            any_address=0xFE,
        ),
        ModbusModel(
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
            default_address=1,
            serial=SerialSettings(2400),
        ),
        ModbusModel(
            "sdm630",
            "Eastron SDM630 three-phase energy meter",
            (
                *_phases(0x0000, "voltage", "V"),
                *_phases(0x0006, "current", "A"),
                *_phases(0x000C, "active_power", "W", scale=1 / 3),
                Register(0x0034, FLOAT32, "active_power", "W", label="total system power"),
                Register(0x0046, FLOAT32, "frequency", "Hz"),
                Register(0x0048, FLOAT32, "active_energy_import", "kW.h"),
                Register(0x004A, FLOAT32, "active_energy_export", "kW.h"),
            ),
            default_address=1,
            serial=SerialSettings(9600),
        ),
        ModbusModel(
            "thprobe",
            "Kota RS-485 temperature/humidity probe",
            (
                Register(0x0001, INT16_X10, "temperature", "Cel"),
                Register(0x0002, UINT16_X10, "relative_humidity", "%"),
            ),
            default_address=1,
            serial=SerialSettings(9600),
        ),
        ModbusModel(
            "watermeter",
            "Kota ultrasonic water meter",
            (
                Register(0x0000, FLOAT32, "water_volume", "m3"),
                Register(0x0002, FLOAT32, "water_flow", "m3/h"),
                Register(0x0004, UINT16, "", "", label="status"),
            ),
            default_address=1,
            serial=SerialSettings(9600),
        ),
    )
}


# -- value <-> register words -------------------------------------------------------------
def encode_value(encoding: str, value: float) -> list[int]:
    """Register words for ``value``."""
    v = finite(value)
    if encoding == FLOAT32:
        hi, lo = struct.unpack(">HH", struct.pack(">f", v))
        return [hi, lo]
    if encoding == INT16_X10:
        return [min(max(round(v * 10), -32768), 32767) & 0xFFFF]
    if encoding == UINT16_X10:
        return [min(max(round(v * 10), 0), 0xFFFF)]
    if encoding == UINT16:
        return [min(max(round(v), 0), 0xFFFF)]
    raise ValueError(f"unknown encoding {encoding!r}")


def decode_value(encoding: str, words: Sequence[int]) -> float:
    """The value a master decodes from the register words."""
    if encoding == FLOAT32:
        return float(struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0])
    if encoding == INT16_X10:
        return struct.unpack(">h", struct.pack(">H", words[0]))[0] / 10
    if encoding == UINT16_X10:
        return words[0] / 10
    if encoding == UINT16:
        return float(words[0])
    raise ValueError(f"unknown encoding {encoding!r}")


def crc16(data: bytes) -> bytes:
    """CRC-16/MODBUS of ``data`` as the two bytes appended to a frame (low byte first)."""
    return FramerRTU.compute_CRC(data).to_bytes(2, "big")


def read_request(address: int, register: int, count: int, function: int = 4) -> bytes:
    """A master's read request ADU, e.g. ``read_request(0xFE, 3, 1)`` -> FE 04 00 03 00 01 D5 C5."""
    body = bytes([address, function]) + struct.pack(">HH", register, count)
    return body + crc16(body)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (our datastore answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("datastore coroutine suspended")


class LiveContext:
    """A pymodbus datastore (``async_getValues`` protocol) that reads live values.

    Input registers (function 4) only; values come from the ValueSource at request time.
    """

    def __init__(self, model: ModbusModel, source: ValueSource, device_id: int) -> None:
        self.model = model
        self.source = source
        self.device_id = device_id
        self.by_word: dict[int, tuple[Register, int]] = {}
        for reg in model.registers:
            for i in range(reg.words):
                self.by_word[reg.address + i] = (reg, i)
        self.now = 0.0
        self.last_values: dict[str, float] = {}

    def register_values(self, values: Mapping[str, float]) -> dict[int, int]:
        """Every mapped register word for ``values``."""
        words: dict[int, int] = {}
        for reg in self.model.registers:
            for i, w in enumerate(encode_value(reg.encoding, self.value_of(reg, values))):
                words[reg.address + i] = w
        return words

    @staticmethod
    def value_of(reg: Register, values: Mapping[str, float]) -> float:
        if not reg.quantity:
            return float(reg.const)
        if reg.channel and f"{reg.quantity}:{reg.channel}" in values:
            return finite(values[f"{reg.quantity}:{reg.channel}"])
        return finite(channel_value(values, reg.quantity)) * reg.scale_fallback

    def device_ids(self) -> list[int]:
        return [self.device_id]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | ExcCodes:
        if func_code != 4:
            return ExcCodes.ILLEGAL_FUNCTION
        span = range(address, address + count)
        if any(a not in self.by_word for a in span):
            return ExcCodes.ILLEGAL_ADDRESS
        values = self.source(self.now)
        words = self.register_values(values)
        # log the values a master can decode from this reply: registers read in full
        self.last_values = {
            reg.key: decode_value(reg.encoding, [words[reg.address + i] for i in range(reg.words)])
            for reg in self.model.registers
            if reg.quantity and reg.address in span and reg.address + reg.words - 1 in span
        }
        return [words[a] for a in span]

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION


class ModbusSlave(DeviceBase):
    """One Modbus RTU slave; put several on one bus (one pty) with distinct addresses."""

    shape = FrameShape(checksum=slice(-2, None))

    def __init__(
        self,
        source: ValueSource,
        name: str | None = None,
        *,
        model: str | ModbusModel,
        address: int | None = None,
        response_delay_s: float = 0.0,
        faults: FaultInjector | None = None,
        serial: SerialSettings | None = None,
        log_limit: int | None = 10_000,
    ) -> None:
        m = model if isinstance(model, ModbusModel) else MODELS.get(model)
        if m is None:
            raise ValueError(f"unknown modbus model {model!r}; known: {', '.join(MODELS)}")
        super().__init__(
            source, name or m.model, faults=faults, serial=serial or m.serial, log_limit=log_limit
        )
        self.model = m
        self.kind = f"modbus:{m.model}"
        self.address = m.default_address if address is None else address
        if not 1 <= self.address <= 247 and self.address != m.any_address:
            raise ValueError(f"modbus address {self.address} must be 1..247")
        self.response_delay_s = float(response_delay_s)
        self.context = LiveContext(m, source, self.address)
        self._framer = FramerRTU(DecodePDU(True))
        self._rx = b""
        self._pending: list[tuple[float, bytes, dict[str, float], str, dict[str, Any]]] = []
        self.requests = 0  # requests addressed to this slave

    def answers(self, address: int) -> bool:
        return address == self.address or (
            self.model.any_address is not None and address == self.model.any_address
        )

    def receive(self, data: bytes, now: float) -> None:
        self._rx += data
        while self._rx:
            try:
                used, pdu = self._framer.handleFrame(self._rx, 0, 0)
            except ModbusIOException as exc:
                # a frame with a good CRC whose PDU does not decode (e.g. count > 125)
                self._rx = b""
                dev = exc.dev_id or 0
                if self.answers(dev):
                    fcode = exc.fcode or 0
                    code = ExcCodes.ILLEGAL_VALUE if fcode in (3, 4) else ExcCodes.ILLEGAL_FUNCTION
                    self._respond(now, ExceptionResponse(fcode, code, device_id=dev), dev)
                return
            self._rx = self._rx[used:]
            if pdu is None:
                if used == 0:
                    if len(self._rx) > 512:  # never a frame: drop the noise
                        self._rx = self._rx[-256:]
                    return
                continue
            if self.answers(pdu.dev_id):
                self._handle(pdu, now)

    def _handle(self, pdu: ModbusPDU, now: float) -> None:
        self.requests += 1
        dev = pdu.dev_id
        if pdu.function_code not in (3, 4):
            self._respond(now, ExceptionResponse(pdu.function_code, ExcCodes.ILLEGAL_FUNCTION), dev)
            return
        self.context.now = now
        self.context.last_values = {}
        response: ModbusPDU = _run(pdu.datastore_update(self.context, dev))  # type: ignore[arg-type]
        self._respond(now, response, dev, self.context.last_values)

    def _respond(
        self, now: float, pdu: ModbusPDU, dev: int, values: dict[str, float] | None = None
    ) -> None:
        pdu.dev_id = dev
        pdu.transaction_id = 0
        frame = self._framer.buildFrame(pdu)
        is_exc = isinstance(pdu, ExceptionResponse)
        meta: dict[str, Any] = {"address": dev}
        if is_exc:
            meta["exception"] = pdu.exception_code
        frame_type = "exception" if is_exc else "data"
        self._pending.append((now + self.response_delay_s, frame, values or {}, frame_type, meta))

    def _tick(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            _, frame, values, frame_type, meta = self._pending.pop(0)
            self._send(now, frame, values, frame_type=frame_type, meta=meta)
