"""The driver interface the agent core codes against, plus the helpers every driver shares.

A driver reads one device (or one bus) in its own thread: ``run(sink, stop)`` blocks, turns
frames into :class:`gateway.schema.Sample` lists and hands them to ``sink(device_id, samples)``
(the durable outbox write). It never raises for device or I/O errors: it counts them, backs
off and retries, and returns when ``stop`` is set. ``health()`` is a small JSON-able dict.

``DriverSpec.build(table, ctx)`` validates one ``[[devices]]`` table and raises
:class:`kota_cli.errors.ConfigError` with ``"<field>: <what is wrong>"``; the agent core
prefixes ``devices[<i>].``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from edge.drivers.metrics import DriverMetrics, driver_metrics
from gateway.schema import QualityFlag, Sample
from gateway.schema.uplink import ID_RE
from kota_cli.errors import ConfigError

log = logging.getLogger("kota.edge.drivers")

Sink = Callable[[str, Sequence[Sample]], None]

#: Before this instant (2024-01-01T00:00:00Z) the clock is taken as unset: a Raspberry Pi has
#: no RTC and starts at its last saved time (or 1970) until NTP syncs.
CLOCK_SANE_AFTER_S = 1_704_067_200.0
#: Keys every [[devices]] table may carry besides the driver's own options.
COMMON_KEYS = frozenset({"kind", "driver", "device_id", "enabled", "description", "name"})


@dataclass(frozen=True)
class AgentContext:
    """What the agent core tells every driver about where it runs."""

    agent_id: str
    city: str
    site: str
    clock: Callable[[], float] = time.time


@runtime_checkable
class Driver(Protocol):
    """One device (or bus) reader; see the module docstring."""

    device_id: str
    kind: str

    def run(self, sink: Sink, stop: threading.Event) -> None: ...

    def health(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class DriverSpec:
    """A registry entry: the driver's name, its documented sample config and its factory."""

    kind: str
    sample_config: str
    build: Callable[[Mapping[str, Any], AgentContext], Driver]


@dataclass(frozen=True)
class Frame:
    """One decoded protocol frame.

    ``offset`` is the byte offset of the frame's first byte in the stream fed to the parser;
    ``values`` maps kota quantity -> value in the unit of ``units``; ``kind`` is "data" or
    "ack" (a command reply, no values); ``meta`` carries protocol fields (lane, time, ...).
    """

    offset: int
    values: dict[str, float]
    kind: str = "data"
    meta: dict[str, Any] = field(default_factory=dict)


RejectHook = Callable[[str, int], None]


