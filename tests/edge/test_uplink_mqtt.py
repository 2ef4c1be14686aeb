"""The agent against a real Mosquitto: batches, status, heartbeat, outage, flow control."""

from __future__ import annotations

import time
from pathlib import Path

from test_agent_helpers import Subscriber, TickDevice, make_config, retained_status

from edge.agent import Agent
from edge.outbox import Outbox
from gateway.schema import Sample
from kota_cli.servers import MosquittoServer, temp_dir

STATUS = "kota/v1/THBKK/bkk-test/pi-test-01/status"


def test_agent_publishes_batches_that_a_subscriber_receives_whole(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, topics=("kota/v1/#",))
    devices = [TickDevice("bkk-dev-a"), TickDevice("bkk-dev-b", quantities=("temperature",))]
    agent = Agent(make_config(tmp_path, mosquitto.url), drivers=devices)
    agent.start()
    time.sleep(1.5)
    agent.stop()
    produced = {key for d in devices for key in d.produced}
    assert len(produced) > 40
    assert sub.wait_for(lambda: produced <= sub.readings), f"missing {len(produced - sub.readings)}"
    assert agent.outbox is not None
    batches = [b for b in sub.of_topic("/up")]
    assert len(batches) < len(produced) / 4  # batched, not one message per reading
    first = batches[0]
    assert (first.city, first.site, first.agent) == ("THBKK", "bkk-test", "pi-test-01")
    assert first.driver == "tick" and first.seq is not None and first.sent_us is not None
    # seq = first outbox row id; the user property carries the whole row range
    props = [p for topic, _, p in sub.messages if topic.endswith("/up")]
    first_id, last_id = map(int, dict(props[0].UserProperty)["kota-rows"].split("-"))
    assert first_id == first.seq and last_id >= first_id
    # per device, readings arrive in order
    for device in ("bkk-dev-a", "bkk-dev-b"):
        times = [t for b in batches if b.device == device for t in b.observed_us]
        assert times == sorted(times)
    # status: online on connect, a clean stop leaves a retained offline with reason shutdown
    states = [s["state"] for s in sub.of_topic("/status")]
    assert states[0] == "online" and states[-1] == "offline"
    final = retained_status(mosquitto.host, mosquitto.port, STATUS)
    assert final is not None and final["state"] == "offline" and final["reason"] == "shutdown"
    # heartbeat: version, uptime, outbox depth and drops, per-driver health
    beat = sub.of_topic("/heartbeat")[-1]
    assert beat["schema"] == "kota.heartbeat/1" and beat["agent"] == "pi-test-01"
    assert beat["version"] and beat["uptime_s"] >= 0
    assert set(beat["outbox"]) >= {"depth", "oldest_s", "dropped"}
    assert beat["outbox"]["dropped"] == {"size": 0, "age": 0, "write_error": 0}
    assert beat["drivers"]["bkk-dev-a"]["alive"] and beat["drivers"]["bkk-dev-a"]["kind"] == "tick"
    sub.close()


def test_broker_outage_outbox_grows_then_drains_nothing_lost(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port)
    devices = [TickDevice(f"bkk-dev-{i}", period=0.02) for i in range(3)]
    # a small in-flight window and batches: the drain is flow-controlled
    config = make_config(
        tmp_path, mosquitto.url, extra_uplink="max_inflight = 2\nbatch_max_readings = 40"
    )
    agent = Agent(config, drivers=devices)
    agent.start()
    assert agent.outbox is not None and agent.uplink is not None
    time.sleep(0.8)
    mosquitto.stop()
    time.sleep(3.0)
    depth_during_outage = agent.outbox.stats().readings
    assert not agent.uplink.connected
    mosquitto.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and agent.outbox.stats().readings > 200:
        time.sleep(0.1)
    dropped = agent.outbox.stats().dropped
    agent.stop()
    produced = {key for d in devices for key in d.produced}
    assert depth_during_outage > 3 * 2 * 100  # ~3 s of 3 devices x 2 quantities x 50 Hz
    assert sub.wait_for(lambda: produced <= sub.readings, timeout=20), (
        f"lost {len(produced - sub.readings)}"
    )
    assert dropped == {"size": 0, "age": 0, "write_error": 0}
    assert agent.uplink.stats().connects >= 2
    sub.close()


def test_readings_queued_while_broker_is_down_at_start_are_sent_later(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port)  # its session outlives the broker restart
    mosquitto.stop()
    device = TickDevice("bkk-dev-late", period=0.05)
    agent = Agent(make_config(tmp_path, mosquitto.url), drivers=[device])
    agent.start()
    time.sleep(1.0)
    mosquitto.start()
    time.sleep(1.5)
    agent.stop()
    produced = set(device.produced)
    assert sub.wait_for(lambda: produced <= sub.readings), f"lost {len(produced - sub.readings)}"
    sub.close()


def test_backlog_drains_within_the_brokers_receive_maximum(tmp_path: Path) -> None:
    """MQTT v5 Receive Maximum (Mosquitto's default is 20; EMQX and HiveMQ disconnect a
    client that exceeds it, paho does not enforce it): the in-flight window respects it."""
    broker = MosquittoServer(temp_dir("kota-test-mq-rm-"), extra_config="max_inflight_messages 5\n")
    broker.start()
    try:
        sub = Subscriber(broker.host, broker.port)
        config = make_config(
            tmp_path, broker.url, extra_uplink="max_inflight = 50\nbatch_max_readings = 8"
        )
        keys = set()
        with Outbox(config.outbox.path) as box:  # a backlog, as after an outage
            for i in range(400):
                t_us = 1_763_794_800_000_000 + i
                box.put(
                    f"bkk-dev-{i % 4}",
                    "bkk-test",
                    "tick",
                    [Sample("pm2_5", float(i), "ug/m3", t_us)],
                )
                keys.add((f"bkk-dev-{i % 4}", "pm2_5", t_us))
        agent = Agent(config, drivers=[])
        peak = 0
        agent.start()
        assert agent.uplink is not None and agent.outbox is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and agent.outbox.stats().readings:
            peak = max(peak, agent.uplink.inflight)
            time.sleep(0.0005)
        agent.stop()
        assert sub.wait_for(lambda: keys <= sub.readings, timeout=20), (
            f"lost {len(keys - sub.readings)}"
        )
        assert 1 <= peak <= 4  # 5 minus one slot for the status message
        sub.close()
    finally:
        broker.destroy()
