"""Shared pieces of the agent/uplink tests: a QoS 1 subscriber, a test device, configs.

Imported by the other test_agent_* / test_uplink_* modules (pytest puts this folder on
sys.path); the one test here checks the test device itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import EdgeConfig, load_config
from gateway.schema import Sample, decode_uplink


class TickDevice:
    """A test device: every `period` s, one sample per quantity, value = sequence number.

    `produced` lists (device, quantity, observed_us) of every hand-off the sink accepted.
    """

    kind = "tick"

    def __init__(
        self, device_id: str, period: float = 0.05, quantities: Sequence[str] = ("pm2_5", "pm10")
    ) -> None:
        self.device_id = device_id
        self.period = period
        self.quantities = tuple(quantities)
        self.produced: list[tuple[str, str, int]] = []
        self._n = 0

    def run(self, sink: Callable[[str, Sequence[Sample]], None], stop: threading.Event) -> None:
        while not stop.is_set():
            t_us = time.time_ns() // 1000
            batch = [Sample(q, float(self._n), "ug/m3", t_us) for q in self.quantities]
            sink(self.device_id, batch)
            self.produced.extend((self.device_id, q, t_us) for q in self.quantities)
            self._n += 1
            stop.wait(self.period)

    def health(self) -> dict[str, object]:
        return {"state": "ok", "produced": self._n}


class Subscriber:
    """A persistent-session QoS 1 subscriber that records every reading and message."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: Sequence[str] = ("kota/v1/+/+/+/up",),
        client_id: str = "test-sub",
    ) -> None:
        self.readings: set[tuple[str, str, int]] = set()
        self.duplicates = 0
        self.messages: list[tuple[str, Any, Any]] = []  # (topic, decoded batch or json, properties)
        self.retained: dict[str, dict[str, Any]] = {}
        self.topics = topics
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(host, port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscriber did not subscribe"

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/up"):
                batch = decode_uplink(msg.payload, msg.topic)
                assert not batch.rejects
                for q, t in zip(batch.quantity, batch.observed_us, strict=True):
                    key = (batch.device, q, t)
                    if key in self.readings:
                        self.duplicates += 1
                    self.readings.add(key)
                self.messages.append((msg.topic, batch, msg.properties))
            else:
                body = json.loads(msg.payload) if msg.payload else {}
                self.messages.append((msg.topic, body, msg.properties))
                if msg.retain:
                    self.retained[msg.topic] = body

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return True
            time.sleep(0.05)
        with self._lock:
            return predicate()

    def of_topic(self, suffix: str) -> list[Any]:
        with self._lock:
            return [body for topic, body, _ in self.messages if topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_status(
    host: str, port: int, topic: str, timeout: float = 5.0
) -> dict[str, Any] | None:
    """The retained message on `topic` as a fresh subscriber sees it."""
    got: dict[str, Any] = {}
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
    )

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.update(json.loads(msg.payload))
            done.set()

    client.on_connect = lambda c, *a: c.subscribe(topic, 1)
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    done.wait(timeout)
    client.disconnect()
    client.loop_stop()
    return got or None


def write_config(
    tmp_path: Path,
    broker_url: str,
    *,
    devices: str = "",
    extra_uplink: str = "",
    name: str = "edge.toml",
    metrics: str = "enabled = false",
) -> Path:
    path = tmp_path / name
    path.write_text(
        f"""
[agent]
id = "pi-test-01"
city = "THBKK"
site = "bkk-test"
state_dir = "{tmp_path / "state"}"
heartbeat_s = 1

[uplink]
url = "{broker_url}"
batch_max_age_s = 0.3
reconnect_min_s = 1
reconnect_max_s = 1
{extra_uplink}

[outbox]
checkpoint_s = 1

[metrics]
{metrics}
{devices}
"""
    )
    return path


def make_config(tmp_path: Path, broker_url: str, **kwargs: Any) -> EdgeConfig:
    return load_config(write_config(tmp_path, broker_url, **kwargs))


def test_tick_device_produces_at_its_rate() -> None:
    device = TickDevice("tick-1", period=0.01)
    got: list[tuple[str, int]] = []
    stop = threading.Event()
    thread = threading.Thread(target=device.run, args=(lambda d, s: got.append((d, len(s))), stop))
    thread.start()
    time.sleep(0.2)
    stop.set()
    thread.join(2)
    assert 5 <= len(got) <= 25 and all(n == 2 for _, n in got)
    assert len(device.produced) == 2 * len(got)
