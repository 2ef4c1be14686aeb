"""The simulator runner: the example sim.toml end to end, virtual clock, config validation."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import serial

from firmware_sim.runner import Endpoint, load_config, run
from kota_cli.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "firmware_sim" / "examples" / "sim.toml"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _subscribe(url: str, messages: list[tuple[str, bytes]]) -> mqtt.Client:
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="runner-test")
    ready = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
    client.on_subscribe = lambda *_: ready.set()
    client.on_message = lambda c, u, m: messages.append((m.topic, m.payload))
    client.connect(host, int(port))
    client.loop_start()
    assert ready.wait(10)
    return client


def test_example_config_runs_and_stops_cleanly(
    mosquitto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOTA_MQTT_URL", mosquitto.url)
    messages: list[tuple[str, bytes]] = []
    sub = _subscribe(mosquitto.url, messages)
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    lines: list[str] = []
    ready: list[Endpoint] = []
    pms_bytes = bytearray()
    stop = threading.Event()

    def on_ready(endpoints: list[Endpoint]) -> None:
        ready.extend(endpoints)
        for ep in endpoints:
            if ep.transport == "pty":
                assert os.path.exists(ep.address), ep
        # read a real PMS5003 frame off its pty while the simulator runs
        pms = next(ep for ep in endpoints if ep.name == "bkk-pms-01")
        with serial.Serial(pms.address, 9600, timeout=3) as port:
            pms_bytes.extend(port.read(64))
        threading.Timer(2.0, stop.set).start()

    start = time.monotonic()
    summary = run(EXAMPLE, stop_event=stop, on_ready=on_ready, out=lines.append)
    assert time.monotonic() - start < 20

    config = load_config(EXAMPLE)
    assert [e.name for e in ready] == [d.name for d in config.devices]
    text = "\n".join(lines)
    for ep in ready:
        assert ep.name in text
    assert "usb-kota-sim-bkk-pms-01-if00" in text  # a pty path
    assert "esphome-bkk-01/sensor/+/state" in text  # an MQTT topic
    assert "tele/tasmota-han-01/SENSOR" in text
    assert {e.city for e in ready} == {"THBKK", "VNHAN", "THCNX"}
    assert b"\x42\x4d" in pms_bytes  # PMS5003 start bytes

    # MQTT telemetry reached the broker, and every device said goodbye
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(t == "kota/energy/cnx-energy-01/status"
                                                  and p == b"offline" for t, p in messages):  # fmt: skip
        time.sleep(0.05)
    topics = {t for t, _ in messages}
    assert "esphome-bkk-01/sensor/pm_2_5/state" in topics
    assert "sensor.community/esp8266-1234567" in topics
    tasmota = [json.loads(p) for t, p in messages if t == "tele/tasmota-han-01/SENSOR"]
    assert tasmota and "SDS0X1" in tasmota[0]
    assert b"offline" in [p for t, p in messages if t == "esphome-bkk-01/status"]
    assert all(d.sent_log for d in summary.mqtt_devices)
    sub.disconnect()
    sub.loop_stop()

    # no thread or file descriptor left behind; temp dirs removed
    time.sleep(0.2)
    leaked = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert not leaked, leaked
    assert _open_fds() <= fds_before
    for ep in ready:
        if ep.transport == "pty":
            assert not os.path.exists(ep.address)


def test_virtual_clock_replays_history_fast(mosquitto: Any, tmp_path: Path) -> None:
    cfg = tmp_path / "sim.toml"
    cfg.write_text(
        f"""
