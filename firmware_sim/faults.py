"""Byte-level fault injection for simulated serial devices, seeded and logged.

Fault kinds (``rates`` maps a kind to the probability per frame):

* ``bad_checksum``: the checksum bytes are changed (every other byte is intact).
* ``truncated``: the frame is cut short (1 .. len-1 bytes kept).
* ``garbled``: one byte (not the checksum) is replaced by another value; every checksum used
  here (PMS 16-bit sum, SDS 8-bit sum, NMEA XOR, Modbus CRC-16) detects a single changed byte.
* ``dropped``: 1-3 bytes inside the frame are lost, as in a UART overrun (1 byte in text
  frames, where two equal lost characters would cancel in the XOR checksum).
* ``garbage``: 1-8 random bytes are sent before the frame; they never contain the protocol's
  sync byte, so the frame itself stays decodable by a resynchronising decoder.
* ``duplicate``: the frame is sent twice in a row (both copies valid).

At most one of the four corrupting kinds hits a frame (so their rates must sum to <= 1), which
makes ``SentFrame.corrupted`` exact: a correct decoder rejects exactly those frames.
``garbage`` and ``duplicate`` are drawn independently and never make a frame invalid (except on
Modbus RTU, which has no sync byte: a master usually drops a reply with garbage before it).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from firmware_sim.base import FrameShape

CORRUPTING = ("bad_checksum", "truncated", "garbled", "dropped")
FAULT_KINDS = (*CORRUPTING, "garbage", "duplicate")


class FaultInjector:
    """Applies faults to frames with per-kind rates and its own seeded RNG."""

    def __init__(self, rates: Mapping[str, float] | None = None, seed: int | None = None) -> None:
        self.rates: dict[str, float] = {}
        for kind, rate in (rates or {}).items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
            rate = float(rate)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate {kind}={rate} is outside 0..1")
            self.rates[kind] = rate
        if sum(self.rates.get(k, 0.0) for k in CORRUPTING) > 1.0:
            raise ValueError("the rates of bad_checksum, truncated, garbled, dropped sum to > 1")
        self.seed = seed
        self.rng = random.Random(seed)

    @classmethod
    def from_spec(cls, spec: str, seed: int | None = None) -> FaultInjector:
        """Parse ``"bad_checksum=0.1,garbage=0.05"``."""
        rates: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault {part!r} has no rate; write it as {part}=0.1")
            try:
                rates[kind.strip()] = float(value)
            except ValueError:
                raise ValueError(f"fault rate {part!r} is not a number") from None
        return cls(rates, seed)

    def apply(self, frame: bytes, shape: FrameShape) -> tuple[bytes, tuple[str, ...]]:
        """Return the bytes to put on the wire and the faults applied, in order."""
        rng = self.rng
        faults: list[str] = []
        data = bytearray(frame)
        # one draw picks at most one corrupting fault
        r = rng.random()
        acc = 0.0
        for kind in CORRUPTING:
            acc += self.rates.get(kind, 0.0)
            if r < acc:
                data = self._corrupt(kind, data, shape)
                faults.append(kind)
                break
        if rng.random() < self.rates.get("garbage", 0.0):
            junk = bytes(self._garbage_byte(shape) for _ in range(rng.randint(1, 8)))
            data = bytearray(junk) + data
            faults.append("garbage")
        if rng.random() < self.rates.get("duplicate", 0.0):
            data = data + data
            faults.append("duplicate")
        return bytes(data), tuple(faults)

    # -- the faults ----------------------------------------------------------------------
    def _corrupt(self, kind: str, data: bytearray, shape: FrameShape) -> bytearray:
        rng = self.rng
        cs = range(len(data))[shape.checksum]
        # bytes after the checksum (SDS tail, NMEA CR LF) are left alone, so that every fault
        # damages the part of the frame the checksum covers
        end = cs.stop if len(cs) else len(data)
        if kind == "bad_checksum":
            i = rng.choice(list(cs))
            data[i] = self._other_byte(data[i], shape)
        elif kind == "garbled":
            # any byte except the sync byte at 0 and the checksum (changing those is another fault)
            i = rng.choice([i for i in range(1, end) if i not in cs])
            data[i] = self._other_byte(data[i], shape)
        elif kind == "truncated":
            data = data[: rng.randint(1, end - 1)]
        elif kind == "dropped":
            # text frames lose one byte: two equal dropped characters would cancel in an XOR
            for k in range(1 if shape.text else rng.randint(1, 3)):
                del data[rng.randint(1, end - 2 - k)]
        return data

    def _other_byte(self, old: int, shape: FrameShape) -> int:
        if shape.text:
            # printable, and not a character that changes the sentence structure
            pool = [c for c in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != old]
        else:
            pool = [c for c in range(256) if c != old]
        return self.rng.choice(pool)

    def _garbage_byte(self, shape: FrameShape) -> int:
        while True:
            b = self.rng.randrange(256)
            if b != shape.sync and not (shape.text and b in b"$\r\n"):
                return b
