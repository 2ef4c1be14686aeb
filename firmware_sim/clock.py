"""Clocks for the simulator: real time for live runs, virtual time for backfill.

Both implement :class:`Clock`. Simulated devices ask the clock for ``now()`` (epoch seconds,
UTC) and wait with ``sleep()``. ``RealClock`` is wall time; ``VirtualClock`` advances
instantly, so months of history can be produced as fast as the pipeline consumes them.

    clock = VirtualClock(start=1_767_225_600.0, step=60.0)   # 2026-01-01T00:00Z, 1 min ticks
    clock.now()      # 1767225600.0
    clock.tick()     # 1767225660.0  (advance by one step)
    clock.sleep(30)  # returns at once; now() is 30 s later
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What the simulator needs from a clock."""

    #: True when time advances only when asked (backfill); runners then never wait.
    virtual: bool

    def now(self) -> float:
        """Current time, epoch seconds UTC."""
        ...

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait ``seconds``; return True if ``stop`` was set (the wait may end early)."""
        ...


class RealClock:
    """Wall time (``time.time``); ``sleep`` waits on the stop event so Ctrl-C is prompt."""

    virtual = False

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is None:
            if seconds > 0:
                time.sleep(seconds)
            return False
        return stop.wait(max(0.0, seconds))


class VirtualClock:
    """Simulated time that starts at ``start`` and moves only when told.

    ``step`` is the default increment of :meth:`tick`. ``sleep(s)`` advances by ``s`` at
    once. Thread-safe: several device threads may share one virtual clock.
    """

    virtual = True

    def __init__(self, start: float, step: float = 1.0) -> None:
        if step <= 0:
            raise ValueError(f"VirtualClock step must be > 0, got {step}")
        self._t = float(start)
        self.start = float(start)
        self.step = float(step)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def tick(self, n: int = 1) -> float:
        """Advance by ``n`` steps; return the new time."""
        with self._lock:
            self._t += self.step * n
            return self._t

    def advance(self, seconds: float) -> float:
        """Advance by ``seconds`` (>= 0); return the new time."""
        if seconds < 0:
            raise ValueError("a VirtualClock never goes backwards")
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> None:
        """Jump to ``t`` (>= now)."""
        with self._lock:
            if t < self._t:
                raise ValueError("a VirtualClock never goes backwards")
            self._t = float(t)

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if seconds > 0:
            self.advance(seconds)
        return bool(stop is not None and stop.is_set())

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._t!r}, step={self.step!r})"
