"""End to end with a real Mosquitto and PostgreSQL: two `kota gateway run` processes on one
shared subscription split the uplinks and together store every reading exactly once."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from gateway.devices import DeviceSpec, upsert_devices
from gateway.schema import Sample, encode_uplink, uplink_topic
from gateway.schema.uplink import to_epoch_us
from kota_cli.servers import MosquittoServer

ROOT = Path(__file__).resolve().parents[2]
DEVICES = [f"bkk-pms-{i:02d}" for i in range(8)]
MESSAGES = 240  # 30 per device
ROWS = 5


class Gateway:
    """A `kota gateway run` subprocess whose JSON stdout lines are collected by a thread."""

    def __init__(self, db: str, broker: MosquittoServer, client_id: str) -> None:
        env = {**os.environ, "KOTA_DATABASE_URL": db, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kota_cli.main",
                "gateway",
                "run",
                "--mqtt-url",
                broker.url,
                "--group",
                "kota-gateway",
                "--client-id",
                client_id,
                "--batch-max",
                "40",
                "--batch-max-age",
                "0.05",
                "--stats-every",
                "0.5",
                "--publish-normalized",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last: dict[str, Any] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        self.proc.stderr.read() if self.proc.stderr else "exited"
                    ) from None
                continue
            self.last = item
            if item["event"] == event:
                return item
        raise AssertionError(f"no {event} line within {timeout} s")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        stopped = self.wait_for("gateway_stopped")
        assert self.proc.wait(30) == 0
        return stopped


def _client(broker: MosquittoServer, client_id: str) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


@pytest.mark.slow
def test_two_gateways_share_the_load_exactly_once(pg_url: str, mosquitto: MosquittoServer) -> None:
    from storage.migrate import migrate

    migrate(pg_url)
    upsert_devices(
        pg_url,
        [
            DeviceSpec(
                d,
                "THBKK",
                "bkk-sukhumvit",
                "PMS5003",
                "pms5003",
                "Sukhumvit",
                13.74,
                100.55,
                {
                    "pm2_5": "ug/m3",
                    "pm10": "ug/m3",
                    "pm2_5_cf1": "ug/m3",
                    "relative_humidity": "%",
                    "temperature": "°F",
                },
            )
            for d in DEVICES
        ],
    )
    normalized: list[bytes] = []
    listener = _client(mosquitto, "test-normalized-listener")
    listener.on_message = lambda _c, _u, msg: normalized.append(msg.payload)
    listener.subscribe("kota/v1/normalized/#", qos=1)

    gateways = [Gateway(pg_url, mosquitto, f"gw-{name}") for name in ("a", "b")]
    try:
        for gw in gateways:
            gw.wait_for("gateway_started")
        time.sleep(0.5)  # SUBACKs

        publisher = _client(mosquitto, "test-publisher")
        start = to_epoch_us(datetime.now(UTC) - timedelta(hours=3))
        infos = []
        for m in range(MESSAGES):
            device = DEVICES[m % len(DEVICES)]
            t = start + (m // len(DEVICES)) * 60_000_000
            samples = [
                Sample("pm2_5", 10.0 + m % 5, "ug/m3", t),
                Sample("pm10", 20.0, "µg/m³", t),
                Sample("pm2_5_cf1", 12.0, "ug/m3", t),
                Sample("relative_humidity", 70.0, "%", t),
                Sample("temperature", 86.0, "°F", t),
            ]
            payload = encode_uplink("THBKK", "bkk-sukhumvit", device, "pms5003", samples, seq=m)
            infos.append(
                publisher.publish(uplink_topic("THBKK", "bkk-sukhumvit", device), payload, qos=1)
            )
        # and some that must be dead-lettered with reasons
        infos.append(
            publisher.publish(
                uplink_topic("THBKK", "bkk-sukhumvit", DEVICES[0]), b"{not json", qos=1
            )
        )
        infos.append(
            publisher.publish(
                uplink_topic("THBKK", "bkk-sukhumvit", "ghost-01"),
                encode_uplink(
                    "THBKK",
                    "bkk-sukhumvit",
                    "ghost-01",
                    "x",
                    [Sample("pm2_5", 1.0, "ug/m3", start)],
                ),
                qos=1,
            )
        )
        infos.append(
            publisher.publish(
                "kota/v1/THBKK/bkk-sukhumvit/pi-bkk-01/heartbeat",
                json.dumps(
                    {
                        "agent": "pi-bkk-01",
                        "version": "0.1.0",
                        "outbox_depth": 3,
                        "outbox_oldest_s": 12.5,
                        "drivers": {"pms5003": "ok"},
                    }
                ).encode(),
                qos=1,
            )
        )
        for info in infos:
            info.wait_for_publish(10)

        expected_readings = MESSAGES * (ROWS + 1)  # + the derived pm2_5_corrected
        deadline = time.monotonic() + 40
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
                dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]  # type: ignore[index]
                if stored >= expected_readings and dead >= 2:
                    break
                time.sleep(0.2)
            time.sleep(0.5)  # would expose any late duplicate
            assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == expected_readings  # type: ignore[index]
            per_quantity = dict(
                conn.execute("SELECT quantity, count(*) FROM readings GROUP BY quantity").fetchall()
            )
            assert per_quantity == {
                q: MESSAGES
                for q in (
                    "pm2_5",
                    "pm10",
                    "pm2_5_cf1",
                    "relative_humidity",
                    "temperature",
                    "pm2_5_corrected",
                )
            }
            temp = conn.execute(
                "SELECT DISTINCT value FROM readings WHERE quantity = 'temperature'"
            ).fetchall()
            assert temp == [(30.0,)]
            reasons = dict(
                conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall()
            )
            assert reasons == {"invalid_json": 1, "unknown_device": 1}
            raw = conn.execute(
                "SELECT payload FROM dead_letters WHERE reason = 'invalid_json'"
            ).fetchone()
            assert raw is not None and bytes(raw[0]) == b"{not json"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status = conn.execute(
                    "SELECT city, site, version, outbox_depth, drivers FROM agent_status WHERE agent_id = 'pi-bkk-01'"
                ).fetchone()
                if status is not None:
                    break
                time.sleep(0.2)
            assert status == ("THBKK", "bkk-sukhumvit", "0.1.0", 3, {"pms5003": "ok"})
        publisher.loop_stop()
        publisher.disconnect()
    finally:
        finals = []
        for gw in gateways:
            if gw.proc.poll() is None:
                finals.append(gw.stop())
            else:  # pragma: no cover - diagnostics
                gw.proc.kill()

    # each process took part of the load; together they saw every uplink once
    assert len(finals) == 2
    assert all(f["messages"] > 0 for f in finals), finals
    assert sum(f["messages"] for f in finals) == MESSAGES + 2
    assert sum(f["readings"] for f in finals) == expected_readings
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline and sum(p.count(b"\n") for p in normalized) < expected_readings
    ):
        time.sleep(0.1)
    listener.loop_stop()
    lines = [json.loads(line) for p in normalized for line in p.splitlines()]
    assert len(lines) == expected_readings and {x["city"] for x in lines} == {"THBKK"}


def test_heartbeat_from_a_real_edge_agent_fills_outbox_depth(tmp_path) -> None:
    """The gateway reads the edge agent's own heartbeat body (nested `outbox`)."""
    import json as _json

    from edge.agent import Agent
    from edge.config import parse_config
    from edge.outbox import Outbox
    from gateway.schema import Sample
    from gateway.service import parse_heartbeat

    config = parse_config(
        {
            "agent": {"id": "pi-1", "city": "THBKK", "site": "s1", "state_dir": str(tmp_path)},
            "uplink": {"url": "mqtt://127.0.0.1:1"},
            "outbox": {"path": str(tmp_path / "o.db")},
        },
        tmp_path / "edge.toml",
        build_devices=False,
    )
    agent = Agent(config, drivers=[])
    agent.outbox = Outbox(tmp_path / "o.db")
    agent.outbox.put(
        "d1", "s1", "test", [Sample("pm2_5", 1.0, "ug/m3", 1_000_000 * n) for n in range(1, 8)]
    )
    row = parse_heartbeat(
        "kota/v1/THBKK/s1/pi-1/heartbeat", _json.dumps(agent.heartbeat()).encode()
    )
    agent.outbox.close()
    assert row is not None and row["outbox_depth"] == 7
    assert row["outbox_oldest_s"] is not None


def test_gateway_serves_ingest_metrics(tmp_path, pg_url, mosquitto) -> None:
    """`kota gateway run --metrics-port` serves kota_ingest_* for Prometheus and the Operations board."""
    import subprocess
    import sys
    import time
    import urllib.request

    from kota_cli.servers import free_port
    from storage.migrate import migrate

    migrate(pg_url)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kota_cli.main",
            "gateway",
            "run",
            "--database-url",
            pg_url,
            "--mqtt-url",
            mosquitto.url,
            "--client-id",
            "metrics-test",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "kota_ingest_readings_written_total" not in body:
            try:
                body = (
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    .read()
                    .decode()
                )
            except OSError:
                time.sleep(0.2)
        assert "kota_ingest_readings_written_total" in body
        assert "kota_ingest_lag_seconds_bucket" in body
    finally:
        proc.terminate()
        proc.wait(20)
