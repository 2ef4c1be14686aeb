"""Kota's roadside traffic counter: one NMEA-0183-style sentence per lane per interval.

Sentence (ASCII, at most 82 characters, like NMEA 0183)::

    $KTTRF,<counter_id>,<lane>,<interval_s>,<hhmmss>,<ddmmyy>,<count>,<speed>,<occupancy>,
           <motorcycles>,<cars>,<heavy>*hh<CR><LF>

* ``counter_id``: 1-16 characters ``A-Z a-z 0-9 - _``; ``lane``: 1-99; ``interval_s``: the
  counting interval in seconds; ``hhmmss``/``ddmmyy``: UTC END of the interval.
* ``count``: vehicles in the interval = motorcycles + cars + heavy (always).
* ``speed``: mean speed in km/h with one decimal; EMPTY when count is 0 (no vehicle, no speed).
* ``occupancy``: percent of the interval the detection zone was occupied, one decimal, 0-100.
* ``hh``: XOR of every character between ``$`` and ``*``, two uppercase hex digits.

Worked example (docs/protocols.md)::

    $KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13,2*64

There is no industry standard for this sentence; it is Kota's own, modelled on NMEA 0183
(talker/sentence id, comma fields, XOR checksum, CR LF; NMEA 0183 v4.11 section 5.2) and on the
per-interval, per-lane, per-class records of commercial roadside counters (loop/radar counters
report count, mean speed, occupancy and vehicle classes per lane per interval).

Values: the ValueSource gives ``vehicle_count``, ``vehicle_count_motorcycle``,
``vehicle_count_car``, ``vehicle_count_heavy``, ``vehicle_speed`` (km/h) and
``lane_occupancy`` (%), per lane as ``"<quantity>:lane<n>"`` with the plain key as fallback.
When the class counts are missing, ``vehicle_count`` is split with ``class_shares``
(default 60 % motorcycles, 32 % cars, 8 % heavy, typical of ASEAN city traffic) by largest
remainder; when present, count is their sum.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence

from firmware_sim.base import (
    DeviceBase,
    FrameShape,
    SerialSettings,
    ValueSource,
    channel_value,
    finite,
)
from firmware_sim.faults import FaultInjector

TALKER = "KTTRF"
CLASSES = ("vehicle_count_motorcycle", "vehicle_count_car", "vehicle_count_heavy")
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


def nmea_checksum(body: str) -> str:
    """XOR of the characters between ``$`` and ``*`` as two uppercase hex digits."""
    x = 0
    for ch in body.encode("ascii"):
        x ^= ch
    return f"{x:02X}"


def split_count(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``shares`` (largest remainder)."""
    s = sum(shares)
    raw = [total * w / s for w in shares]
    parts = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def lane_values(
    values: Mapping[str, float], lane: int, shares: Sequence[float] = (0.60, 0.32, 0.08)
) -> dict[str, float]:
    """The quantised values of one lane, as a decoder reads them back."""
    ch = f"lane{lane}"
    classes = [channel_value(values, q, ch) for q in CLASSES]
    if all(c is not None for c in classes):
        counts = [max(0, round(finite(c))) for c in classes]
    else:
        total = max(0, round(finite(channel_value(values, "vehicle_count", ch))))
        counts = split_count(total, shares)
    out: dict[str, float] = {"vehicle_count": float(sum(counts))}
    out.update({q: float(c) for q, c in zip(CLASSES, counts, strict=True)})
    if sum(counts):
        speed = min(max(finite(channel_value(values, "vehicle_speed", ch)), 0.0), 999.9)
        out["vehicle_speed"] = float(f"{speed:.1f}")
    occ = min(max(finite(channel_value(values, "lane_occupancy", ch)), 0.0), 100.0)
    out["lane_occupancy"] = float(f"{occ:.1f}")
    return out


def encode_sentence(
    counter_id: str, lane: int, interval_s: int, end: float, lane_vals: Mapping[str, float]
) -> bytes:
    """One ``$KTTRF`` sentence; ``lane_vals`` as returned by :func:`lane_values`."""
    if not _ID_RE.match(counter_id):
        raise ValueError(f"counter_id {counter_id!r} must be 1-16 of A-Z a-z 0-9 - _")
    if not 1 <= lane <= 99:
        raise ValueError("lane must be 1..99")
    t = dt.datetime.fromtimestamp(round(end), tz=dt.UTC)
    speed = lane_vals.get("vehicle_speed")
    fields = [
        TALKER,
        counter_id,
        str(lane),
        str(int(interval_s)),
        t.strftime("%H%M%S"),
        t.strftime("%d%m%y"),
        str(int(lane_vals["vehicle_count"])),
        "" if speed is None else f"{speed:.1f}",
        f"{lane_vals['lane_occupancy']:.1f}",
        *(str(int(lane_vals[q])) for q in CLASSES),
    ]
    body = ",".join(fields)
    return f"${body}*{nmea_checksum(body)}\r\n".encode("ascii")


class TrafficCounter(DeviceBase):
    """A roadside counter that sends one sentence per lane at the end of every interval.

    Intervals are aligned to UTC (a 60 s counter reports at every full minute).
    """

    kind = "traffic_nmea"
    shape = FrameShape(checksum=slice(-4, -2), sync=ord("$"), text=True)

    def __init__(
        self,
        source: ValueSource,
        name: str = "traffic",
        *,
        counter_id: str = "KT0001",
        lanes: int | Sequence[int] = 1,
        interval_s: int = 60,
        class_shares: Sequence[float] = (0.60, 0.32, 0.08),
        faults: FaultInjector | None = None,
        serial: SerialSettings | None = None,
        log_limit: int | None = 10_000,
    ) -> None:
        super().__init__(source, name, faults=faults, serial=serial, log_limit=log_limit)
        if not _ID_RE.match(counter_id):
            raise ValueError(f"counter_id {counter_id!r} must be 1-16 of A-Z a-z 0-9 - _")
        self.lanes = list(range(1, lanes + 1)) if isinstance(lanes, int) else list(lanes)
        if not self.lanes or not all(1 <= n <= 99 for n in self.lanes):
            raise ValueError("lanes must be 1..99")
        if int(interval_s) < 1:
            raise ValueError("interval_s must be >= 1")
        if len(class_shares) != 3 or sum(class_shares) <= 0:
            raise ValueError("class_shares needs 3 non-negative shares")
        self.counter_id = counter_id
        self.interval_s = int(interval_s)
        self.class_shares = tuple(class_shares)
        self._next_end: float | None = None

    def report(self, end: float, now: float | None = None) -> None:
        """Send the sentences of the interval ending at ``end``."""
        values = self.source(end)
        for lane in self.lanes:
            lv = lane_values(values, lane, self.class_shares)
            frame = encode_sentence(self.counter_id, lane, self.interval_s, end, lv)
            self._send(
                end if now is None else now,
                frame,
                lv,
                meta={"lane": lane, "interval_end": end, "counter_id": self.counter_id},
            )

    def _tick(self, now: float) -> None:
        if self._next_end is None:
            self._next_end = (math.floor(now / self.interval_s) + 1) * self.interval_s
        while now >= self._next_end:
            self.report(self._next_end, now)
            self._next_end += self.interval_s
