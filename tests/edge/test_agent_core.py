"""The agent in-process: metrics endpoint, driver supervision, systemd notification."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

from test_agent_helpers import Subscriber, TickDevice, make_config

from edge.agent import Agent
from kota_cli.servers import MosquittoServer


class CrashingDevice:
    """Raises on its first two runs, then behaves: the agent must restart it."""

    kind = "crashy"

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.runs = 0

    def run(self, sink, stop: threading.Event) -> None:
        self.runs += 1
        if self.runs <= 2:
            raise RuntimeError(f"boom {self.runs}")
        while not stop.wait(0.05):
            pass

    def health(self) -> dict[str, object]:
        return {"runs": self.runs}


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_metrics_endpoint_reports_outbox_uplink_and_latency(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    # A subscriber must exist: an uplink nobody subscribes to is answered with PUBACK 0x10
    # "No matching subscribers" and stays in the outbox (not counted as published).
    sub = Subscriber(mosquitto.host, mosquitto.port)
    config = make_config(tmp_path, mosquitto.url, metrics='address = "127.0.0.1"\nport = 0')
    agent = Agent(config, drivers=[TickDevice("bkk-dev-m")])
    agent.start()
    try:
        assert agent.metrics is not None and agent.metrics.port
        time.sleep(1.2)
        text = scrape(agent.metrics.port)
    finally:
        agent.stop()
        sub.close()
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    for name in (
        "kota_edge_outbox_depth ",
        "kota_edge_outbox_oldest_seconds ",
        "kota_edge_outbox_bytes ",
        'kota_edge_outbox_dropped_total{reason="size"} 0.0',
        'kota_edge_outbox_dropped_total{reason="age"} 0.0',
        "kota_edge_published_messages_total ",
        "kota_edge_publish_latency_seconds_bucket{",
        "kota_edge_uplink_connected 1.0",
        "kota_edge_uplink_inflight_messages ",
    ):
        assert any(line.startswith(name) for line in samples), name
    published = next(
        float(line.split()[1])
        for line in samples
        if line.startswith("kota_edge_published_messages_total ")
    )
    assert published >= 2


def test_a_crashing_driver_is_restarted_and_the_others_keep_going(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port)
    good, bad = TickDevice("bkk-good"), CrashingDevice("bkk-bad")
    agent = Agent(make_config(tmp_path, mosquitto.url), drivers=[good, bad])
    agent.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and bad.runs < 3:
            time.sleep(0.1)
        beat = agent.heartbeat()
    finally:
        agent.stop()
    assert bad.runs == 3  # restarted after 1 s, then 2 s
    health = beat["drivers"]["bkk-bad"]
    assert health["restarts"] == 2 and health["alive"] and "boom 2" in health["agent_error"]
    assert sub.wait_for(lambda: set(good.produced) <= sub.readings)
    sub.close()


def test_systemd_ready_and_stopping_are_notified(
    tmp_path: Path, mosquitto: MosquittoServer, monkeypatch
) -> None:
    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    agent = Agent(make_config(tmp_path, mosquitto.url), drivers=[])
    agent.start()
    assert server.recv(100) == b"READY=1"
    agent.stop(drain_s=0)
    assert server.recv(100) == b"STOPPING=1"
    server.close()


def test_uplink_without_subscriber_stays_in_the_outbox_until_one_appears(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """PUBACK 0x10 "No matching subscribers" means nobody got it: keep it, retry, lose nothing."""
    device = TickDevice("bkk-dev-nosub")
    agent = Agent(make_config(tmp_path, mosquitto.url), drivers=[device])
    agent.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            up = agent.uplink.stats() if agent.uplink else None
            if up and up.rejected.get("No matching subscribers", 0) >= 2:
                break
            time.sleep(0.1)
        assert agent.uplink is not None
        assert agent.uplink.stats().rejected.get("No matching subscribers", 0) >= 2
        assert agent.uplink.stats().published_readings == 0
        assert agent.outbox is not None and agent.outbox.stats().readings > 0
        early = set(device.produced)  # produced while nobody subscribed
        sub = Subscriber(mosquitto.host, mosquitto.port)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not early <= sub.readings:
                time.sleep(0.2)
            assert early <= sub.readings, (
                f"{len(early - sub.readings)} of {len(early)} never arrived"
            )
        finally:
            sub.close()
    finally:
        agent.stop()
