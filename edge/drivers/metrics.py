"""The Prometheus metrics every edge driver counts, defined once.

* ``kota_edge_frames_total{driver,device,result}``: frames seen, result ``ok`` or ``rejected``.
* ``kota_edge_frames_rejected_total{driver,device,reason}``: rejected frames by reason.
* ``kota_edge_readings_total{driver,device}``: samples handed to the outbox.
* ``kota_edge_port_reopens_total{device}``: attempts to reopen a lost or unopenable port.

``driver_metrics()`` returns the set registered in ``prometheus_client.REGISTRY``; tests pass
their own ``CollectorRegistry``. One set per registry (registering twice would raise).
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter


class DriverMetrics:
    """The four driver counters in one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.frames = Counter(
            "kota_edge_frames_total",
            "Frames received from devices, by result (ok/rejected).",
            ["driver", "device", "result"],
            registry=registry,
        )
        self.rejected = Counter(
            "kota_edge_frames_rejected_total",
            "Frames rejected by the driver, by reason.",
            ["driver", "device", "reason"],
            registry=registry,
        )
        self.readings = Counter(
            "kota_edge_readings_total",
            "Readings (samples) handed to the outbox.",
            ["driver", "device"],
            registry=registry,
        )
        self.reopens = Counter(
            "kota_edge_port_reopens_total",
            "Attempts to (re)open a serial port or connection.",
            ["device"],
            registry=registry,
        )


_lock = threading.Lock()
_by_registry: dict[int, DriverMetrics] = {}


def driver_metrics(registry: CollectorRegistry = REGISTRY) -> DriverMetrics:
    """The driver metrics registered in ``registry`` (created on first use)."""
    with _lock:
        metrics = _by_registry.get(id(registry))
        if metrics is None or metrics.registry is not registry:
            metrics = _by_registry[id(registry)] = DriverMetrics(registry)
        return metrics
