"""MqttBatchConsumer with a real Mosquitto (and PostgreSQL for the end-to-end test)."""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
from prometheus_client import CollectorRegistry

from ingest.consumer import ConsumedMessage, MqttBatchConsumer
from ingest.metrics import IngestMetrics
from ingest.service import ReadingsHandler
from ingest.writer import ReadingWriter
from kota_cli.servers import MosquittoServer
from storage.migrate import migrate

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def reading_line(i: int) -> bytes:
    observed = T0 + timedelta(seconds=i)
    return orjson.dumps(
        {
            "city": "THBKK",
            "site": "s1",
            "device": f"dev-{i % 50}",
            "quantity": "pm25",
            "value": float(i % 97),
            "unit": "ug/m3",
            "raw_value": float(i % 97),
            "observed_at": observed.isoformat().replace("+00:00", "Z"),
            "received_at": observed.isoformat(),
            "flags": 0,
            "source": "test",
        }
    )


def publish_lines(broker: MosquittoServer, topic: str, lines: list[bytes]) -> None:
    """QoS 1, one message per line, via the C publisher (fast, waits for every PUBACK)."""
    subprocess.run(
        ["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", topic, "-l"],
        input=b"\n".join(lines) + b"\n",
        check=True,
        timeout=60,
    )


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_end_to_end_exactly_once(mosquitto: MosquittoServer, pg_url: str) -> None:
    migrate(pg_url)
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    handler = ReadingsHandler(ReadingWriter(pg_url, metrics=metrics))
    consumer = MqttBatchConsumer(
        mosquitto.url,
        "kota/v1/normalized/#",
        handler,
        client_id="e2e",
        group="ingest",
        batch_max=500,
        batch_max_age_s=0.1,
        metrics=metrics,
    )
    consumer.start()
    n = 3000
    lines = [reading_line(i) for i in range(n)]
    publish_lines(mosquitto, "kota/v1/normalized/THBKK", lines)
    publish_lines(mosquitto, "kota/v1/normalized/THBKK", lines[:300])  # a replayed outbox
    publish_lines(mosquitto, "kota/v1/normalized/THBKK", [b"{not json", b'{"city": "THBKK"}'])
    assert wait_for(lambda: consumer.acked == n + 302)
    consumer.stop()
    handler.writer.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(
            "SELECT count(*), count(DISTINCT (device, observed_at)) FROM readings"
        ).fetchone() == (n, n)
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (2,)
    assert registry.get_sample_value("kota_ingest_readings_written_total") == n
    assert registry.get_sample_value("kota_ingest_duplicates_total") == 300
    assert registry.get_sample_value("kota_ingest_unacked_messages") == 0


def test_ack_only_after_handler_returns(mosquitto: MosquittoServer) -> None:
    """A batch whose handler keeps failing is not acked; a new session gets it redelivered."""
    calls: list[int] = []

    def failing(batch):
        calls.append(len(batch))
        raise RuntimeError("database down")

    first = MqttBatchConsumer(
        mosquitto.url,
        "t/#",
        failing,
        client_id="acks",
        batch_max=100,
        batch_max_age_s=0.05,
        backoff_initial_s=0.05,
    )
    first.start()
    publish_lines(mosquitto, "t/x", [b"m%d" % i for i in range(100)])
    assert wait_for(lambda: len(calls) >= 3)
    assert first.acked == 0
    first.stop()
    got: list[ConsumedMessage] = []
    second = MqttBatchConsumer(
        mosquitto.url, "t/#", got.extend, client_id="acks", batch_max=100, batch_max_age_s=0.05
    )
    second.start()
    assert wait_for(lambda: len(got) >= 100)
    time.sleep(0.3)
    second.stop()
    assert sorted(m.payload for m in got) == sorted(b"m%d" % i for i in range(100))


def test_throughput_from_local_broker(mosquitto: MosquittoServer) -> None:
    """Drain a queued backlog: far above the ~100 msg/s of the hazard (real figures: docs)."""
    received = 0
    done = threading.Event()
    n = 20000

    def handler(batch):
        nonlocal received
        received += len(batch)
        if received >= n:
            done.set()

    def make() -> MqttBatchConsumer:
        return MqttBatchConsumer(
            mosquitto.url,
            "bench/#",
            handler,
            client_id="bench",
            batch_max=5000,
            batch_max_age_s=0.5,
        )

    registering = make()  # create the persistent session, then go away
    registering.start()
    time.sleep(0.3)
    registering.stop()
    publish_lines(mosquitto, "bench/x", [b"x" * 200] * n)  # queued for the offline session
    consumer = make()
    started = time.perf_counter()
    consumer.start()
    assert done.wait(30)
    rate = n / (time.perf_counter() - started)
    consumer.stop()
    print(f"drained {n} queued QoS 1 messages at {rate:,.0f} msg/s")
    assert rate > 1000
