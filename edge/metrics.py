"""The agent's Prometheus endpoint (`[metrics]` in edge.toml, default 127.0.0.1:9110).

Counters and the latency histogram are process-wide (one agent per process); the outbox
and uplink gauges are read at scrape time from the running agent by `AgentCollector`, so
they are exact and cost nothing between scrapes. `kota_edge_outbox_dropped_total` is the
outbox's persisted counter: it does not reset when the agent restarts. The driver metrics
(`edge/drivers/metrics.py`) register on the same default registry and appear alongside.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge.outbox import Outbox

log = logging.getLogger("kota.edge.metrics")

PUBLISHED_MESSAGES = Counter(
    "kota_edge_published_messages", "Uplink messages acknowledged by the broker (QoS 1 PUBACK)."
)
PUBLISHED_READINGS = Counter(
    "kota_edge_published_readings", "Readings in uplink messages acknowledged by the broker."
)
PUBLISH_REJECTED = Counter(
    "kota_edge_publish_rejected",
    "Uplink messages the broker refused (PUBACK reason >= 0x80) or had no subscriber for (0x10); "
    "their readings stay in the outbox and are sent again.",
    ["reason"],
)
PUBLISH_LATENCY = Histogram(
    "kota_edge_publish_latency_seconds",
    "Time from a reading's outbox commit to the broker's PUBACK for it (per outbox row).",
    buckets=(
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
        900,
        3600,
        6 * 3600,
        86_400,
        7 * 86_400,
    ),
)
UPLINK_CONNECTED = Gauge("kota_edge_uplink_connected", "1 while connected to the MQTT broker.")
UPLINK_CONNECTS = Counter(
    "kota_edge_uplink_connects", "Successful MQTT connections (1 + reconnects)."
)
DRIVER_RESTARTS = Counter(
    "kota_edge_driver_restarts",
    "Driver threads restarted after an unexpected error or exit.",
    ["device"],
)


class AgentCollector(Collector):
    """Outbox depth, age and drops, read from the outbox at scrape time."""

    def __init__(self, outbox: Outbox, inflight: Callable[[], int] | None = None) -> None:
        self.outbox = outbox
        self.inflight = inflight

    def collect(self) -> Iterable[Any]:
        try:
            stats = self.outbox.stats()
        except Exception:  # a scrape during shutdown must not raise
            return
        yield GaugeMetricFamily(
            "kota_edge_outbox_depth",
            "Readings waiting in the outbox (incl. in flight).",
            value=stats.readings,
        )
        yield GaugeMetricFamily(
            "kota_edge_outbox_rows", "Rows (driver hand-offs) in the outbox.", value=stats.rows
        )
        yield GaugeMetricFamily(
            "kota_edge_outbox_bytes",
            "Accounted size of the outbox rows (bounded by outbox.max_bytes).",
            value=stats.bytes,
        )
        yield GaugeMetricFamily(
            "kota_edge_outbox_oldest_seconds",
            "Age of the oldest reading in the outbox.",
            value=stats.oldest_age_s,
        )
        dropped = CounterMetricFamily(
            "kota_edge_outbox_dropped",
            "Readings dropped from the outbox, ever (persisted), by reason.",
            labels=["reason"],
        )
        for reason, value in stats.dropped.items():
            dropped.add_metric([reason], value)
        yield dropped
        if self.inflight is not None:
            yield GaugeMetricFamily(
                "kota_edge_uplink_inflight_messages",
                "Uplink messages sent and not yet acknowledged.",
                value=self.inflight(),
            )


@dataclass
class MetricsServer:
    """The HTTP endpoint and the collector registered for one agent."""

    collector: AgentCollector
    server: Any = None
    port: int = 0

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(self.collector)


def start_metrics(
    outbox: Outbox,
    *,
    address: str,
    port: int,
    serve: bool = True,
    inflight: Callable[[], int] | None = None,
) -> MetricsServer:
    """Register the agent collector and serve /metrics on address:port (0 = any free port)."""
    collector = AgentCollector(outbox, inflight)
    REGISTRY.register(collector)
    metrics = MetricsServer(collector)
    if serve:
        try:
            server, _thread = start_http_server(port, addr=address)
        except OSError as err:
            REGISTRY.unregister(collector)
            from kota_cli.errors import KotaError

            raise KotaError(
                f"metrics: cannot listen on {address}:{port}: {err.strerror or err} (set metrics.port)"
            ) from None
        metrics.server = server
        metrics.port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", address, metrics.port)
    return metrics
