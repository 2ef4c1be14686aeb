"""Plantower PMS5003 particulate sensor on a UART (9600 8N1).

Data frame, 32 bytes, big-endian uint16 words (Plantower PMS5003 data manual V2.3, appendix I)::

    42 4D | 00 1C | 13 data words | checksum = 16-bit sum of bytes 0-29
    words 1-3  PM1.0, PM2.5, PM10 at CF=1 (standard particle)   -> pm1_cf1, pm2_5_cf1, pm10_cf1
    words 4-6  PM1.0, PM2.5, PM10, atmospheric environment      -> pm1, pm2_5, pm10   [ug/m3]
    words 7-12 particles > 0.3, 0.5, 1.0, 2.5, 5.0, 10 um / 0.1 L -> particles_0_3 ... [/dL]
    word 13    reserved (firmware version, error code)

Commands are 7 bytes ``42 4D CMD DATAH DATAL CS16``; mode and sleep commands are acknowledged
with ``42 4D 00 04 CMD DATA CS16`` (parsed as "ack" frames, never rejected).

The parser finds frames anywhere in the byte stream, keeps partial frames across reads and,
after a bad frame, searches for the next header one byte after the bad start. Reject reasons:
``bad_checksum``, ``bad_length`` (length word not 28 or 4), ``truncated`` (a new header
inside the frame, or the stream ended mid-frame) and ``garbage`` (bytes outside any frame,
counted once per run).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from edge.drivers.base import (
    AgentContext,
    DriverSpec,
    Frame,
    StreamParser,
    device_options,
)
from edge.drivers.metrics import DriverMetrics
from edge.drivers.serial_port import PolledSerialDriver

KIND = "pms5003"
HEADER = b"\x42\x4d"
DATA_LEN, ACK_LEN = 28, 4
FRAME_BYTES = 32

#: quantity of each data word, in frame order (word 13 is reserved)
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
UNITS = {q: ("/dL" if q.startswith("particles") else "ug/m3") for q in FIELDS}

CMD_MODE, CMD_READ, CMD_SLEEP = 0xE1, 0xE2, 0xE4


def command(cmd: int, data: int = 0) -> bytes:
    """A 7-byte host command (checksum = 16-bit sum of the first five bytes)."""
    body = HEADER + bytes([cmd, (data >> 8) & 0xFF, data & 0xFF])
    return body + struct.pack(">H", sum(body) & 0xFFFF)


CMD_PASSIVE = command(CMD_MODE, 0)  # 42 4D E1 00 00 01 70
CMD_ACTIVE = command(CMD_MODE, 1)  # 42 4D E1 00 01 01 71
CMD_READ_NOW = command(CMD_READ, 0)  # 42 4D E2 00 00 01 71
CMD_SLEEP_NOW = command(CMD_SLEEP, 0)  # 42 4D E4 00 00 01 73
CMD_WAKE = command(CMD_SLEEP, 1)  # 42 4D E4 00 01 01 74


class Pms5003Parser(StreamParser):
    """Incremental PMS5003 frame finder: ``feed(bytes) -> list[Frame]``."""

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out: list[Frame] = []
        buf = self.buf
        while True:
            i = buf.find(HEADER)
            if i < 0:
                # keep a trailing 0x42: it may be the first half of a header
                self.discard(len(buf) - (1 if buf.endswith(b"\x42") else 0))
                return out
            self.discard(i)
            if len(buf) < 4:
                return out
            length = (buf[2] << 8) | buf[3]
            if length not in (DATA_LEN, ACK_LEN):
                self.bad("truncated" if buf.find(HEADER, 1, 4) > 0 else "bad_length", FRAME_BYTES)
                continue
            need = length + 4
            if len(buf) < need:
                return out
            frame = bytes(buf[:need])
            if sum(frame[:-2]) & 0xFFFF != (frame[-2] << 8) | frame[-1]:
                self.bad("truncated" if frame.find(HEADER, 1, need) > 0 else "bad_checksum", need)
                continue
            offset = self.accept(need)
            if length == ACK_LEN:
                out.append(Frame(offset, {}, "ack", {"command": frame[4], "data": frame[5]}))
                continue
            words = struct.unpack(">13H", frame[4:30])
            values = {q: float(w) for q, w in zip(FIELDS, words, strict=False)}
            self.frames_ok += 1
            out.append(Frame(offset, values, "data", {"reserved": words[12]}))

    def _tail_reason(self) -> str:
        return "truncated" if self.buf.startswith(HEADER) else "garbage"


def parse(data: bytes) -> tuple[list[Frame], dict[str, int]]:
    """Decode a complete capture: (frames, rejects by reason)."""
    p = Pms5003Parser()
    frames = p.feed(data)
    p.flush()
    return frames, dict(p.rejects)


class Pms5003Driver(PolledSerialDriver):
    """Reads a PMS5003: active (the sensor streams) or passive (read command per interval).

    ``interval`` > 0 emits at most one reading per interval (the first valid frame after each
    due time); 0 emits every frame. With ``duty_cycle`` the fan and laser sleep between
    readings: wake, discard ``warmup`` seconds of frames, take one reading, sleep again.
    """

    kind = KIND
    polled_mode = "passive"
    units = UNITS

    def __init__(
        self,
        device_id: str,
        ctx: AgentContext,
        *,
        port: str,
        baudrate: int = 9600,
        mode: str = "active",
        interval: float = 60.0,
        duty_cycle: bool = False,
        warmup: float = 30.0,
        reply_timeout: float = 3.0,
        reopen_max_delay: float = 30.0,
        metrics: DriverMetrics | None = None,
    ) -> None:
        super().__init__(
            device_id,
            ctx,
            port=port,
            baudrate=baudrate,
            mode=mode,
            interval=interval,
            duty_cycle=duty_cycle,
            warmup=warmup,
            reply_timeout=reply_timeout,
            reopen_max_delay=reopen_max_delay,
            metrics=metrics,
        )

    def new_parser(self) -> Pms5003Parser:
        return Pms5003Parser(on_reject=self.stats.reject)

    def open_commands(self) -> list[bytes]:
        return [CMD_PASSIVE if self.mode == "passive" else CMD_ACTIVE]

    def read_command(self) -> bytes:
        return CMD_READ_NOW

    def sleep_command(self) -> bytes:
        return CMD_SLEEP_NOW

    def wake_command(self) -> bytes:
        return CMD_WAKE


SAMPLE_CONFIG = """\
[[devices]]
kind = "pms5003"
device_id = "bkk-pms-01"
## Serial port: prefer the stable udev name over /dev/ttyUSB0.
port = "/dev/serial/by-id/usb-Silicon_Labs_CP2102_USB_to_UART_Bridge_Controller_0001-if00-port0"
# baudrate = 9600
## "active": the sensor streams a frame every ~1-2.3 s (power-up default).
## "passive": the driver sends the read command 42 4D E2 once per interval.
# mode = "active"
## Seconds between readings handed to the outbox (the first valid frame after each due time);
## 0 = every frame (about one per second: a lot of data).
# interval = 60.0
## Sleep the fan and laser between readings (extends the ~8000 h laser life): wake, discard
## `warmup` seconds of frames (data are stable ~30 s after wake), read once, sleep.
## Needs interval > warmup.
# duty_cycle = false
# warmup = 30.0
## Seconds to wait for a frame after a read request before counting "no_response".
# reply_timeout = 3.0
## Longest wait between attempts to reopen a lost port (backoff doubles from 0.5 s).
# reopen_max_delay = 30.0
"""


def build(table: Mapping[str, Any], ctx: AgentContext) -> Pms5003Driver:
    """Validate a [[devices]] table of kind pms5003 and build the driver."""
    o = device_options(table)
    kwargs = {
        "port": o.get_str("port"),
        "baudrate": o.get_int("baudrate", 9600, min=1200),
        "mode": o.get_str("mode", "active", choices=("active", "passive")),
        "interval": o.get_float("interval", 60.0, min=0.0),
        "duty_cycle": o.get_bool("duty_cycle", False),
        "warmup": o.get_float("warmup", 30.0, min=0.0),
        "reply_timeout": o.get_float("reply_timeout", 3.0, min=0.1),
        "reopen_max_delay": o.get_float("reopen_max_delay", 30.0, min=0.5),
    }
    device_id = o.get_ident("device_id")
    o.finish()
    if kwargs["duty_cycle"] and kwargs["interval"] <= kwargs["warmup"]:
        raise o.error("interval", f"must exceed warmup ({kwargs['warmup']} s) with duty_cycle")
    return Pms5003Driver(device_id, ctx, **kwargs)


SPEC = DriverSpec(kind=KIND, sample_config=SAMPLE_CONFIG, build=build)
