"""The gateway service: MQTT uplinks in, normalised readings and dead letters into PostgreSQL.

One process = one `MqttBatchConsumer` (ingest) on the shared subscription
``$share/<group>/kota/v1/+/+/+/up``: the broker spreads messages over every gateway process
of the group. For each batch the handler normalises (gateway.normalize), writes readings and
dead letters in one transaction (ingest.writer.ReadingWriter), optionally republishes the
normalised readings on ``kota/v1/normalized/{city}``, and returns; only then does the
consumer acknowledge the batch, so a crash before the commit means redelivery, and the
idempotent writer turns redelivery into exactly-once rows.

Edge heartbeats (``kota/v1/{city}/{site}/{agent}/heartbeat``) are upserted into agent_status
by a second consumer on the same group.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import polars as pl

from gateway.devices import DeviceRegistry
from gateway.normalize import Message, NormalizeConfig, Normalizer, readings_to_jsonl
from gateway.schema.uplink import ID_RE, TOPIC_PREFIX
from kota_cli.errors import KotaError

log = logging.getLogger("kota.gateway")

UPLINK_FILTER = f"{TOPIC_PREFIX}/+/+/+/up"
HEARTBEAT_FILTER = f"{TOPIC_PREFIX}/+/+/+/heartbeat"
NORMALIZED_TOPIC = TOPIC_PREFIX + "/normalized/{city}"
DEFAULT_GROUP = "kota-gateway"


@dataclass
class GatewaySettings:
    """Everything `kota gateway run` can set."""

    database_url: str
    mqtt_url: str
    group: str = DEFAULT_GROUP
    client_id: str = ""
    batch_max: int = 1000
    batch_max_age_s: float = 0.2
    publish_normalized: bool = False
    heartbeats: bool = True
    stats_every_s: float = 10.0
    registry_refresh_s: float = 30.0
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    metrics_port: int | None = None  # serve kota_ingest_* on /metrics (None = off)
    metrics_address: str = "0.0.0.0"


class GatewayService:
    """Normalise + write; the handler the MQTT batch consumer calls."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        out: IO[str] | None = None,
        registry: DeviceRegistry | None = None,
    ) -> None:
        from ingest.writer import ReadingWriter

        self.settings = settings
        self.out = out or sys.stdout
        self.registry = registry or DeviceRegistry.from_db(
            settings.database_url, refresh_s=settings.registry_refresh_s
        )
        self.normalizer = Normalizer(self.registry, settings.normalize)
        self.metrics = None
        if settings.metrics_port is not None:
            from ingest.metrics import IngestMetrics

            self.metrics = IngestMetrics()
        self.writer = ReadingWriter(settings.database_url, metrics=self.metrics)
        self.counters: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._publisher: Any = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ handlers
    def handle_uplinks(self, messages: Sequence[Message]) -> None:
        """Normalise one batch and commit it; raising makes the consumer redeliver."""
        with self._lock:
            started = time.perf_counter()
            batch = self.normalizer.normalize(messages)
            self.writer.write(batch.readings, batch.dead_letters)
            if self.settings.publish_normalized and batch.readings.height:
                self._publish(batch.readings)
            self.counters["batches"] += 1
            self.counters["messages"] += len(messages)
            self.counters["readings"] += batch.readings.height
            self.counters["dead_letters"] += len(batch.dead_letters)
            self.counters["derived"] += batch.stats.get("derived", 0)
            self.reasons.update(batch.stats.get("reasons", {}))
            self.counters["busy_us"] += int((time.perf_counter() - started) * 1e6)

    def handle_heartbeats(self, messages: Sequence[Message]) -> None:
        rows = [row for m in messages if (row := parse_heartbeat(m.topic, m.payload)) is not None]
        if rows:
            store_heartbeats(self.settings.database_url, rows)
        with self._lock:
            self.counters["heartbeats"] += len(rows)

    def _publish(self, readings: pl.DataFrame) -> None:
        if self._publisher is None:
            self._publisher = _Publisher(self.settings.mqtt_url, f"{self.settings.client_id}-pub")
        for (city,), part in readings.group_by(["city"]):
            self._publisher.publish(NORMALIZED_TOPIC.format(city=city), readings_to_jsonl(part))
        self._publisher.flush()

    # ------------------------------------------------------------------ lifecycle
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "client_id": self.settings.client_id,
                **self.counters,
                "reasons": dict(self.reasons),
                "registry_reloads": self.registry.reloads,
            }

    def emit(self, event: str) -> None:
        self.out.write(json.dumps({"event": event, **self.stats()}) + "\n")
        self.out.flush()

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, duration_s: float | None = None) -> None:
        """Consume until stopped (SIGTERM/SIGINT or `stop()`), printing JSON stats lines."""
        from ingest.consumer import MqttBatchConsumer

        s = self.settings
        consumers = [
            MqttBatchConsumer(
                s.mqtt_url,
                UPLINK_FILTER,
                self.handle_uplinks,
                client_id=s.client_id,
                group=s.group,
                batch_max=s.batch_max,
                batch_max_age_s=s.batch_max_age_s,
                metrics=self.metrics,
            )
        ]
        if s.metrics_port is not None:
            serve_metrics(s.metrics_address, s.metrics_port)
        if s.heartbeats:
            consumers.append(
                MqttBatchConsumer(
                    s.mqtt_url,
                    HEARTBEAT_FILTER,
                    self.handle_heartbeats,
                    client_id=f"{s.client_id}-hb",
                    group=s.group,
                    batch_max=100,
                    batch_max_age_s=1.0,
                )
            )
        for consumer in consumers:
            _start(consumer)
        self.emit("gateway_started")
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_stats = time.monotonic() + s.stats_every_s
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._stop.wait(0.2)
                for consumer in consumers:
                    _check_alive(consumer)
                if time.monotonic() >= next_stats:
                    self.emit("gateway_stats")
                    next_stats = time.monotonic() + s.stats_every_s
        finally:
            for consumer in consumers:
                _stop_consumer(consumer)
            if self._publisher is not None:
                self._publisher.close()
            self.emit("gateway_stopped")


