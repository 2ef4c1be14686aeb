"""Kota roadside traffic counter: NMEA-0183-style ``$KTTRF`` sentences on a UART (9600 8N1).

One sentence per lane at the end of every counting interval (docs/protocols.md)::

    $KTTRF,<counter_id>,<lane>,<interval_s>,<hhmmss>,<ddmmyy>,<count>,<speed>,<occupancy>,
           <motorcycles>,<cars>,<heavy>*hh<CR><LF>

``hh`` = XOR of every character between ``$`` and ``*``. Samples per lane: vehicle_count,
vehicle_count_motorcycle/_car/_heavy ({vehicle}), vehicle_speed (km/h, absent when the count
is 0: the sentence leaves it empty), lane_occupancy (%).

Device ids: each lane is its own device, ``<device_id>-L<lane>`` (the readings key is
device + quantity + time, so two lanes cannot share a device id); ``lane_device_ids`` maps a
lane to any other id (e.g. ``{1 = "bkk-sukhumvit-inbound"}``).

Time: the sample time is the interval END from the sentence (UTC) when that clock looks sane:
after 2024-01-01 and, when the agent clock is itself sane, within ``max_clock_skew`` seconds
of the read time. Otherwise the read time is used and the samples are flagged CLOCK_SUSPECT
(a counter whose RTC battery died reports 2000-01-01).

Reject reasons: ``bad_checksum``, ``bad_format`` (no ``*hh`` or not hex, no CR LF, non-ASCII),
``bad_fields`` (not 12 fields or a field that does not parse), ``bad_sum`` (classes do not add
up to the count), ``unknown_sentence`` (another talker, e.g. $GPRMC), ``other_counter`` (a
``counter_id`` filter is set and differs), ``too_long`` (no line end within 82 characters),
``truncated`` (a new ``$`` before the line end, or the stream ended) and ``garbage``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from edge.drivers.base import (
    CLOCK_SANE_AFTER_S,
    AgentContext,
    DriverSpec,
    Frame,
    RejectHook,
    Sink,
    StreamParser,
    deliver,
    device_options,
    now_us,
    samples_from,
)
from edge.drivers.metrics import DriverMetrics
from edge.drivers.serial_port import SerialDriver
from gateway.schema import QualityFlag
from gateway.schema.uplink import ID_RE

KIND = "traffic_nmea"
TALKER = "KTTRF"
MAX_SENTENCE = 82  # NMEA 0183: at most 82 characters including $ and CR LF
CLASSES = ("vehicle_count_motorcycle", "vehicle_count_car", "vehicle_count_heavy")
UNITS = {
    "vehicle_count": "{vehicle}",
    "vehicle_count_motorcycle": "{vehicle}",
    "vehicle_count_car": "{vehicle}",
    "vehicle_count_heavy": "{vehicle}",
    "vehicle_speed": "km/h",
    "lane_occupancy": "%",
}
_COUNTER_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_INT_RE = re.compile(r"^[0-9]{1,9}$")
_DEC_RE = re.compile(r"^[0-9]{1,5}(\.[0-9]{1,3})?$")


def nmea_checksum(body: bytes) -> int:
    """XOR of the bytes between ``$`` and ``*``."""
    x = 0
    for ch in body:
        x ^= ch
    return x


def _sentence_time(hhmmss: str, ddmmyy: str) -> float | None:
    try:
        t = dt.datetime.strptime(ddmmyy + hhmmss, "%d%m%y%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return t.timestamp()


def decode_fields(fields: list[str]) -> tuple[dict[str, float], dict[str, Any]] | str:
    """Values and meta of one sentence's fields (after the talker), or a reject reason."""
    if len(fields) != 11:
        return "bad_fields"
    counter, lane, interval, hhmmss, ddmmyy, count, speed, occ, *classes = fields
    if not _COUNTER_RE.match(counter) or not _INT_RE.match(lane) or not _INT_RE.match(interval):
        return "bad_fields"
    if not all(_INT_RE.match(f) for f in (count, *classes)):
        return "bad_fields"
    if not _DEC_RE.match(occ) or (speed and not _DEC_RE.match(speed)):
        return "bad_fields"
    lane_n = int(lane)
    if not 1 <= lane_n <= 99 or float(occ) > 100:
        return "bad_fields"
    end = _sentence_time(hhmmss, ddmmyy) if len(hhmmss) == 6 and len(ddmmyy) == 6 else None
    if end is None:
        return "bad_fields"
    counts = [int(c) for c in classes]
    if sum(counts) != int(count):
        return "bad_sum"
    values: dict[str, float] = {"vehicle_count": float(count)}
    values.update({q: float(c) for q, c in zip(CLASSES, counts, strict=True)})
    if speed:
        values["vehicle_speed"] = float(speed)
    values["lane_occupancy"] = float(occ)
    meta = {"counter_id": counter, "lane": lane_n, "interval_s": int(interval), "interval_end": end}
    return values, meta


