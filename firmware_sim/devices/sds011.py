"""Nova Fitness SDS011 particulate sensor, byte for byte (UART 9600 8N1).

Data frame, 10 bytes::

    AA C0 PM25_lo PM25_hi PM10_lo PM10_hi ID1 ID2 CS AB
    PM in ug/m3 = (hi * 256 + lo) / 10;  CS = low byte of the sum of bytes 2-7

Commands, 19 bytes ``AA B4 <cmd> <data 2..13> <ID1> <ID2> CS AB`` (CS = low byte of the sum
of bytes 2-16; ID ``FF FF`` addresses every sensor). Replies, 10 bytes
``AA C5 <cmd> <d1> <d2> <d3> ID1 ID2 CS AB`` (CS over bytes 2-7):

=====  ==========================  ===========================================================
cmd    meaning                     data (byte 3: 0 query / 1 set) and reply
=====  ==========================  ===========================================================
2      data reporting mode         byte 4: 0 active, 1 query; reply ``C5 02 set mode 00``
4      query data                  reply is a data frame ``AA C0 ...``
5      set device ID               bytes 13-14 new ID; reply ``C5 05 00 00 00`` from the new ID
6      sleep / work                byte 4: 0 sleep, 1 work; reply ``C5 06 set mode 00``
7      firmware version            reply ``C5 07 year month day``
8      working period              byte 4: 0 continuous, 1-30 minutes; reply ``C5 08 set n 00``
=====  ==========================  ===========================================================

Sources: Nova Fitness "Laser Dust Sensor Control Protocol V1.3" and the SDS011 datasheet V1.3
(summarised in /work/shared/reference/protocols.md); the command layout as implemented by
ESPHome's sds011 component and the airrohr firmware (opendata-stuttgart/sensors-software),
whose sleep command ``AA B4 06 01 00 .. 00 FF FF 05 AB`` is used as a test vector here.

Simulator choices: the default device ID is ``A1 60`` (the datasheet's example); while asleep
the sensor answers only command 6 (sleep/work); in active mode it reports every ``interval_s``
(1 s by default), or every ``n`` minutes when a working period is set; PM values are clamped
to the sensor's 0.0-999.9 ug/m3 range.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from firmware_sim.base import (
    DeviceBase,
    FrameShape,
    SerialSettings,
    ValueSource,
    finite,
)
from firmware_sim.faults import FaultInjector

HEAD, TAIL = 0xAA, 0xAB
CMD_ID, DATA_ID, REPLY_ID = 0xB4, 0xC0, 0xC5
CMD_LEN, FRAME_LEN = 19, 10
CMD_MODE, CMD_QUERY, CMD_SET_ID, CMD_SLEEP, CMD_FIRMWARE, CMD_PERIOD = 2, 4, 5, 6, 7, 8


def checksum(data: bytes) -> int:
    """Low byte of the sum."""
    return sum(data) & 0xFF


def _tenths(value: float) -> int:
    return min(max(round(finite(value) * 10), 0), 9999)


def quantize(values: Mapping[str, float]) -> dict[str, float]:
    """The values a decoder reads back (0.1 ug/m3 steps, 0.0-999.9)."""
    return {q: _tenths(finite(values.get(q))) / 10 for q in ("pm2_5", "pm10")}


def encode_frame(values: Mapping[str, float], device_id: int = 0xA160) -> bytes:
    """The 10-byte data frame for ``values`` (``pm2_5``, ``pm10``)."""
    p25, p10 = _tenths(finite(values.get("pm2_5"))), _tenths(finite(values.get("pm10")))
    data = bytes([p25 & 0xFF, p25 >> 8, p10 & 0xFF, p10 >> 8, device_id >> 8, device_id & 0xFF])
    return bytes([HEAD, DATA_ID]) + data + bytes([checksum(data), TAIL])


def encode_reply(cmd: int, d1: int, d2: int, d3: int, device_id: int = 0xA160) -> bytes:
    """A 10-byte ``AA C5`` command reply."""
    data = bytes([cmd, d1, d2, d3, device_id >> 8, device_id & 0xFF])
    return bytes([HEAD, REPLY_ID]) + data + bytes([checksum(data), TAIL])


def encode_command(cmd: int, data: bytes = b"", device_id: int = 0xFFFF) -> bytes:
    """A 19-byte host command; ``data`` are bytes 3.. (up to 12 bytes, zero padded)."""
    if len(data) > 12:
        raise ValueError("sds011 command data is at most 12 bytes")
    body = bytes([cmd]) + data.ljust(12, b"\x00") + bytes([device_id >> 8, device_id & 0xFF])
    return bytes([HEAD, CMD_ID]) + body + bytes([checksum(body), TAIL])


class SDS011(DeviceBase):
    """An SDS011 on a UART: reporting mode, query, sleep/work, working period, device ID."""

    kind = "sds011"
    shape = FrameShape(checksum=slice(8, 9), sync=HEAD)

    def __init__(
        self,
        source: ValueSource,
        name: str = "sds011",
        *,
        interval_s: float = 1.0,
        mode: str = "active",
        device_id: int = 0xA160,
        period_min: int = 0,
        firmware: dt.date = dt.date(2015, 7, 10),
        faults: FaultInjector | None = None,
        serial: SerialSettings | None = None,
        log_limit: int | None = 10_000,
    ) -> None:
        super().__init__(source, name, faults=faults, serial=serial, log_limit=log_limit)
        if mode not in ("active", "query"):
            raise ValueError(f"sds011 mode must be active or query, not {mode!r}")
        if not 0 <= period_min <= 30:
            raise ValueError("sds011 period_min must be 0..30")
        if interval_s <= 0:
            raise ValueError("sds011 interval_s must be > 0")
        self.interval_s = float(interval_s)
        self.mode = mode
        self.device_id = device_id & 0xFFFF
        self.period_min = period_min
        self.firmware = firmware
        self.asleep = False
        self._next: float | None = None
        self._rx = bytearray()

    def frame(self, now: float) -> None:
        """Send one data frame with the values at ``now``."""
        values = self.source(now)
        self._send(now, encode_frame(values, self.device_id), quantize(values))

    def _reply(self, now: float, cmd: int, d1: int, d2: int, d3: int = 0) -> None:
        frame = encode_reply(cmd, d1, d2, d3, self.device_id)
        self._send(now, frame, {}, frame_type="ack")

    def _tick(self, now: float) -> None:
        if self.asleep or self.mode != "active":
            return
        step = self.period_min * 60.0 if self.period_min else self.interval_s
        if self._next is None:
            self._next = now
        if now >= self._next:
            self.frame(now)
            self._next += step * max(1, int((now - self._next) // step) + 1)

    def receive(self, data: bytes, now: float) -> None:
        self._rx += data
        while True:
            i = self._rx.find(bytes([HEAD, CMD_ID]))
            if i < 0:
                del self._rx[: max(0, len(self._rx) - 1)]
                return
            del self._rx[:i]
            if len(self._rx) < CMD_LEN:
                return
            cmd = bytes(self._rx[:CMD_LEN])
            if cmd[18] != TAIL or checksum(cmd[2:17]) != cmd[17]:
                del self._rx[:1]
                continue
            del self._rx[:CMD_LEN]
            target = (cmd[15] << 8) | cmd[16]
            if target in (0xFFFF, self.device_id):
                self._command(cmd, now)

    def _command(self, cmd: bytes, now: float) -> None:
        code, is_set, arg = cmd[2], cmd[3], cmd[4]
        if code == CMD_SLEEP:
            if is_set:
                self.asleep = arg == 0
                if not self.asleep:
                    self._next = None
            self._reply(now, CMD_SLEEP, is_set, 0 if self.asleep else 1)
            return
        if self.asleep:
            return
        if code == CMD_MODE:
            if is_set:
                self.mode = "query" if arg else "active"
                self._next = None
            self._reply(now, CMD_MODE, is_set, 1 if self.mode == "query" else 0)
        elif code == CMD_QUERY:
            self.frame(now)
        elif code == CMD_SET_ID:
            self.device_id = (cmd[13] << 8) | cmd[14]
            self._reply(now, CMD_SET_ID, 0, 0)
        elif code == CMD_FIRMWARE:
            f = self.firmware
            self._reply(now, CMD_FIRMWARE, f.year % 100, f.month, f.day)
        elif code == CMD_PERIOD:
            if is_set and arg <= 30:
                self.period_min = arg
                self._next = None
            self._reply(now, CMD_PERIOD, is_set, self.period_min)
