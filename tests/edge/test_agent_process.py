"""The agent as the process systemd runs: kill -9 loses nothing, the Last Will says offline,
SIGTERM stops cleanly, and `kota edge check` reports one line per problem."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from test_agent_helpers import Subscriber, retained_status, write_config

from kota_cli.servers import MosquittoServer

ROOT = Path(__file__).resolve().parents[2]
STATUS = "kota/v1/THBKK/bkk-test/pi-test-01/status"


def synthetic_devices(tmp_path: Path, n: int, rate_hz: float) -> str:
    return "".join(
        f"""
[[devices]]
driver = "python:edge.bench:build_synthetic"
kind = "synthetic"
device_id = "bkk-syn-{i}"
rate_hz = {rate_hz}
log_path = "{tmp_path / f"produced-{i}.log"}"
"""
        for i in range(n)
    )


def produced(tmp_path: Path) -> set[tuple[str, str, int]]:
    """(device, quantity, observed_us) of every hand-off the outbox accepted (per the logs)."""
    out: set[tuple[str, str, int]] = set()
    for log in tmp_path.glob("produced-*.log"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:  # a line cut by the kill is ignored
                for q in ("pm2_5", "pm10", "temperature", "relative_humidity"):
                    out.add((parts[0], q, int(parts[1])))
    return out


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.agent", "--config", str(config), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_status(broker: MosquittoServer, state: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    status: dict | None = None
    while time.monotonic() < deadline:
        status = retained_status(broker.host, broker.port, STATUS, timeout=1.0)
        if status and status["state"] == state:
            return status
        time.sleep(0.1)
    raise AssertionError(f"status never became {state}: {status}")


def outbox_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def test_kill_9_then_restart_loses_nothing_and_lwt_says_offline(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port)
    config = write_config(tmp_path, mosquitto.url, devices=synthetic_devices(tmp_path, 3, 20.0))
    agent = start_agent(config)
    try:
        # 1. kill -9 while connected: the broker publishes the Last Will (retained offline)
        online = wait_status(mosquitto, "online")
        assert online["agent"] == "pi-test-01" and online["version"]
        time.sleep(1.0)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        lwt = wait_status(mosquitto, "offline")
        assert lwt["reason"] == "connection_lost"
        # 2. kill -9 while the broker is down: the readings exist only in the outbox
        agent = start_agent(config)
        wait_status(mosquitto, "online")
        mosquitto.stop()
        time.sleep(1.5)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        before_kill = produced(tmp_path)
        assert len(before_kill) > 3 * 4 * 20 * 2  # > 2 s of 3 devices x 4 quantities at 20 Hz
        assert outbox_rows(tmp_path) > 3 * 20  # > 1 s of hand-offs waiting
        mosquitto.start()
        # 3. restart on the same outbox: everything not acknowledged before the kill is sent
        agent = start_agent(config)
        assert sub.wait_for(lambda: before_kill <= sub.readings, timeout=20), (
            f"lost {len(before_kill - sub.readings)} readings"
        )
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(15) == 0
        stderr = agent.stderr.read().decode() if agent.stderr else ""
        assert "Traceback" not in stderr
        final = wait_status(mosquitto, "offline")
        assert final["reason"] == "shutdown"
        assert sub.wait_for(lambda: produced(tmp_path) <= sub.readings, timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        if agent.stderr:
            agent.stderr.close()
        sub.close()


def kota(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kota_cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_bad_config_is_one_error_line_exit_2(tmp_path: Path) -> None:
    bad = write_config(tmp_path, "http://broker.example.org:1883", name="bad.toml")
    result = kota("edge", "check", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kota: error:")
    assert (
        f"{bad}: uplink.url: scheme 'http' not supported (use mqtt:// or mqtts://)" in result.stderr
    )
    # the agent's own entry point says the same
    run = subprocess.run(
        [sys.executable, "-m", "edge.agent", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "uplink.url" in run.stderr


def test_check_reports_ok_and_fail_per_device(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    from edge.drivers import REGISTRY

    assert "pms5003" in REGISTRY
    master, slave = os.openpty()
    try:
        devices = f"""
[[devices]]
kind = "pms5003"
device_id = "bkk-pms-ok"
port = "{os.ttyname(slave)}"

[[devices]]
kind = "pms5003"
device_id = "bkk-pms-missing"
port = "{tmp_path / "no-such-tty"}"
"""
        config = write_config(tmp_path, mosquitto.url, devices=devices)
        result = kota("edge", "check", "--config", str(config))
    finally:
        os.close(master)
        os.close(slave)
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stderr
    assert any(line.startswith("OK   devices[0] bkk-pms-ok") for line in lines), lines
    assert any(line.startswith("FAIL devices[1] bkk-pms-missing") for line in lines), lines
    assert any(line.startswith("OK   uplink") for line in lines), lines