class TrafficNmeaParser(StreamParser):
    """Incremental ``$KTTRF`` sentence finder: ``feed(bytes) -> list[Frame]``.

    ``frame.meta``: counter_id, lane, interval_s, interval_end (epoch s, UTC).
    """

    def __init__(self, on_reject: RejectHook | None = None, counter_id: str | None = None):
        super().__init__(on_reject)
        self.counter_id = counter_id
        self._skip_line = False  # inside an over-long line: skip to its end quietly

    def _skip_rest_of_line(self) -> bool:
        """Skip the rest of an over-long line; False when more data is needed."""
        buf = self.buf
        stops = [j for j in (buf.find(b"\n"), buf.find(b"$")) if j >= 0]
        n = min(stops) if stops else len(buf)
        if stops and buf[n : n + 1] == b"\n":
            n += 1
        self._quiet_until = max(self._quiet_until, self.base + n)
        self.discard(n)
        self._skip_line = not stops
        return not self._skip_line

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out: list[Frame] = []
        buf = self.buf
        while True:
            if self._skip_line and not self._skip_rest_of_line():
                return out
            i = buf.find(b"$")
            if i < 0:
                self.discard(len(buf))
                return out
            self.discard(i)
            end = buf.find(b"\n", 1, MAX_SENTENCE)
            restart = buf.find(b"$", 1, end if end > 0 else MAX_SENTENCE)
            if restart > 0:
                self.bad("truncated", restart)
                continue
            if end < 0:
                if len(buf) >= MAX_SENTENCE:
                    self.bad("too_long", MAX_SENTENCE)
                    self._skip_line = True
                    continue
                return out
            line = bytes(buf[: end + 1])
            result = self._decode(line)
            if isinstance(result, str):
                self.bad(result, len(line))
                continue
            offset = self.accept(len(line))
            values, meta = result
            self.frames_ok += 1
            out.append(Frame(offset, values, "data", meta))

    def _decode(self, line: bytes) -> tuple[dict[str, float], dict[str, Any]] | str:
        body_end = line.rfind(b"*")
        if body_end < 0 or not line.endswith(b"\r\n") or len(line) - body_end != 5:
            return "bad_format"
        body, given = line[1:body_end], line[body_end + 1 : body_end + 3]
        try:
            text = body.decode("ascii")
            expected = int(given.decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            return "bad_format"
        if not all(c in b"0123456789ABCDEFabcdef" for c in given):
            return "bad_format"
        if nmea_checksum(body) != expected:
            return "bad_checksum"
        fields = text.split(",")
        if fields[0] != TALKER:
            return "unknown_sentence"
        result = decode_fields(fields[1:])
        if isinstance(result, str):
            return result
        if self.counter_id is not None and result[1]["counter_id"] != self.counter_id:
            return "other_counter"
        return result

    def _tail_reason(self) -> str:
        return "truncated" if self.buf.startswith(b"$") else "garbage"


def parse(data: bytes) -> tuple[list[Frame], dict[str, int]]:
    """Decode a complete capture: (frames, rejects by reason)."""
    p = TrafficNmeaParser()
    frames = p.feed(data)
    p.flush()
    return frames, dict(p.rejects)


class TrafficNmeaDriver(SerialDriver):
    """Reads a traffic counter; every valid sentence becomes one lane's samples."""

    kind = KIND

    def __init__(
        self,
        device_id: str,
        ctx: AgentContext,
        *,
        port: str,
        baudrate: int = 9600,
        counter_id: str | None = None,
        lane_device_ids: Mapping[int, str] | None = None,
        max_clock_skew: float = 300.0,
        reopen_max_delay: float = 30.0,
        metrics: DriverMetrics | None = None,
    ) -> None:
        self.counter_id = counter_id
        super().__init__(
            device_id,
            ctx,
            port=port,
            baudrate=baudrate,
            reopen_max_delay=reopen_max_delay,
            metrics=metrics,
        )
        self.lane_device_ids = dict(lane_device_ids or {})
        self.max_clock_skew = max_clock_skew

    def new_parser(self) -> TrafficNmeaParser:
        return TrafficNmeaParser(on_reject=self.stats.reject, counter_id=self.counter_id)

    def lane_device(self, lane: int) -> str:
        return self.lane_device_ids.get(lane) or f"{self.device_id}-L{lane}"

    def sample_time(self, interval_end: float) -> tuple[int, int]:
        """(observed µs, flags) for a sentence: its interval end if sane, else read time."""
        read_us, flags = now_us(self.ctx.clock)
        if interval_end >= CLOCK_SANE_AFTER_S and (
            flags or abs(interval_end - read_us / 1e6) <= self.max_clock_skew
        ):
            return int(interval_end) * 1_000_000, 0
        return read_us, int(QualityFlag.CLOCK_SUSPECT)

    def on_frame(self, frame: Frame, sink: Sink) -> None:
        observed_us, flags = self.sample_time(frame.meta["interval_end"])
        samples = samples_from(frame.values, UNITS, observed_us, flags)
        if deliver(sink, self.lane_device(frame.meta["lane"]), samples, self.stats):
            self.stats.ok(len(samples))


SAMPLE_CONFIG = """\
[[devices]]
kind = "traffic_nmea"
## Lanes become devices "<device_id>-L<lane>" (e.g. bkk-trf-01-L1) unless mapped below.
device_id = "bkk-trf-01"
port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
# baudrate = 9600
## Accept only sentences of this counter id (field 2); unset = any.
# counter_id = "KT0001"
## Give lanes their own device ids instead of <device_id>-L<lane>.
# lane_device_ids = { 1 = "bkk-sukhumvit-in", 2 = "bkk-sukhumvit-out" }
## The sentence's interval end is used as the sample time when it is after 2024-01-01 and
## within this many seconds of the read time; else read time + CLOCK_SUSPECT.
# max_clock_skew = 300.0
# reopen_max_delay = 30.0
"""


def build(table: Mapping[str, Any], ctx: AgentContext) -> TrafficNmeaDriver:
    """Validate a [[devices]] table of kind traffic_nmea and build the driver."""
    o = device_options(table)
    device_id = o.get_ident("device_id")
    counter_id = o.get_str("counter_id", None)
    if counter_id is not None and not _COUNTER_RE.match(counter_id):
        raise o.error("counter_id", "must be 1-16 of A-Z a-z 0-9 - _")
    raw_lanes = o.raw("lane_device_ids", {})
    if not isinstance(raw_lanes, Mapping):
        raise o.error("lane_device_ids", 'must be a table like { 1 = "id" }')
    lanes: dict[int, str] = {}
    for key, value in raw_lanes.items():
        if not str(key).isdigit() or not 1 <= int(key) <= 99:
            raise o.error(f"lane_device_ids.{key}", "lane must be 1..99")
        if not isinstance(value, str) or not ID_RE.match(value):
            raise o.error(f"lane_device_ids.{key}", f"{value!r} is not a valid device id")
        lanes[int(key)] = value
    kwargs = {
        "port": o.get_str("port"),
        "baudrate": o.get_int("baudrate", 9600, min=1200),
        "max_clock_skew": o.get_float("max_clock_skew", 300.0, min=1.0),
        "reopen_max_delay": o.get_float("reopen_max_delay", 30.0, min=0.5),
    }
    o.finish()
    if len(device_id) > 60:
        raise o.error("device_id", "at most 60 characters (the lane suffix -L<n> is added)")
    return TrafficNmeaDriver(device_id, ctx, counter_id=counter_id, lane_device_ids=lanes, **kwargs)


SPEC = DriverSpec(kind=KIND, sample_config=SAMPLE_CONFIG, build=build)
