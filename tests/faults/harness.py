"""The fault harness: KNOWN readings through real edge agents, Mosquitto, gateway and PostgreSQL.

Imported by the tests of this folder (pytest puts it on sys.path). Nothing is mocked: the
edge agent runs as its own process (``python -m edge.agent --config edge.toml``, the same
entry point as ``kota edge run``), the gateway as ``kota gateway run``, the broker and the
database are the private servers of ``kota_cli.servers``.

Ground truth is what the edge produced, known exactly:

* `CountingFleet` configures `fault_driver.CountingDriver` devices (reading n of device d
  has observed_at = base + n ms and value = n; see fault_driver.py for why a kill -9 of the
  agent cannot make that set uncertain);
* `SerialRig` (serial scenario) puts firmware_sim PMS5003 simulators on real ptys (PtyBus)
  read by the real pms5003 driver; every frame carries a unique counter value and the
  simulator's `sent_log` is the produced set.

`compare()` turns expected and stored rows into `Counts` (produced, stored, dropped_reported,
lost, duplicates, unexpected) which every scenario prints (visible with ``pytest -s``).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import termios
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from gateway.devices import DeviceSpec, upsert_devices
from gateway.schema import Sample, encode_uplink
from gateway.schema.uplink import uplink_topic
from kota_cli.servers import MosquittoServer, free_port
from storage.migrate import migrate

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CITY = "THBKK"
SITE = "flt-site"
LAT, LON = 13.7563, 100.5018
PROBE_DEVICE = "flt-probe"

Key = tuple[str, str, int]  # (device, quantity, observed_us)


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `predicate` until it returns something truthy; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def now_us() -> int:
    return time.time_ns() // 1000


# --------------------------------------------------------------------------- counts


@dataclass
class Counts:
    """What a scenario prints and asserts on."""

    scenario: str
    produced: int
    stored: int
    dropped_reported: int = 0
    lost: int = 0
    duplicates: int = 0
    unexpected: int = 0
    wrong_value: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra.items())
        return (
            f"FAULT {self.scenario}: produced={self.produced} stored={self.stored} "
            f"dropped_reported={self.dropped_reported} lost={self.lost} "
            f"duplicates={self.duplicates} unexpected={self.unexpected} "
            f"wrong_value={self.wrong_value}" + (f" {extra}" if extra else "")
        )

    def print(self) -> None:
        print("\n" + self.line(), flush=True)

    def assert_exact(self) -> None:
        assert (self.lost, self.duplicates, self.unexpected, self.wrong_value) == (0, 0, 0, 0), (
            self.line()
        )
        assert self.stored == self.produced - self.dropped_reported, self.line()


def compare(
    scenario: str,
    expected: dict[Key, float],
    stored_rows: Sequence[tuple[str, str, int, float]],
    *,
    dropped: Iterable[Key] = (),
    dropped_reported: int = 0,
) -> Counts:
    """Expected {key: value} (what the edge produced) against the rows in `readings`."""
    dropped_keys = set(dropped)
    seen = Counter((d, q, t) for d, q, t, _ in stored_rows)
    values = {(d, q, t): v for d, q, t, v in stored_rows}
    want = set(expected) - dropped_keys
    return Counts(
        scenario=scenario,
        produced=len(expected),
        stored=len(seen),
        dropped_reported=dropped_reported,
        lost=len(want - seen.keys()),
        duplicates=sum(n - 1 for n in seen.values()),
        unexpected=len(seen.keys() - want),
        wrong_value=sum(1 for k in want & seen.keys() if values[k] != expected[k]),
    )


def missing_ranges(expected: dict[Key, float], rows: Sequence[tuple[str, str, int, float]]) -> str:
    """Diagnostics: per device and quantity, the ranges of reading numbers not stored."""
    stored = {(d, q, t) for d, q, t, _ in rows}
    by: dict[tuple[str, str], list[int]] = {}
    for key in sorted(set(expected) - stored):
        by.setdefault(key[:2], []).append(int(expected[key]))
    parts = []
    for (device, quantity), ns in sorted(by.items()):
        ranges: list[list[int]] = []
        for n in sorted(ns):
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1][1] = n
            else:
                ranges.append([n, n])
        text = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges[:10])
        parts.append(f"{device}/{quantity}: {len(ns)} missing [{text}]")
    return "; ".join(parts) or "nothing missing"


# --------------------------------------------------------------------------- database


class Database:
    """The scenario's database: migrated, devices registered, readings read back."""

    def __init__(self, url: str) -> None:
        self.url = url

    def prepare(self, devices: Iterable[tuple[str, str]]) -> None:
        migrate(self.url)
        specs = [
            DeviceSpec(
                device_id,
                CITY,
                SITE,
                driver,
                driver,
                site_name="fault suite",
                latitude=LAT,
                longitude=LON,
            )
            for device_id, driver in [*devices, (PROBE_DEVICE, "probe")]
        ]
        upsert_devices(self.url, specs)

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, connect_timeout=5)

    def rows(self, devices: Sequence[str]) -> list[tuple[str, str, int, float]]:
        with self._connect() as conn:
            cur = conn.execute(
                "SELECT device, quantity, "
                "(extract(epoch FROM observed_at - 'epoch'::timestamptz) * 1000000)::bigint, "
                "value FROM readings WHERE device = ANY(%s)",
                (list(devices),),
            )
            return [(d, q, int(t), float(v)) for d, q, t, v in cur.fetchall()]

    def count(self, devices: Sequence[str]) -> int:
        try:
            with self._connect() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM readings WHERE device = ANY(%s)", (list(devices),)
                ).fetchone()
        except psycopg.OperationalError:
            return -1
        return int(row[0]) if row else 0

    def dead_letters(self, devices: Sequence[str] | None = None) -> list[dict[str, Any]]:
        sql = 'SELECT reason, detail, topic, city, site, device, payload, "row" FROM dead_letters'
        args: tuple[Any, ...] = ()
        if devices is not None:
            sql += " WHERE device = ANY(%s)"
            args = (list(devices),)
        with self._connect() as conn:
            cur = conn.execute(sql + " ORDER BY id", args)
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def agent_status(self, agent_id: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            cur = conn.execute(
                "SELECT agent_id, outbox_depth, last_seen FROM agent_status WHERE agent_id = %s",
                (agent_id,),
            )
            row = cur.fetchone()
        return None if row is None else {"agent_id": row[0], "outbox_depth": row[1]}

    def wait_count(self, devices: Sequence[str], n: int, timeout: float, what: str = "") -> int:
        """Wait until `readings` holds n rows of `devices` (fails early on more than n)."""
        last = [-1]

        def done() -> bool:
            last[0] = self.count(devices)
            assert last[0] <= n, f"{last[0]} rows stored, more than the {n} expected"
            return last[0] == n

        try:
            wait_until(done, timeout, what or f"{n} readings in the database", interval=0.2)
        except AssertionError as err:
            raise AssertionError(f"{err} (have {last[0]})") from None
        return last[0]


# --------------------------------------------------------------------------- processes


def _tail(path: Path, n: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


class _Process:
    """A child process with its stderr in a log file; killed on teardown whatever happened."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def _popen(self, args: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("ab")
        log.write(f"\n==== start {self.starts + 1} at {datetime.now(UTC).isoformat()}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                args,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None and self.alive, f"{self.name} is not running"
        self.proc.send_signal(sig)
        self.proc.wait(30)
        self.kills += 1
        self._closed()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout:.0f} s") from None
        self._closed()
        return code

    def _closed(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._closed()

    def log(self) -> str:
        return _tail(self.log_path)


class GatewayProcess(_Process):
    """`kota gateway run` with a fixed --client-id (its persistent session survives kills)."""

    name = "gateway"

    def __init__(
        self, workdir: Path, db_url: str, mqtt_url: str, client_id: str, group: str | None = None
    ) -> None:
        super().__init__(workdir)
        self.db_url, self.mqtt_url, self.client_id = db_url, mqtt_url, client_id
        self.group = group  # None: the default shared-subscription group
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def start(self, timeout: float = 60.0) -> None:
        self._popen(
            [
                sys.executable,
                "-m",
                "kota_cli.main",
                "gateway",
                "run",
                "--database-url",
                self.db_url,
                "--mqtt-url",
                self.mqtt_url,
                "--client-id",
                self.client_id,
                "--stats-every",
                "1",
                "--batch-max-age",
                "0.05",
                *(["--group", self.group] if self.group is not None else []),
            ]
        )
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        started = threading.Event()

        def read(stream: Any) -> None:
            with contextlib.suppress(ValueError, OSError):
                for raw in stream:
                    with contextlib.suppress(ValueError):
                        event = json.loads(raw)
                        with self._lock:
                            self.events.append(event)
                        if event.get("event") == "gateway_started":
                            started.set()

        threading.Thread(target=read, args=(proc.stdout,), daemon=True).start()
        wait_until(
            lambda: started.is_set() or proc.poll() is not None, timeout, "the gateway to start"
        )
        assert proc.poll() is None, f"gateway exited with {proc.returncode}: {self.log()}"

    def last_stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.events[-1]) if self.events else {}


class EdgeAgent(_Process):
    """`python -m edge.agent --config edge.toml` (the process `kota edge run` runs)."""

    name = "agent"

    def __init__(
        self,
        workdir: Path,
        mqtt_url: str,
        devices_toml: str,
        *,
        agent_id: str = "flt-pi-1",
        max_bytes: int | None = None,
        batch_max_readings: int = 500,
        batch_max_age_s: float = 0.1,
        heartbeat_s: float = 1.0,
    ) -> None:
        super().__init__(workdir)
        self.agent_id = agent_id
        self.state_dir = workdir / "edge-state"
        self.metrics_port = free_port()
        outbox = f"max_bytes = {max_bytes}\n" if max_bytes else ""
        self.config_path = workdir / "edge.toml"
        self.config_path.write_text(
            f"""
[agent]
id = "{agent_id}"
city = "{CITY}"
site = "{SITE}"
state_dir = "{self.state_dir}"
heartbeat_s = {heartbeat_s}
log_level = "warning"

[uplink]
url = "{mqtt_url}"
batch_max_readings = {batch_max_readings}
batch_max_age_s = {batch_max_age_s}
max_inflight = 20
reconnect_min_s = 1
reconnect_max_s = 2

[outbox]
path = "{self.state_dir / "outbox.sqlite"}"
{outbox}
[metrics]
enabled = true
port = {self.metrics_port}
{devices_toml}
"""
        )

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        self._popen(
            [sys.executable, "-m", "edge.agent", "--config", str(self.config_path)], env=env
        )
        wait_until(
            lambda: self.metrics() is not None or not self.alive, 60, "the edge agent to start"
        )
        assert self.alive, f"agent exited: {self.log()}"

    def metrics(self) -> dict[str, float] | None:
        """The agent's Prometheus endpoint as {'name{labels}': value}, None when unreachable."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return None
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def metric(self, name: str, default: float = 0.0) -> float:
        values = self.metrics() or {}
        return values.get(name, default)

    def outbox_file_counters(self) -> dict[str, int]:
        """The persisted drop counters (read from the file; the agent must be stopped)."""
        with contextlib.closing(sqlite3.connect(self.state_dir / "outbox.sqlite")) as db:
            return {name: int(v) for name, v in db.execute("SELECT name, value FROM counters")}

    def outbox_rows(self) -> int:
        with contextlib.closing(sqlite3.connect(self.state_dir / "outbox.sqlite")) as db:
            return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


# --------------------------------------------------------------------------- devices


@dataclass
class CountingFleet:
    """`n` CountingDriver devices; the expected readings follow from (count, quantities)."""

    workdir: Path
    n: int
    count: int
    rate_hz: float
    per_handoff: int = 1
    prefix: str = "flt-d"
    quantities: tuple[str, ...] = ("pm2_5", "pm10")
    base_us: int = field(default_factory=lambda: (now_us() // 1_000_000 - 120) * 1_000_000)

    @property
    def devices(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(self.n)]

    def state_path(self, device: str) -> Path:
        return self.workdir / f"{device}.state"

    def toml(self) -> str:
        quantities = ", ".join(f'"{q}:ug/m3"' for q in self.quantities)
        return "".join(
            f"""
[[devices]]
driver = "python:fault_driver:build"
kind = "counting"
device_id = "{device}"
base_us = {self.base_us}
count = {self.count}
rate_hz = {self.rate_hz}
per_handoff = {self.per_handoff}
quantities = [{quantities}]
state_path = "{self.state_path(device)}"
"""
            for device in self.devices
        )

    def registry(self) -> list[tuple[str, str]]:
        return [(device, "counting") for device in self.devices]

    def expected(self) -> dict[Key, float]:
        return {
            (device, q, self.base_us + n * 1000): float(n)
            for device in self.devices
            for n in range(self.count)
            for q in self.quantities
        }

    def readings(self) -> int:
        return self.n * self.count * len(self.quantities)

    def _lines(self, device: str) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return self.state_path(device).read_text().split()
        return []

    def progress(self) -> int:
        """Hand-offs started so far, all devices (from the drivers' intent logs)."""
        total = 0
        for device in self.devices:
            numbers = [int(x) for x in self._lines(device) if x.isdigit()]
            total += (max(numbers) + 1) if numbers else 0
        return total

    def handoffs(self) -> int:
        return self.n * -(-self.count // self.per_handoff)

    def done(self) -> bool:
        return all("done" in self._lines(device) for device in self.devices)


# --------------------------------------------------------------------------- the stack


class Stack:
    """One scenario's running pieces; `close()` kills whatever is still running."""

    def __init__(self, workdir: Path, db: Database, broker: MosquittoServer) -> None:
        self.workdir, self.db, self.broker = workdir, db, broker
        self.gateway: GatewayProcess | None = None
        self.agents: list[EdgeAgent] = []
        self._probe_n = itertools.count()

    def start_gateway(self, client_id: str = "flt-gw", group: str | None = None) -> GatewayProcess:
        self.gateway = GatewayProcess(self.workdir, self.db.url, self.broker.url, client_id, group)
        self.gateway.start()
        self.probe()
        return self.gateway

    def agent(self, devices_toml: str, **kwargs: Any) -> EdgeAgent:
        agent = EdgeAgent(self.workdir, self.broker.url, devices_toml, **kwargs)
        self.agents.append(agent)
        return agent

    def probe(self, timeout: float = 60.0) -> None:
        """Publish one uplink and wait for its row: the gateway is subscribed and writing."""
        t = now_us() - next(self._probe_n) - 1_000_000
        payload = encode_uplink(
            CITY, SITE, PROBE_DEVICE, "probe", [Sample("pm2_5", 1.0, "ug/m3", t)], agent="flt"
        )
        publish(self.broker, [(uplink_topic(CITY, SITE, PROBE_DEVICE), payload)])

        def arrived() -> bool:
            with contextlib.suppress(psycopg.OperationalError):
                rows = self.db.rows([PROBE_DEVICE])
                return any(r[2] == t for r in rows)
            return False

        wait_until(arrived, timeout, "the probe reading (gateway subscribed and writing)", 0.1)

    def close(self) -> None:
        for agent in self.agents:
            agent.cleanup()
        if self.gateway is not None:
            self.gateway.cleanup()


def publish(
    broker: MosquittoServer, messages: Sequence[tuple[str, bytes]], timeout: float = 30.0
) -> None:
    """Publish at QoS 1 and wait for every PUBACK."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"flt-pub-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv5,
    )
    client.max_inflight_messages_set(100)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout)
            assert info.is_published(), "broker did not acknowledge a publish"
    finally:
        client.disconnect()
        client.loop_stop()


class HeartbeatWatcher:
    """Subscribes to the agents' heartbeats (what operations sees) and keeps the last one."""

    def __init__(self, broker: MosquittoServer) -> None:
        self.last: dict[str, Any] = {}
        self.count = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"flt-hb-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *a: c.subscribe("kota/v1/+/+/+/heartbeat", 0)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(ValueError), self._lock:
            self.last = json.loads(msg.payload)
            self.count += 1

    def latest(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.last)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- serial rig


class CounterSource:
    """A firmware_sim ValueSource whose every call (= every frame) has a new value n."""

    def __init__(self, start: int) -> None:
        self.n = start

    def __call__(self, now: float) -> dict[str, float]:
        self.n += 1
        return {"pm1": self.n, "pm2_5": self.n, "pm10": self.n}


def pty_unread(bus: Any) -> int:
    """Bytes the device sent that the edge has not read yet (pty input queue + bus backlog)."""
    if bus._slave is None:
        return 0
    buf = bytearray(4)
    fcntl.ioctl(bus._slave, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder) + len(bus._pending)


@dataclass
class PlugSession:
    """One plugged-in stretch of a serial device, from the simulator's side."""

    plugged_at: float
    unplugged_at: float | None = None
    unread_at_unplug: int = 0  # bytes still in the pty when it vanished


def unplug(bus: Any, session: PlugSession) -> None:
    """Pull the cable: stop the device thread, note what the edge had not read, close."""
    thread = bus._thread
    bus._stop.set()
    if thread is not None:
        thread.join(5)
    session.unread_at_unplug = pty_unread(bus)
    session.unplugged_at = time.time()
    bus.close()


def classify_frames(
    sent_log: Sequence[Any], sessions: Sequence[PlugSession]
) -> tuple[dict[int, str], int]:
    """{counter value: class} of every data frame the simulator sent; and the acks seen.

    Classes: ``at_open`` (sent after plug-in but before the edge's open command was
    acknowledged: pyserial flushes the input queue when it opens a port), ``at_unplug``
    (among the last frames whose bytes were still unread in the pty when it vanished),
    ``steady`` (everything else: must arrive).
    """
    out: dict[int, str] = {}
    acks = 0
    for s in sessions:
        end = s.unplugged_at if s.unplugged_at is not None else float("inf")
        frames = [f for f in sent_log if s.plugged_at <= f.time <= end]
        opened = next((f.time for f in frames if f.frame_type == "ack"), None)
        acks += sum(1 for f in frames if f.frame_type == "ack")
        data = [f for f in frames if f.frame_type == "data"]
        tail = -(-s.unread_at_unplug // 32) + 1 if s.unplugged_at is not None else 0
        for i, f in enumerate(data):
            value = int(f.values["pm2_5"])
            if opened is None or f.time < opened:
                out[value] = "at_open"
            elif i >= len(data) - tail:
                out[value] = "at_unplug"
            else:
                out[value] = "steady"
    return out, acks
