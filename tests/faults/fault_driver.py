"""A deterministic edge test device for the fault suite (loaded by the agent SUBPROCESS).

Configured in edge.toml as ``driver = "python:fault_driver:build"`` (the harness puts this
folder on the agent's PYTHONPATH). Device ``d`` hands ``count`` readings to the outbox, in
hand-offs of ``per_handoff`` readings at ``rate_hz`` hand-offs a second; reading ``n`` has
``observed_at = base_us + n * 1000`` and ``value = n`` for every quantity. The expected set
is therefore known exactly from (device, count): no log has to be trusted.

Kill -9 safety: before each hand-off its index is appended to ``state_path``; a restarted
driver resumes AT the last index written (hands it over again). That hand-off either had
been committed to the outbox before the kill (then it is sent twice and the readings key
collapses the copy) or it had not (then it is produced now): either way every reading
0..count-1 is produced exactly once as a key, whatever moment the kill hit.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.schema import Sample

DEFAULT_QUANTITIES = (("pm2_5", "ug/m3"), ("pm10", "ug/m3"))
_KEYS = {
    "kind",
    "driver",
    "device_id",
    "enabled",
    "base_us",
    "count",
    "rate_hz",
    "per_handoff",
    "quantities",
    "state_path",
}


def reading_time(base_us: int, n: int) -> int:
    return base_us + n * 1000


class CountingDriver:
    """See the module docstring."""

    kind = "counting"

    def __init__(
        self,
        device_id: str,
        *,
        base_us: int,
        count: int,
        rate_hz: float,
        per_handoff: int = 1,
        quantities: Sequence[tuple[str, str]] = DEFAULT_QUANTITIES,
        state_path: Path,
    ) -> None:
        self.device_id = device_id
        self.base_us = base_us
        self.count = count
        self.rate_hz = rate_hz
        self.per_handoff = per_handoff
        self.quantities = tuple(quantities)
        self.state_path = state_path
        self.handoffs = -(-count // per_handoff)
        self.next_handoff = 0
        self.resumed_at: int | None = None

    def _resume(self) -> int:
        try:
            lines = self.state_path.read_text().split()
        except FileNotFoundError:
            return 0
        if "done" in lines:
            return self.handoffs
        numbers = [int(x) for x in lines if x.isdigit()]
        return numbers[-1] if numbers else 0

    def samples(self, h: int) -> list[Sample]:
        first = h * self.per_handoff
        last = min(self.count, first + self.per_handoff)
        return [
            Sample(q, float(n), unit, reading_time(self.base_us, n))
            for n in range(first, last)
            for q, unit in self.quantities
        ]

    def run(self, sink: Callable[[str, Sequence[Sample]], None], stop: threading.Event) -> None:
        start = self._resume()
        self.resumed_at = start
        period = 1.0 / self.rate_hz
        fd = os.open(self.state_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            next_t = time.monotonic()
            for h in range(start, self.handoffs):
                if stop.is_set():
                    return
                os.write(fd, f"{h}\n".encode())  # intent first: see the module docstring
                sink(self.device_id, self.samples(h))
                self.next_handoff = h + 1
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
            if start < self.handoffs:
                os.write(fd, b"done\n")
            self.next_handoff = self.handoffs
        finally:
            os.close(fd)
        stop.wait()

    def health(self) -> dict[str, object]:
        return {
            "state": "done" if self.next_handoff >= self.handoffs else "ok",
            "handoffs": self.next_handoff,
            "resumed_at": self.resumed_at,
        }


def build(table: Mapping[str, Any], ctx: Any) -> CountingDriver:
    """Factory with the DriverSpec.build signature."""
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}")
    quantities = DEFAULT_QUANTITIES
    if "quantities" in table:
        quantities = tuple(tuple(q.split(":", 1)) for q in table["quantities"])  # type: ignore[misc]
    return CountingDriver(
        str(table["device_id"]),
        base_us=int(table["base_us"]),
        count=int(table["count"]),
        rate_hz=float(table["rate_hz"]),
        per_handoff=int(table.get("per_handoff", 1)),
        quantities=quantities,
        state_path=Path(str(table["state_path"])),
    )
