"""Plantower PMS5003 particulate sensor, byte for byte (UART 9600 8N1).

Data frame, 32 bytes, every field a big-endian uint16::

    42 4D | 00 1C | 13 data words | checksum
    data words: PM1.0, PM2.5, PM10 at CF=1; PM1.0, PM2.5, PM10 atmospheric;
                particles > 0.3, 0.5, 1.0, 2.5, 5.0, 10 um per 0.1 L; reserved
    checksum = 16-bit sum of bytes 0-29

Commands, 7 bytes ``42 4D CMD DATAH DATAL CSH CSL`` (checksum = sum of the first five):
``E1 00 00`` passive, ``E1 00 01`` active, ``E2 00 00`` read (passive), ``E4 00 00`` sleep,
``E4 00 01`` wake. Replies: mode change and sleep are acknowledged with the 8-byte frame
``42 4D 00 04 <cmd> <DATAL> <CSH> <CSL>`` (``42 4D 00 04 E1 00 01 74`` passive,
``42 4D 00 04 E1 01 01 75`` active, ``42 4D 00 04 E4 00 01 77`` sleep); wake has no ack (the
sensor starts sending frames again); read answers with one data frame.

Sources: Plantower PMS5003 data manual (Series data manual V2.3, "Appendix I/II"; summarised in
/work/shared/reference/protocols.md); the command table of allsensing-docs/Document-Center
(product-document/plantower/.../uart.md); the acknowledgement frames as expected by common
drivers and emulators (e.g. the PMS5003 UART model in Antmicro Renode,
``Antmicro.Renode.Peripherals.UART.PMS5003``, and Arduino/Linux drivers that compare the reply
with ``42 4D 00 04 E1 00 01 74``). The reserved word defaults to ``97 00`` (firmware version 0x97,
error code 0) as seen in captures of real sensors; it is a device option.

Simulator choices (all named options): active mode frames every ``interval_s`` (the real
sensor sends every ~1 s when readings change fast, up to 2.3 s when stable); ``wake_delay_s``
before the first frame after wake (real: fan spin-up; data are stable ~30 s after wake); a
``read`` in active mode or while asleep is ignored; the mode survives sleep.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from firmware_sim.base import (
    DeviceBase,
    FrameShape,
    SerialSettings,
    ValueSource,
    finite,
)
from firmware_sim.faults import FaultInjector

HEADER = b"\x42\x4d"
FRAME_LEN = 32
CMD_MODE, CMD_READ, CMD_SLEEP = 0xE1, 0xE2, 0xE4

#: quantity of each data word, in frame order (word 13 is the reserved word)
FIELDS = (
    "pm1_cf1",
    "pm2_5_cf1",
    "pm10_cf1",
    "pm1",
    "pm2_5",
    "pm10",
    "particles_0_3",
    "particles_0_5",
    "particles_1_0",
    "particles_2_5",
    "particles_5_0",
    "particles_10",
)

# Rough particle counts per ug/m3 when the source gives none (ratios of a real indoor capture).
_COUNT_PER_UG = {
    "particles_0_3": ("pm2_5_cf1", 118.0),
    "particles_0_5": ("pm2_5_cf1", 35.0),
    "particles_1_0": ("pm2_5_cf1", 7.0),
    "particles_2_5": ("pm10_cf1", 0.6),
    "particles_5_0": ("pm10_cf1", 0.2),
    "particles_10": ("pm10_cf1", 0.1),
}


def checksum(data: bytes) -> int:
    """16-bit sum of the bytes."""
    return sum(data) & 0xFFFF


def _word(value: float) -> int:
    return min(max(round(finite(value)), 0), 0xFFFF)


def complete(values: Mapping[str, float]) -> dict[str, float]:
    """All 12 fields from whatever the source gives.

    Missing CF=1 values equal the atmospheric ones; missing particle counts are derived
    from the mass concentrations (rough ratios); missing PM values are 0.
    """
    out = {q: finite(values.get(q)) for q in ("pm1", "pm2_5", "pm10")}
    for q in ("pm1", "pm2_5", "pm10"):
        v = values.get(f"{q}_cf1")
        out[f"{q}_cf1"] = finite(v) if v is not None else out[q]
    for q, (base, ratio) in _COUNT_PER_UG.items():
        v = values.get(q)
        out[q] = finite(v) if v is not None else out[base] * ratio
    return out


def quantize(values: Mapping[str, float]) -> dict[str, float]:
    """The values a decoder reads back from the frame (integers, clamped to uint16)."""
    full = complete(values)
    return {q: float(_word(full[q])) for q in FIELDS}


def encode_frame(values: Mapping[str, float], reserved: int = 0x9700) -> bytes:
    """The 32-byte data frame for ``values`` (kota quantities, see FIELDS)."""
    q = quantize(values)
    body = HEADER + struct.pack(">H", 28)
    body += struct.pack(">13H", *(int(q[f]) for f in FIELDS), reserved & 0xFFFF)
    return body + struct.pack(">H", checksum(body))


def encode_command(cmd: int, data: int = 0) -> bytes:
    """A 7-byte host command, e.g. ``encode_command(0xE1, 0)`` = passive mode."""
    body = HEADER + bytes([cmd, (data >> 8) & 0xFF, data & 0xFF])
    return body + struct.pack(">H", checksum(body))


def encode_ack(cmd: int, data: int) -> bytes:
    """The 8-byte acknowledgement ``42 4D 00 04 <cmd> <data> <cs>``."""
    body = HEADER + bytes([0x00, 0x04, cmd, data & 0xFF])
    return body + struct.pack(">H", checksum(body))


class PMS5003(DeviceBase):
    """A PMS5003 on a UART: active/passive mode, read, sleep and wake commands."""

    kind = "pms5003"
    shape = FrameShape(checksum=slice(-2, None), sync=0x42)

    def __init__(
        self,
        source: ValueSource,
        name: str = "pms5003",
        *,
        interval_s: float = 1.0,
        mode: str = "active",
        wake_delay_s: float = 0.0,
        reserved: int = 0x9700,
        faults: FaultInjector | None = None,
        serial: SerialSettings | None = None,
        log_limit: int | None = 10_000,
    ) -> None:
        super().__init__(source, name, faults=faults, serial=serial, log_limit=log_limit)
        if mode not in ("active", "passive"):
            raise ValueError(f"pms5003 mode must be active or passive, not {mode!r}")
        if interval_s <= 0:
            raise ValueError("pms5003 interval_s must be > 0")
        self.interval_s = float(interval_s)
        self.mode = mode
        self.wake_delay_s = float(wake_delay_s)
        self.reserved = reserved
        self.asleep = False
        self._next: float | None = None  # next active-mode frame time
        self._awake_at = 0.0  # frames only after this time (wake delay)
        self._rx = bytearray()

    def frame(self, now: float) -> None:
        """Send one data frame with the values at ``now``."""
        values = self.source(now)
        self._send(now, encode_frame(values, self.reserved), quantize(values))

    def _tick(self, now: float) -> None:
        if self.asleep or self.mode != "active" or now < self._awake_at:
            return
        if self._next is None:
            self._next = now
        if now >= self._next:
            self.frame(now)
            # skip missed slots instead of bursting after a stall
            self._next += self.interval_s * max(1, int((now - self._next) // self.interval_s) + 1)

    def receive(self, data: bytes, now: float) -> None:
        self._rx += data
        while True:
            i = self._rx.find(HEADER)
            if i < 0:
                del self._rx[: max(0, len(self._rx) - 1)]  # keep a trailing 0x42
                return
            del self._rx[:i]
            if len(self._rx) < 7:
                return
            cmd = bytes(self._rx[:7])
            if checksum(cmd[:5]) != struct.unpack(">H", cmd[5:7])[0]:
                del self._rx[:1]  # not a command; resynchronise
                continue
            del self._rx[:7]
            self._command(cmd[2], (cmd[3] << 8) | cmd[4], now)

    def _command(self, cmd: int, data: int, now: float) -> None:
        if cmd == CMD_SLEEP:
            if data == 0:
                self._send(now, encode_ack(CMD_SLEEP, 0), {}, frame_type="ack")
                self.asleep = True
            elif self.asleep:
                self.asleep = False
                self._awake_at = now + self.wake_delay_s
                self._next = None
            return
        if self.asleep:
            return
        if cmd == CMD_MODE and data in (0, 1):
            self._send(now, encode_ack(CMD_MODE, data), {}, frame_type="ack")
            new = "active" if data else "passive"
            if new != self.mode:
                self.mode = new
                self._next = None
        elif cmd == CMD_READ and self.mode == "passive" and now >= self._awake_at:
            self.frame(now)