def serve_metrics(address: str, port: int) -> None:
    """Prometheus /metrics for this worker (kota_ingest_*), one clear error if the port is taken."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=address)
    except OSError as err:
        raise KotaError(
            f"--metrics-port: cannot listen on {address}:{port}: {err.strerror or err}"
        ) from None


def install_signal_handlers(service: GatewayService) -> None:
    def _handler(signum: int, _frame: Any) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


# The consumer is written in parallel by the ingest engineer; these adapters keep the
# service independent of whether it exposes start/stop or a blocking run.
def _start(consumer: Any) -> None:
    if hasattr(consumer, "start"):
        consumer.start()
    else:  # pragma: no cover - blocking-only consumer
        threading.Thread(target=consumer.run, daemon=True, name="kota-consumer").start()


def _stop_consumer(consumer: Any) -> None:
    for name in ("stop", "close"):
        if hasattr(consumer, name):
            getattr(consumer, name)()
            return


def _check_alive(consumer: Any) -> None:
    error = getattr(consumer, "error", None)
    if isinstance(error, BaseException):
        raise error


class _Publisher:
    """A small paho client that publishes normalised readings (QoS 1) and waits for PUBACKs."""

    def __init__(self, url: str, client_id: str) -> None:
        from urllib.parse import urlparse

        import paho.mqtt.client as mqtt

        parsed = urlparse(url)
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id[:64], protocol=mqtt.MQTTv5
        )
        if parsed.username:
            self._client.username_pw_set(parsed.username, parsed.password)
        if parsed.scheme in ("mqtts", "ssl"):
            self._client.tls_set()
        self._client.connect(parsed.hostname or "127.0.0.1", parsed.port or 1883)
        self._client.loop_start()
        self._pending: list[Any] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self._pending.append(self._client.publish(topic, payload, qos=1))

    def flush(self, timeout: float = 10.0) -> None:
        for info in self._pending:
            info.wait_for_publish(timeout)
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._client.loop_stop()
        self._client.disconnect()


# --------------------------------------------------------------------------- heartbeats


def parse_heartbeat(topic: str | None, payload: bytes) -> dict[str, Any] | None:
    """agent_status row from a heartbeat, or None when it is not a usable one.

    Topic ``kota/v1/{city}/{site}/{agent}/heartbeat``; payload the edge agent's heartbeat
    (docs/edge.md): optional ``agent``, ``version``, ``outbox`` {``depth``, ``oldest_s``, ...}
    and ``drivers`` (object). Top-level ``outbox_depth``/``outbox_oldest_s`` are accepted too.
    """
    parts = (topic or "").split("/")
    if len(parts) != 6 or parts[5] != "heartbeat" or len(payload) > 64 * 1024:
        return None
    city, site, agent = parts[2], parts[3], parts[4]
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    agent = body.get("agent", agent) if isinstance(body.get("agent"), str) else agent
    if not all(ID_RE.match(x) for x in (city, site, agent)):
        return None

    nested = body.get("outbox")
    outbox: dict[str, Any] = nested if isinstance(nested, dict) else {}

    def number(name: str, nested: str) -> float | None:
        v = outbox.get(nested, body.get(name))
        return (
            float(v)
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and v >= 0
            else None
        )

    drivers = body.get("drivers")
    return {
        "agent_id": agent,
        "city": city,
        "site": site,
        "version": str(body.get("version", ""))[:64],
        "outbox_depth": int(number("outbox_depth", "depth") or 0),
        "outbox_oldest_s": number("outbox_oldest_s", "oldest_s"),
        "drivers": json.dumps(drivers if isinstance(drivers, dict) else {}, default=str)[:16_000],
        "last_seen": datetime.now(UTC),
    }


def store_heartbeats(conninfo: str, rows: list[dict[str, Any]]) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO agent_status (agent_id, city, site, last_seen, version, outbox_depth, "
            "outbox_oldest_s, drivers) VALUES (%(agent_id)s, %(city)s, %(site)s, %(last_seen)s, "
            "%(version)s, %(outbox_depth)s, %(outbox_oldest_s)s, %(drivers)s::jsonb) "
            "ON CONFLICT (agent_id) DO UPDATE SET city = EXCLUDED.city, site = EXCLUDED.site, "
            "last_seen = EXCLUDED.last_seen, version = EXCLUDED.version, "
            "outbox_depth = EXCLUDED.outbox_depth, outbox_oldest_s = EXCLUDED.outbox_oldest_s, "
            "drivers = EXCLUDED.drivers",
            rows,
        )
