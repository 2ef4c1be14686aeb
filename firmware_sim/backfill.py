"""Backfill: months of simulated history on a virtual clock, as fast as it is consumed.

    from firmware_sim.backfill import generate
    for t, device_id, values in generate("THCNX", ["air", "traffic_lane:1"], start, end, 3600, 42):
        ...   # t epoch seconds UTC, values {quantity: canonical value}

The values are exactly those a live run with the same seed, city, kind and device id produces
at the same instants (see firmware_sim.profiles): a backfilled history joins a live one without
a seam.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from firmware_sim.clock import VirtualClock
from firmware_sim.profiles import FaultLog, ValueFaults, make_source


def default_device_id(city: str, kind: str) -> str:
    """``sim-thcnx-traffic_lane-1`` for ("THCNX", "traffic_lane:1")."""
    return f"sim-{city.lower()}-{kind.replace(':', '-')}"


def _epoch(t: float | datetime) -> float:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("backfill start/end datetimes must be timezone-aware")
        return t.timestamp()
    return float(t)


def generate(
    city: str,
    kinds: Iterable[str] | Mapping[str, str],
    start: float | datetime,
    end: float | datetime,
    step_s: float,
    seed: int,
    *,
    faults: ValueFaults | None = None,
    log: FaultLog | None = None,
    clock: VirtualClock | None = None,
) -> Iterator[tuple[float, str, dict[str, float]]]:
    """Yield ``(t, device_id, values)`` for every device at start, start+step, ... < end.

    ``kinds`` is a list of kinds (device ids made by :func:`default_device_id`) or a mapping
    ``{device_id: kind}``. Traffic counts are per ``step_s`` interval. ``faults`` applies to
    every device; injected faults and meter rollovers go to ``log``. A ``clock`` given is
    advanced as the generator runs (so other code can watch virtual time).
    """
    t0, t1 = _epoch(start), _epoch(end)
    if step_s <= 0:
        raise ValueError("step_s must be > 0")
    if t1 < t0:
        raise ValueError("backfill end is before start")
    devices = dict(kinds) if isinstance(kinds, Mapping) else {
        default_device_id(city, k): k for k in kinds
    }  # fmt: skip
    shared = log if log is not None else FaultLog()
    sources = [
        (dev, make_source(city, kind, dev, seed, faults, interval_s=step_s, log=shared))
        for dev, kind in devices.items()
    ]
    vclock = clock if clock is not None else VirtualClock(t0, step_s)
    if vclock.now() < t0:
        vclock.set(t0)
    n = 0
    while True:
        t = t0 + n * step_s  # multiply, not accumulate: no float drift over a year
        if t >= t1:
            return
        if vclock.now() < t:
            vclock.set(t)
        for dev, src in sources:
            yield t, dev, dict(src(t))
        n += 1
