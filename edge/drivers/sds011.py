"""Nova Fitness SDS011 particulate sensor on a UART (9600 8N1).

Data frame, 10 bytes (Laser Dust Sensor Control Protocol V1.3)::

    AA C0 PM25_lo PM25_hi PM10_lo PM10_hi ID1 ID2 CS AB
    pm2_5, pm10 [ug/m3] = (hi * 256 + lo) / 10;  CS = low byte of the sum of bytes 2-7

Command replies ``AA C5 <cmd> <d1> <d2> <d3> ID1 ID2 CS AB`` are parsed as "ack" frames (never
readings, never rejects). Host commands are 19 bytes ``AA B4 <cmd> <data 12> ID1 ID2 CS AB``
(CS over bytes 2-16; ID ``FF FF`` = any sensor): 2 reporting mode, 4 query, 6 sleep/work,
8 working period.

Reject reasons: ``bad_checksum``, ``bad_tail`` (byte 9 is not AB), ``unknown_type`` (byte 1
neither C0 nor C5), ``truncated`` (a new frame start inside the frame, or the stream ended
mid-frame), ``garbage`` (bytes outside any frame, counted once per run).
"""

from __future__ import annotations

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

KIND = "sds011"
HEAD, TAIL = 0xAA, 0xAB
DATA, REPLY, COMMAND = 0xC0, 0xC5, 0xB4
FRAME_BYTES = 10
UNITS = {"pm2_5": "ug/m3", "pm10": "ug/m3"}
CMD_MODE, CMD_QUERY, CMD_SLEEP, CMD_PERIOD = 2, 4, 6, 8


def command(cmd: int, data: bytes = b"", sensor_id: int = 0xFFFF) -> bytes:
    """A 19-byte host command; ``data`` are bytes 3.. (zero padded to 12)."""
    body = bytes([cmd]) + data.ljust(12, b"\x00") + bytes([sensor_id >> 8, sensor_id & 0xFF])
    return bytes([HEAD, COMMAND]) + body + bytes([sum(body) & 0xFF, TAIL])


class Sds011Parser(StreamParser):
    """Incremental SDS011 frame finder: ``feed(bytes) -> list[Frame]``."""

    @staticmethod
    def _restart_inside(frame: bytes) -> bool:
        return any(
            frame[i] == HEAD and (i + 1 == len(frame) or frame[i + 1] in (DATA, REPLY))
            for i in range(1, len(frame))
        )

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out: list[Frame] = []
        buf = self.buf
        while True:
            i = buf.find(HEAD)
            if i < 0:
                self.discard(len(buf))
                return out
            self.discard(i)
            if len(buf) < 2:
                return out
            if buf[1] not in (DATA, REPLY):
                self.bad("unknown_type", FRAME_BYTES)
                continue
            if len(buf) < FRAME_BYTES:
                return out
            frame = bytes(buf[:FRAME_BYTES])
            if frame[9] != TAIL or sum(frame[2:8]) & 0xFF != frame[8]:
                if self._restart_inside(frame):
                    self.bad("truncated", FRAME_BYTES)
                else:
                    self.bad("bad_tail" if frame[9] != TAIL else "bad_checksum", FRAME_BYTES)
                continue
            offset = self.accept(FRAME_BYTES)
            sensor = f"{frame[6]:02X}{frame[7]:02X}"
            if frame[1] == REPLY:
                meta = {"command": frame[2], "data": list(frame[3:6]), "sensor_id": sensor}
                out.append(Frame(offset, {}, "ack", meta))
                continue
            values = {
                "pm2_5": (frame[3] * 256 + frame[2]) / 10,
                "pm10": (frame[5] * 256 + frame[4]) / 10,
            }
            self.frames_ok += 1
            out.append(Frame(offset, values, "data", {"sensor_id": sensor}))

    def _tail_reason(self) -> str:
        return "truncated" if self.buf[:1] == bytes([HEAD]) else "garbage"


def parse(data: bytes) -> tuple[list[Frame], dict[str, int]]:
    """Decode a complete capture: (frames, rejects by reason)."""
    p = Sds011Parser()
    frames = p.feed(data)
    p.flush()
    return frames, dict(p.rejects)