seed = 1
[mqtt]
url = "{mosquitto.url}"
[clock]
mode = "virtual"
start = "2026-03-01T00:00:00Z"
step_s = 3600
pace_s = 0.0
[[devices]]
name = "cnx-sc"
city = "THCNX"
kind = "mqtt:sensor_community"
interval_s = 3600
""",
        "utf-8",
    )
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    summary = run(cfg, stop_event=stop, out=lambda _: None, mqtt_url=mosquitto.url)
    (dev,) = summary.mqtt_devices
    times = [m.time for m in dev.sent_log if m.values]
    assert len(times) > 24  # more than a simulated day in one real second
    assert all(b - a == 3600 for a, b in itertools.pairwise(times))
    assert times[0] == 1772323200.0


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "bad.toml"
    p.write_text(body, "utf-8")
    return p


GOOD_DEVICE = '[[devices]]\nname = "a"\ncity = "THBKK"\nkind = "pms5003"\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            GOOD_DEVICE * 1 + '[[devices]]\nname = "b"\ncity = "THBKK"\nkind = "sds011"\n'
            '[[devices]]\nname = "c"\ncity = "THBKK"\nkind = "pms9000"\n',
            "devices[2].kind: unknown kind 'pms9000' (expected one of pms5003, ",
        ),
        (
            '[[devices]]\nname = "a"\ncity = "FRPAR"\nkind = "pms5003"\n',
            "devices[0].city: unknown city",
        ),
        (GOOD_DEVICE + GOOD_DEVICE, "devices[1].name: duplicate device name 'a'"),
        (
            '[[devices]]\nname = "a"\ncity = "THBKK"\nkind = "modbus:s8"\nbus = "nope"\n',
            "devices[0].bus: no bus named 'nope'",
        ),
        (
            '[[devices]]\nname = "a"\ncity = "THBKK"\nkind = "pms5003"\nfaults = { wobble = 0.1 }\n',
            "devices[0].faults.wobble: unknown fault",
        ),
        (
            '[[devices]]\nname = "a"\ncity = "THBKK"\nkind = "pms5003"\nfaults = { spike_rate = 3 }\n',
            "devices[0].faults: spike_rate must be within 0..1",
        ),
        (
            '[[devices]]\nname = "a"\ncity = "THBKK"\nkind = "pms5003"\nintervl_s = 3\n',
            "devices[0].intervl_s: unknown setting",
        ),
        (
            '[[devices]]\nname = "a"\ncity = "THBKK"\nkind = "mqtt:gas"\nfaults = { garbage = 0.1 }\n',
            "devices[0].faults.garbage: byte-level fault on an MQTT device",
        ),
        ("[clock]\nmode = 'warp'\n" + GOOD_DEVICE, "clock.mode: 'warp' is not real or virtual"),
        ('[mqtt]\nurl = "http://x"\n' + GOOD_DEVICE, "mqtt.url: MQTT URL"),
        ("seed = 1\n", "devices: no devices configured"),
        ("devices = [", "invalid TOML"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path: Path, body: str, expected: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert expected in msg


def test_run_raises_config_error_before_starting_anything(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[devices]]\nname = "a"\ncity = "THBKK"\nkind = "pms9000"\n')
    before = set(threading.enumerate())
    with pytest.raises(ConfigError, match=r"devices\[0\]\.kind: unknown kind 'pms9000'"):
        run(path, stop_event=threading.Event())
    assert set(threading.enumerate()) == before
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")


def test_example_config_is_valid_and_commented() -> None:
    cfg = load_config(EXAMPLE)
    assert {d.city for d in cfg.devices} == {"THBKK", "VNHAN", "THCNX"}
    kinds = {d.kind for d in cfg.devices}
    assert {"pms5003", "sds011", "traffic_nmea", "modbus:sdm120", "modbus:watermeter",
            "modbus:thprobe"} <= kinds  # fmt: skip
    assert any(k.startswith("mqtt:") for k in kinds)
    on_bus = [d for d in cfg.devices if d.bus == "bkk-rs485"]
    assert len(on_bus) == 3 and len({d.address for d in on_bus}) == 3
    text = EXAMPLE.read_text("utf-8")
    for d in cfg.devices:
        assert f'name = "{d.name}"' in text
    assert text.count("#") > 60
