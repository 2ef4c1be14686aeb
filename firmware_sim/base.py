"""The interface every simulated serial device keeps, and the helpers they share.

A device turns live values into the exact bytes the real hardware would put on the wire:

* ``ValueSource`` gives the values: epoch seconds (UTC) -> {kota quantity: value in the
  canonical unit of ``gateway/schema/quantities.toml``}. Per-channel values (a lane of a
  traffic counter, a phase of a three-phase meter) use the key ``"<quantity>:<channel>"``,
  e.g. ``"vehicle_count:lane2"`` or ``"voltage:L1"``; a device falls back to the plain
  quantity key when the channel key is absent (see :func:`channel_value`).
* ``SerialDevice`` is what a transport drives: ``receive()`` gets the bytes the host wrote,
  ``emit()`` returns the bytes the device sends at time ``now`` (``b""`` if none).
* ``sent_log`` records every frame put on the wire as a :class:`SentFrame`: the values as a
  correct decoder must decode them (after the device's integer quantisation) and the faults
  injected into it, so tests can compare what was sent with what was received.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from firmware_sim.faults import FaultInjector

ValueSource = Callable[[float], Mapping[str, float]]

#: Faults after which the frame must be rejected by a correct decoder.
CORRUPTING_FAULTS = frozenset({"bad_checksum", "truncated", "garbled", "dropped"})


@dataclass(frozen=True)
class SentFrame:
    """One frame a device put on the wire."""

    time: float  # epoch seconds when it was emitted
    kind: str  # device kind, e.g. "pms5003", "modbus:sdm120"
    name: str  # device name
    values: Mapping[str, float]  # quantity -> value as decoded from the clean frame
    faults: tuple[str, ...] = ()  # injected faults, see firmware_sim.faults
    data: bytes = b""  # the bytes actually written (after faults, incl. garbage/duplicate)
    frame_type: str = "data"  # "data", "ack" (command reply), "exception" (Modbus)
    meta: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"lane": 2}, {"address": 1}

    @property
    def corrupted(self) -> bool:
        """True when a correct decoder must reject this frame."""
        return any(f in CORRUPTING_FAULTS for f in self.faults)


@runtime_checkable
class SerialDevice(Protocol):
    """What a transport (pty bus, capture writer) needs from a device."""

    kind: str
    name: str
    sent_log: list[SentFrame]

    def receive(self, data: bytes, now: float) -> None:
        """Bytes written by the host (commands, Modbus requests)."""
        ...

    def emit(self, now: float) -> bytes:
        """Bytes the device sends at time ``now``; ``b""`` if none."""
        ...


@dataclass(frozen=True)
class SerialSettings:
    """UART line settings a device expects (the pty gets the baud rate)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1


@dataclass(frozen=True)
class FrameShape:
    """Where a frame's checksum sits and how its sync looks, for fault injection."""

    checksum: slice  # the checksum bytes inside the frame
    sync: int | None = None  # first byte of every frame; garbage never contains it
    text: bool = False  # ASCII protocol: garbled bytes stay printable


def channel_value(values: Mapping[str, float], quantity: str, channel: str = "") -> float | None:
    """The value for ``quantity`` on ``channel``, falling back to the plain quantity."""
    if channel:
        v = values.get(f"{quantity}:{channel}")
        if v is not None:
            return float(v)
    v = values.get(quantity)
    return None if v is None else float(v)


def finite(value: float | None, default: float = 0.0) -> float:
    """``value`` unless it is missing, NaN or infinite."""
    if value is None or not math.isfinite(value):
        return default
    return float(value)


class DeviceBase:
    """Common plumbing: output queue, fault injection and the sent log.

    Subclasses implement ``receive()`` and ``_tick(now)`` and call ``_send()`` for every frame.
    """

    kind: str = "base"
    shape: ClassVar[FrameShape] = FrameShape(checksum=slice(-2, None))

    def __init__(
        self,
        source: ValueSource,
        name: str,
        *,
        faults: FaultInjector | None = None,
        serial: SerialSettings | None = None,
        log_limit: int | None = 10_000,
    ) -> None:
        self.source = source
        self.name = name
        self.faults = faults
        self.serial = serial or SerialSettings()
        self.log_limit = log_limit
        self.sent_log: list[SentFrame] = []
        self._out = bytearray()

    # -- SerialDevice -------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> None:
        """Default: the device ignores what the host writes."""

    def emit(self, now: float) -> bytes:
        """Run the device up to ``now`` and return what it sent."""
        self._tick(now)
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- for subclasses -----------------------------------------------------------------
    def _tick(self, now: float) -> None:
        """Queue the frames due at ``now`` (active-mode reports)."""

    def _send(
        self,
        now: float,
        frame: bytes,
        values: Mapping[str, float],
        *,
        frame_type: str = "data",
        meta: Mapping[str, Any] | None = None,
        shape: FrameShape | None = None,
    ) -> None:
        """Apply faults to ``frame``, queue the bytes and log the frame."""
        faults: tuple[str, ...] = ()
        data = frame
        if self.faults is not None:
            data, faults = self.faults.apply(frame, shape or self.shape)
        self._out += data
        self.sent_log.append(
            SentFrame(
                time=now,
                kind=self.kind,
                name=self.name,
                values=dict(values),
                faults=faults,
                data=data,
                frame_type=frame_type,
                meta=dict(meta or {}),
            )
        )
        if self.log_limit is not None and len(self.sent_log) > self.log_limit:
            del self.sent_log[: len(self.sent_log) - self.log_limit]


# A fixed reference instant (2025-01-01T00:00:00Z) so demo captures are reproducible.
DEMO_EPOCH = 1_735_689_600.0


def demo_source(t: float) -> dict[str, float]:
    """A deterministic stand-in ValueSource (plausible values, meter totals that only grow).

    For captures and tests; live runs use ``firmware_sim.profiles``.
    """
    hours = (t - DEMO_EPOCH) / 3600.0
    day = math.sin(2 * math.pi * hours / 24.0)
    fast = math.sin(2 * math.pi * hours)
    pm2_5 = 28.0 + 12.0 * day + 3.0 * fast
    power = 450.0 + 150.0 * fast
    meter_h = max(t - 978_307_200.0, 0.0) / 3600.0  # hours since 2001: totals always grow
    return {
        "pm1": 0.7 * pm2_5,
        "pm2_5": pm2_5,
        "pm10": 1.45 * pm2_5,
        "co2": 620.0 + 180.0 * day,
        "temperature": 29.5 + 3.5 * day,
        "relative_humidity": 74.0 - 12.0 * day,
        "vehicle_count": 42.0 + 18.0 * day,
        "vehicle_speed": 38.5 - 6.0 * day,
        "lane_occupancy": 14.0 + 6.0 * day,
        "water_flow": 1.2,
        "water_volume": 1.2 * meter_h,
        "voltage": 230.0 + 2.0 * fast,
        "current": power / 230.0,
        "active_power": power,
        "frequency": 50.0,
        "active_energy_import": 0.45 * meter_h,
        "active_energy_export": 0.01 * meter_h,
    }