class StreamParser:
    """Common bookkeeping of the byte-stream parsers: offsets, resync and reject counts.

    Counting is independent of how the stream is split into reads: a run of garbage is one
    ``garbage`` reject however many reads it spans, and the bytes of a rejected frame that
    are skipped while resynchronising are not counted again as garbage.
    """

    def __init__(self, on_reject: RejectHook | None = None) -> None:
        self.buf = bytearray()
        self.base = 0  # stream offset of buf[0]
        self.rejects: Counter[str] = Counter()
        self.frames_ok = 0
        self.on_reject = on_reject
        self._quiet_until = 0  # bytes before this offset belong to a rejected frame
        self._run_end = -1  # end offset of the current garbage run
        self._run_counted = False

    def reject(self, reason: str, offset: int) -> None:
        self.rejects[reason] += 1
        if self.on_reject is not None:
            self.on_reject(reason, offset)

    def consume(self, n: int) -> None:
        del self.buf[:n]
        self.base += n

    def discard(self, n: int) -> None:
        """Skip ``n`` bytes that are not a frame start."""
        if n <= 0:
            return
        start, end = self.base, self.base + n
        if start != self._run_end:
            self._run_counted = False
        if end > self._quiet_until and not self._run_counted:
            self.reject("garbage", max(start, self._quiet_until))
            self._run_counted = True
        self._run_end = end
        self.consume(n)

    def bad(self, reason: str, span: int) -> None:
        """Reject the frame starting at buf[0] (``span`` bytes long) and resync one byte on."""
        if self.base < self._quiet_until and reason == "unknown_type":
            self.discard(1)  # a sync byte inside the rest of a rejected frame
            return
        self.reject(reason, self.base)
        self._quiet_until = max(self._quiet_until, self.base + span)
        self._run_end = -1
        self.consume(1)

    def accept(self, n: int) -> int:
        """Consume a good frame of ``n`` bytes; return its offset."""
        offset = self.base
        self.consume(n)
        self._run_end = -1
        return offset

    def feed(self, data: bytes) -> list[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> None:
        """End of stream: whatever is left is an incomplete frame or garbage."""
        if self.buf:
            reason = self._tail_reason()
            if reason == "garbage":
                self.discard(len(self.buf))
            else:
                self.reject(reason, self.base)
                self.consume(len(self.buf))

    def _tail_reason(self) -> str:
        return "truncated"


# -- time ---------------------------------------------------------------------------------


def now_us(clock: Callable[[], float]) -> tuple[int, int]:
    """(read time in epoch µs, flags): CLOCK_SUSPECT when the clock looks unset."""
    t = clock()
    flags = 0 if t >= CLOCK_SANE_AFTER_S else int(QualityFlag.CLOCK_SUSPECT)
    return round(t * 1_000_000), flags


def samples_from(
    values: Mapping[str, float], units: Mapping[str, str], observed_us: int, flags: int = 0
) -> list[Sample]:
    """Samples in the order of ``values``; non-finite values are dropped."""
    return [
        Sample(q, float(v), units[q], observed_us, flags)
        for q, v in values.items()
        if math.isfinite(v)
    ]


# -- run-time bookkeeping -----------------------------------------------------------------


class DeviceStats:
    """Counts one device's activity locally (for health()) and in Prometheus."""

    def __init__(self, driver: str, device: str, metrics: DriverMetrics | None = None) -> None:
        self.driver = driver
        self.device = device
        self.metrics = metrics or driver_metrics()
        self.frames_ok = 0
        self.readings = 0
        self.reopens = 0
        self.rejected: Counter[str] = Counter()
        self.last_reading_t: float | None = None
        self.last_error: str | None = None

    def ok(self, n_readings: int = 0) -> None:
        """A valid frame that produced ``n_readings`` samples (0: kept for its side effects)."""
        self.frames_ok += 1
        self.metrics.frames.labels(self.driver, self.device, "ok").inc()
        self.add_readings(n_readings)

    def add_readings(self, n: int) -> None:
        if n:
            self.readings += n
            self.metrics.readings.labels(self.driver, self.device).inc(n)
            self.last_reading_t = time.monotonic()

    def reject(self, reason: str, _offset: int = 0) -> None:
        self.rejected[reason] += 1
        self.metrics.frames.labels(self.driver, self.device, "rejected").inc()
        self.metrics.rejected.labels(self.driver, self.device, reason).inc()

    def reopen(self) -> None:
        self.reopens += 1
        self.metrics.reopens.labels(self.device).inc()

    def snapshot(self, state: str) -> dict[str, object]:
        age = None
        if self.last_reading_t is not None:
            age = round(time.monotonic() - self.last_reading_t, 3)
        out: dict[str, object] = {
            "state": state,
            "last_reading_s": age,
            "frames_ok": self.frames_ok,
            "readings": self.readings,
            "rejected": dict(self.rejected),
            "reopens": self.reopens,
        }
        if self.last_error:
            out["last_error"] = self.last_error
        return out


def deliver(sink: Sink, device_id: str, samples: Sequence[Sample], stats: DeviceStats) -> bool:
    """Hand samples to the outbox; a failing sink is logged and counted, never raised."""
    if not samples:
        return True
    try:
        sink(device_id, samples)
    except Exception as err:
        stats.last_error = f"sink: {err}"
        log.exception("outbox write failed for %s", device_id)
        return False
    return True


class Backoff:
    """Exponential backoff: initial, doubled per failure, capped; reset on success."""

    def __init__(self, initial: float = 0.5, maximum: float = 60.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


# -- config validation --------------------------------------------------------------------

T = TypeVar("T")
_MISSING: Any = object()


class Options:
    """Typed access to one config table; every error names the field (with ``prefix``)."""

    def __init__(self, table: Mapping[str, Any], prefix: str = "", allowed: Iterable[str] = ()):
        if not isinstance(table, Mapping):
            raise ConfigError(f"{prefix.rstrip('.') or 'device'}: must be a table")
        self.table = table
        self.prefix = prefix
        self.used: set[str] = set(allowed)

    def error(self, name: str, what: str) -> ConfigError:
        return ConfigError(f"{self.prefix}{name}: {what}")

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self.used.add(name)
        if name in self.table:
            return self.table[name]
        if default is _MISSING:
            raise self.error(name, "is required")
        return default

    def get_str(self, name: str, default: Any = _MISSING, *, choices: Sequence[str] = ()) -> Any:
        value = self.raw(name, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(name, f"must be a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def get_ident(self, name: str, default: Any = _MISSING) -> Any:
        value = self.get_str(name, default)
        if value is not None and not ID_RE.match(value):
            raise self.error(name, f"{value!r} is not a valid id (A-Z a-z 0-9 . _ -, max 64)")
        return value

    def get_float(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        min: float | None = None,
        max: float | None = None,
        exclusive_min: bool = False,
    ) -> Any:
        value = self.raw(name, default)
        if value is None and default is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.error(name, f"must be a number, got {value!r}")
        if min is not None and (value < min or (exclusive_min and value == min)):
            raise self.error(name, f"must be {'>' if exclusive_min else '>='} {min}, got {value}")
        if max is not None and value > max:
            raise self.error(name, f"must be <= {max}, got {value}")
        return float(value)

    def get_int(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        min: int | None = None,
        max: int | None = None,
    ) -> Any:
        value = self.raw(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {value!r}")
        if min is not None and value < min:
            raise self.error(name, f"must be >= {min}, got {value}")
        if max is not None and value > max:
            raise self.error(name, f"must be <= {max}, got {value}")
        return value

    def get_bool(self, name: str, default: Any = _MISSING) -> Any:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {value!r}")
        return value

    def finish(self) -> None:
        """Reject keys nobody asked for (typos would otherwise be silently ignored)."""
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used - COMMON_KEYS))
            raise self.error(unknown[0], f"unknown option (known: {known})")


def device_options(table: Mapping[str, Any]) -> Options:
    """Options of a [[devices]] table; the common keys are allowed."""
    return Options(table, "", COMMON_KEYS)
