"""Crash and outage: SIGKILLed ingest processes and a stopped database lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg

from ingest.consumer import MqttBatchConsumer
from ingest.service import ReadingsHandler
from ingest.writer import ReadingWriter
from kota_cli.servers import MosquittoServer, PostgresServer
from storage.migrate import migrate

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 2, 1, tzinfo=UTC)


def line(i: int) -> bytes:
    observed = (T0 + timedelta(milliseconds=250 * i)).isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "city": "VNHAN",
            "site": "s2",
            "device": f"d{i % 20}",
            "quantity": "temperature",
            "value": 20.5,
            "unit": "Cel",
            "raw_value": 20.5,
            "observed_at": observed,
            "received_at": observed,
            "flags": 0,
            "source": "test",
        }
    )


class Stream(threading.Thread):
    """Publishes n readings at QoS 1 (each waits for its PUBACK), at about `rate` msg/s."""

    def __init__(self, broker: MosquittoServer, n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.broker, self.n, self.rate = broker, n, rate

    def run(self) -> None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="stream", protocol=mqtt.MQTTv5
        )
        client.max_inflight_messages_set(100)
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        started = time.monotonic()
        infos = []
        for i in range(self.n):
            infos.append(client.publish("kota/v1/normalized/VNHAN", line(i), qos=1))
            ahead = started + i / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        for info in infos:
            info.wait_for_publish(30)
        client.disconnect()
        client.loop_stop()


def readings(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (device, observed_at)) FROM readings"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_count(url: str, n: int, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = readings(url)
        if got[0] >= n:
            return got
        time.sleep(0.2)
    return readings(url)


def spawn_ingest(db: str, broker: MosquittoServer) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KOTA_DATABASE_URL": db, "KOTA_MQTT_URL": broker.url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kota_cli.main",
            "ingest",
            "run",
            "--client-id",
            "ingest-crash",
            "--batch-max",
            "200",
            "--batch-max-age",
            "0.05",
            "--stats-every",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert b"ingest_started" in first, first + (proc.stderr.read() if proc.stderr else b"")
    return proc


def test_sigkill_mid_stream_loses_nothing(mosquitto: MosquittoServer, pg_url: str) -> None:
    migrate(pg_url)
    n = 4000
    proc = spawn_ingest(pg_url, mosquitto)
    time.sleep(0.3)  # SUBACK before the first publish (the session exists from then on)
    stream = Stream(mosquitto, n, rate=1500)
    stream.start()
    kills = 0
    try:
        for delay in (0.6, 0.5, 0.7):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = spawn_ingest(pg_url, mosquitto)
        stream.join(60)
        assert wait_count(pg_url, n, 30) == (n, n)
        time.sleep(0.5)
        assert readings(pg_url) == (n, n)
    finally:
        proc.terminate()
        proc.wait(15)
    assert kills == 3


def test_database_outage_backs_off_and_resumes(
    mosquitto: MosquittoServer, pg_private: PostgresServer
) -> None:
    url = pg_private.create_database("ingest")
    migrate(url)
    handler = ReadingsHandler(ReadingWriter(url, connect_timeout=2))
    consumer = MqttBatchConsumer(
        mosquitto.url,
        "kota/v1/normalized/#",
        handler,
        client_id="outage",
        batch_max=200,
        batch_max_age_s=0.05,
        backoff_initial_s=0.1,
        backoff_max_s=1.0,
    )
    consumer.start()
    n = 3000
    stream = Stream(mosquitto, n, rate=1500)
    stream.start()
    try:
        time.sleep(0.5)
        pg_private.stop("immediate")  # a crash, mid-stream
        time.sleep(2.0)
        assert consumer.handler_failures > 0
        unacked_during_outage = consumer.received - consumer.acked
        assert unacked_during_outage > 0
        pg_private.start()
        stream.join(60)
        assert wait_count(url, n, 30) == (n, n)
        assert wait_for_acks(consumer, n)
    finally:
        consumer.stop()
        handler.writer.close()


def wait_for_acks(consumer: MqttBatchConsumer, n: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while consumer.acked < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return consumer.acked >= n