class Sds011Driver(PolledSerialDriver):
    """Reads an SDS011: active reports or query mode, optional sleep/work duty cycling."""

    kind = KIND
    polled_mode = "query"
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
        working_period: int | None = None,
        sensor_id: int = 0xFFFF,
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
        self.working_period = working_period
        self.sensor_id = sensor_id

    def new_parser(self) -> Sds011Parser:
        return Sds011Parser(on_reject=self.stats.reject)

    def _cmd(self, cmd: int, *data: int) -> bytes:
        return command(cmd, bytes(data), self.sensor_id)

    def open_commands(self) -> list[bytes]:
        cmds = [self._cmd(CMD_MODE, 1, 1 if self.mode == "query" else 0)]
        if self.working_period is not None:
            cmds.append(self._cmd(CMD_PERIOD, 1, self.working_period))
        return cmds

    def read_command(self) -> bytes:
        return self._cmd(CMD_QUERY)

    def sleep_command(self) -> bytes:
        return self._cmd(CMD_SLEEP, 1, 0)

    def wake_command(self) -> bytes:
        return self._cmd(CMD_SLEEP, 1, 1)


SAMPLE_CONFIG = """\
[[devices]]
kind = "sds011"
device_id = "bkk-sds-01"
port = "/dev/serial/by-id/usb-1a86_USB2.0-Serial-if00-port0"
# baudrate = 9600
## "active": the sensor reports every second (or every working_period minutes).
## "query": the driver sends the query command (4) once per interval.
# mode = "active"
## Seconds between readings handed to the outbox; 0 = every report (active mode).
# interval = 60.0
## Sleep the fan and laser between readings (command 6): the laser lasts ~8000 h running,
## so a 1-in-5 duty cycle makes a sensor last years instead of a year. Wake, discard
## `warmup` seconds of frames, read once, sleep. Needs interval > warmup.
# duty_cycle = false
# warmup = 30.0
## The sensor's own duty cycle (command 8): report every n minutes (1-30) and sleep between,
## 0 = continuous. Unset = leave the sensor's stored setting alone (it survives power-off).
# working_period = 5
## Address one sensor by its 2-byte id (hex, as printed in the frame), "FFFF" = any.
# sensor_id = "FFFF"
## Seconds to wait for a frame after a query before counting "no_response".
# reply_timeout = 3.0
# reopen_max_delay = 30.0
"""


def build(table: Mapping[str, Any], ctx: AgentContext) -> Sds011Driver:
    """Validate a [[devices]] table of kind sds011 and build the driver."""
    o = device_options(table)
    device_id = o.get_ident("device_id")
    sensor_hex = o.get_str("sensor_id", "FFFF")
    try:
        sensor_id = int(sensor_hex, 16)
        if len(sensor_hex) != 4:
            raise ValueError
    except ValueError:
        raise o.error("sensor_id", f"must be 4 hex digits like A160, got {sensor_hex!r}") from None
    kwargs = {
        "port": o.get_str("port"),
        "baudrate": o.get_int("baudrate", 9600, min=1200),
        "mode": o.get_str("mode", "active", choices=("active", "query")),
        "interval": o.get_float("interval", 60.0, min=0.0),
        "duty_cycle": o.get_bool("duty_cycle", False),
        "warmup": o.get_float("warmup", 30.0, min=0.0),
        "working_period": o.get_int("working_period", None, min=0, max=30),
        "reply_timeout": o.get_float("reply_timeout", 3.0, min=0.1),
        "reopen_max_delay": o.get_float("reopen_max_delay", 30.0, min=0.5),
    }
    o.finish()
    if kwargs["duty_cycle"] and kwargs["interval"] <= kwargs["warmup"]:
        raise o.error("interval", f"must exceed warmup ({kwargs['warmup']} s) with duty_cycle")
    if kwargs["duty_cycle"] and kwargs["working_period"]:
        raise o.error("working_period", "use either duty_cycle or working_period, not both")
    return Sds011Driver(device_id, ctx, sensor_id=sensor_id, **kwargs)


SPEC = DriverSpec(kind=KIND, sample_config=SAMPLE_CONFIG, build=build)
