"""`kota bench pipeline` and `kota bench soak`: the whole sensors-to-database path, measured
against the storage limit of the same machine in the same run.

`run_pipeline_bench()`:

1. Servers: Mosquitto and PostgreSQL from KOTA_MQTT_URL / KOTA_DATABASE_URL, else private
   ones on free ports (fsync and synchronous_commit ON, the broker configured like
   ingest/mosquitto.conf for queues and autosave), destroyed at the end. The database is
   migrated and `devices` bench devices are registered in a few cities.
2. Storage limit: one Python process COPYs (binary, buffers pre-encoded, 50k rows per
   transaction) generated readings of the pipeline's shape straight into the SAME `readings`
   table (same key, indexes, partitions, rollup trigger) -> `copy_limit_rows_per_s`; then
   TRUNCATE readings and the rollup bookkeeping, CHECKPOINT.
3. Full pipeline: `workers` processes of `kota gateway run` on one shared-subscription group,
   fed by a load generator process publishing uplinks as the edge agent batches them (the
   bytes of encode_uplink, from per-device templates - see UplinkTemplate; MQTT v5, QoS 1,
   `readings_per_message` readings per device message, observed_at = publish time in epoch
   µs) through a minimal socket publisher (RawPublisher: paho cost as much CPU per reading
   as PostgreSQL and took it from the system under test). Closed loop: the generator may be at most `window` messages ahead of
   what the workers have committed (their JSON stats lines), so the broker queue stays
   bounded while the pipeline runs at its maximum. After `warmup` s, `readings_per_s` =
   rows whose commit timestamp falls in the next `seconds` s (count(*) at both ends when
   commit timestamps are off). `backlog_messages` and `loadgen_cpu_util` show that the
   generator is not the bottleneck; `other_processes_cpu_util` shows how much of the machine
   something else used meanwhile.
4. Latency at ~50 % of that rate: publish -> commit of EVERY reading, exact, from
   PostgreSQL's commit timestamps (`track_commit_timestamp = on`,
   pg_xact_commit_timestamp(xmin) - observed_at). Same clock: generator and database run on
   one machine. (With an external database without commit timestamps the latency is null.)
5. Stop, drain, and check: `lost` = published readings - rows, `duplicates` = deliveries
   the idempotent writer collapsed (readings the workers handled - rows),
   `duplicates_in_table` = rows - distinct keys (0 by the primary key). `lost` and
   `duplicates_in_table` must be 0.
6. CPU seconds per 100k committed readings per component over the measured window
   (psutil): load generator, gateway workers (sum), mosquitto, postgres (every process of
   the cluster), and this orchestrator.

`run_soak()` runs the same stack at half the sustained maximum for N minutes and samples the
memory of every process every ~10 s.

Also runnable directly, with options the CLI does not expose (py-spy profile of worker 0,
batch size, window, rate):
    python -m kota_cli.bench_pipeline pipeline --seconds 20 --profile 10
    python -m kota_cli.bench_pipeline soak --minutes 2
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kota_cli.errors import KotaError

# quantity, unit the device reports in, typical value, noise (peak to peak)
MIX: tuple[tuple[str, str, float, float], ...] = (
    ("pm2_5", "µg/m³", 25.0, 6.0),
    ("pm10", "ug/m3", 40.0, 10.0),
    ("relative_humidity", "%", 70.0, 4.0),
    ("temperature", "°F", 86.0, 1.0),
    ("no2", "ppb", 20.0, 4.0),
    ("co", "ppm", 0.8, 0.1),
    ("o3", "ppb", 30.0, 6.0),
    ("so2", "ug/m3", 5.0, 1.0),
    ("co2", "ppm", 600.0, 20.0),
)
CITIES = ("THBKK", "VNHAN", "IDJKT", "PHMNL", "MYKUL")
DEVICE_PREFIX = "bench-pipe-"
DRIVER = "bench"
COPY_CHUNK = 50_000
BROKER_INFLIGHT = 1000
# What ingest/mosquitto.conf (production) sets differently from kota_cli.servers' test broker.
BROKER_CONFIG = (
    "autosave_interval 60\n"
    "autosave_on_changes false\n"
    "max_queued_messages 2000000\n"
    f"max_inflight_messages {BROKER_INFLIGHT}\n"
    "queue_qos0_messages false\n"
)


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class BenchDevice:
    city: str
    site: str
    device: str


def bench_devices(n: int) -> list[BenchDevice]:
    """`n` devices spread over CITIES, five per site."""
    out = []
    for i in range(n):
        city = CITIES[i % len(CITIES)]
        out.append(
            BenchDevice(
                city, f"bp-{city.lower()}-{i // (5 * len(CITIES)):04d}", f"{DEVICE_PREFIX}{i:05d}"
            )
        )
    return out


def register_devices(url: str, devices: Sequence[BenchDevice]) -> None:
    """Sites, devices and their declared quantities, so the gateway accepts them."""
    from gateway.devices import DeviceSpec, upsert_devices
    from gateway.schema import load_cities

    cities = load_cities()
    specs = [
        DeviceSpec(
            device_id=d.device,
            city=d.city,
            site_id=d.site,
            model="bench",
            driver=DRIVER,
            site_name=d.site,
            latitude=cities[d.city].latitude,
            longitude=cities[d.city].longitude,
            quantities={q: u for q, u, _, _ in MIX},
        )
        for d in devices
    ]
    upsert_devices(url, specs)


# --------------------------------------------------------------------------- servers


def _listening_pid(port: int) -> int | None:
    """pid of the local process listening on TCP `port`, if it is on this machine."""
    import psutil

    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if (
                conn.status == psutil.CONN_LISTEN
                and conn.laddr
                and conn.laddr.port == port
                and conn.pid
            ):
                return int(conn.pid)
    return None


class Stack:
    """Broker + database for one bench run: private ones unless URLs are given."""

    def __init__(self, database_url: str | None, mqtt_url: str | None) -> None:
        self.database_url = database_url or os.environ.get("KOTA_DATABASE_URL") or None
        self.mqtt_url = mqtt_url or os.environ.get("KOTA_MQTT_URL") or None
        self.private_db = self.database_url is None
        self.private_broker = self.mqtt_url is None
        self._pg: Any = None
        self._mq: Any = None
        self.commit_ts = False
        self.notes: list[str] = []

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        from kota_cli.servers import MosquittoServer, PostgresServer, temp_dir

        if self.private_db:
            self._pg = PostgresServer(temp_dir("kota-bench-pg-"), fsync=True)
            self._pg.start()
            self.database_url = self._pg.create_database("kota")
        if self.private_broker:
            self._mq = MosquittoServer(temp_dir("kota-bench-mq-"), extra_config=BROKER_CONFIG)
            self._mq.start()
            self.mqtt_url = self._mq.url
        self._prepare_database()

    def _prepare_database(self) -> None:
        import psycopg

        from storage.migrate import migrate

        assert self.database_url is not None
        migrate(self.database_url)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            if not self.private_db:
                row = conn.execute("SELECT EXISTS (SELECT 1 FROM readings LIMIT 1)").fetchone()
                if row and row[0]:
                    raise KotaError(
                        "KOTA_DATABASE_URL: the readings table is not empty; the pipeline bench "
                        "truncates it, so point it at a scratch database"
                    )
            setting = conn.execute("SHOW track_commit_timestamp").fetchone()
            self.commit_ts = bool(setting and setting[0] == "on")
            if not self.commit_ts and self._pg is not None:
                conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        if not self.commit_ts and self._pg is not None:
            self._pg.restart()
            with psycopg.connect(self.database_url) as conn:
                setting = conn.execute("SHOW track_commit_timestamp").fetchone()
            self.commit_ts = bool(setting and setting[0] == "on")
        if not self.commit_ts:
            self.notes.append("track_commit_timestamp is off on the given database: no latency")

    @property
    def mqtt_host_port(self) -> tuple[str, int]:
        from ingest.consumer import parse_mqtt_url

        assert self.mqtt_url is not None
        addr = parse_mqtt_url(self.mqtt_url)
        return addr.host, addr.port

    def broker_pid(self) -> int | None:
        if self._mq is not None and self._mq._proc is not None:
            return int(self._mq._proc.pid)
        host, port = self.mqtt_host_port
        return _listening_pid(port) if host in ("127.0.0.1", "localhost", "::1") else None

    def postmaster_pid(self) -> int | None:
        if self._pg is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int((self._pg.data_dir / "postmaster.pid").read_text().split()[0])
        from psycopg.conninfo import conninfo_to_dict

        assert self.database_url is not None
        info = conninfo_to_dict(self.database_url)
        if str(info.get("host", "localhost")) in ("127.0.0.1", "localhost", "::1"):
            return _listening_pid(int(info.get("port") or 5432))
        return None

    def close(self) -> None:
        if self._mq is not None:
            self._mq.destroy()
            self._mq = None
        if self._pg is not None:
            self._pg.destroy()
            self._pg = None


def reset_readings(url: str) -> None:
    """Empty readings and the rollup bookkeeping, then CHECKPOINT (both phases start clean)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            t
            for t in (
                "readings",
                "kota_rollup_dirty",
                "readings_hourly",
                "readings_daily",
                "dead_letters",
            )
            if (r := conn.execute("SELECT to_regclass(%s)", [t]).fetchone()) and r[0]
        ]
        tables = [
            t
            for t in tables
            if conn.execute(
                "SELECT relkind IN ('r', 'p') FROM pg_class WHERE oid = to_regclass(%s)", [t]
            ).fetchone()
            == (True,)
        ]
        conn.execute("TRUNCATE " + ", ".join(tables))
        with contextlib.suppress(psycopg.Error):
            conn.execute("CHECKPOINT")


def cleanup_external(stack: Stack, client_ids: Sequence[str]) -> None:
    """On a shared broker/database: drop the bench's MQTT sessions, rows and devices."""
    if not stack.private_broker:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        host, port = stack.mqtt_host_port
        for cid in client_ids:
            with contextlib.suppress(Exception):
                c = mqtt.Client(
                    mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5
                )
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 0
                c.connect(host, port, clean_start=True, properties=props)
                c.loop(0.2)
                c.disconnect()
    if not stack.private_db and stack.database_url:
        import psycopg

        with contextlib.suppress(psycopg.Error), psycopg.connect(stack.database_url) as conn:
            conn.execute("TRUNCATE readings")
            conn.execute("DELETE FROM devices WHERE device_id LIKE %s", [DEVICE_PREFIX + "%"])
            conn.execute(
                "DELETE FROM sites WHERE site_id LIKE 'bp-%%' AND NOT EXISTS "
                "(SELECT 1 FROM devices d WHERE d.site_id = sites.site_id)"
            )


# --------------------------------------------------------------------------- storage limit


def synthetic_frame(devices: Sequence[BenchDevice], rows: int, end_us: int) -> Any:
    """`rows` readings shaped like the pipeline's (canonical units), unique keys, time order."""
    import numpy as np
    import polars as pl

    nq = len(MIX)
    per_step = len(devices) * nq
    steps = -(-rows // per_step)
    idx = np.arange(rows, dtype=np.int64)
    step = idx // per_step
    dev = (idx // nq) % len(devices)
    q = idx % nq
    rng = np.random.default_rng(7)
    base = np.array([m[2] for m in MIX])[q]
    noise = np.array([m[3] for m in MIX])[q]
    value = base + noise * (rng.random(rows) - 0.5)
    observed = end_us - (steps - step) * 1_000_000
    d_city = np.array([d.city for d in devices])
    d_site = np.array([d.site for d in devices])
    d_dev = np.array([d.device for d in devices])
    return pl.DataFrame(
        {
            "device": d_dev[dev],
            "quantity": np.array([m[0] for m in MIX])[q],
            "observed_at": pl.Series(observed).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "city": d_city[dev],
            "site": d_site[dev],
            "value": value,
            "raw_value": value,
            "received_at": pl.Series(observed + 150_000)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
            "flags": pl.Series(np.zeros(rows, dtype=np.int16)),
            "source": DRIVER,
        }
    )


def measure_copy_limit(url: str, devices: Sequence[BenchDevice], rows: int) -> dict[str, Any]:
    """Binary COPY straight into readings from this process: rows/s (COPY + commit only)."""
    import psycopg

    from ingest.pgcopy import encode_binary_copy
    from ingest.writer import STAGE_COLUMNS

    names = ", ".join(name for name, _ in STAGE_COLUMNS)
    frame = synthetic_frame(devices, rows, time.time_ns() // 1000 - 60_000_000)
    started = time.perf_counter()
    chunks = [
        encode_binary_copy(frame.slice(i, COPY_CHUNK), STAGE_COLUMNS)
        for i in range(0, rows, COPY_CHUNK)
    ]
    encode_s = time.perf_counter() - started
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for payload in chunks:
            with (
                conn.transaction(),
                cur.copy(f"COPY readings ({names}) FROM STDIN (FORMAT binary)") as cp,
            ):
                cp.write(payload)
        copy_s = time.perf_counter() - started
        stored = cur.execute("SELECT count(*) FROM readings").fetchone()
    if not stored or stored[0] != rows:
        raise KotaError(f"copy limit: {stored} rows stored, {rows} sent")
    return {
        "copy_limit_rows_per_s": round(rows / copy_s),
        "copy_rows": rows,
        "copy_rows_per_transaction": COPY_CHUNK,
        "copy_seconds": round(copy_s, 3),
        "copy_encode_rows_per_s": round(rows / encode_s),
    }


# --------------------------------------------------------------------------- load generator


class UplinkTemplate:
    """Byte-identical `encode_uplink` output for one device, at a fraction of the cost.

    The generator stands in for hundreds of edge agents on the same two cores as the
    pipeline, so every microsecond it spends is taken from the system under test. The fixed
    parts of a device's message (header, quantity/unit/flags columns) are rendered once, the
    value columns come from a pool of pre-rendered random-walk lists, and only seq, sent_at
    and observed_at are rendered per message. `tests/bench` checks the bytes against
    `encode_uplink`.
    """

    POOL = 32

    def __init__(
        self,
        city: str,
        site: str,
        device: str,
        agent: str,
        readings_per_message: int,
        seed: int = 0,
    ) -> None:
        import random

        from gateway.schema.uplink import UPLINK_SCHEMA

        nq = len(MIX)
        self.rpm = readings_per_message
        self.steps = -(-readings_per_message // nq)
        # reading j: quantity j % nq at time step j // nq (µs apart, so keys stay unique)
        self.offsets = [j // nq for j in range(readings_per_message)]
        mix = [MIX[j % nq] for j in range(readings_per_message)]
        dumps = lambda obj: json.dumps(obj, separators=(",", ":"), allow_nan=True)  # noqa: E731
        head = {
            "schema": UPLINK_SCHEMA,
            "city": city,
            "site": site,
            "device": device,
            "driver": DRIVER,
            "agent": agent,
        }
        self.prefix = (dumps(head)[:-1] + ',"seq":').encode()
        self.mid = (',"readings":{"quantity":' + dumps([m[0] for m in mix]) + ',"value":').encode()
        self.unit = (',"unit":' + dumps([m[1] for m in mix]) + ',"observed_at":[').encode()
        self.suffix = ('],"flags":' + dumps([0] * readings_per_message) + "}}").encode()
        rng = random.Random(seed)
        level = [m[2] for m in MIX]
        self.values: list[list[float]] = []
        for _ in range(self.POOL):
            row = []
            for j in range(readings_per_message):
                q = j % nq
                _, _, typical, noise = MIX[q]
                level[q] = min(
                    max(level[q] + noise * (rng.random() - 0.5) * 0.2, typical - noise),
                    typical + noise,
                )
                row.append(round(level[q], 3))
            self.values.append(row)
        self.value_json = [dumps(v).encode() for v in self.values]
        self.topic = f"kota/v1/{city}/{site}/{device}/up".encode()
        self.last_us = 0
        self.n = 0

    def next_base(self, now_us: int) -> int:
        base = max(now_us, self.last_us + self.steps)
        self.last_us = base + self.steps - 1
        return base

    def payload(self, seq: int, now_us: int, base: int) -> bytes:
        pool = self.value_json[self.n % self.POOL]
        self.n += 1
        times = ",".join([str(base + o) for o in self.offsets])
        return b"".join(
            (
                self.prefix,
                str(seq).encode(),
                b',"sent_at":',
                str(now_us).encode(),
                self.mid,
                pool,
                self.unit,
                times.encode(),
                self.suffix,
            )
        )

    def samples(self, n: int, base: int) -> list[Any]:
        """What `payload` encodes, as Samples (for the byte-for-byte test)."""
        from gateway.schema.uplink import Sample

        values = self.values[n % self.POOL]
        nq = len(MIX)
        return [
            Sample(MIX[j % nq][0], values[j], MIX[j % nq][1], base + self.offsets[j])
            for j in range(self.rpm)
        ]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


class RawPublisher:
    """Minimal MQTT v5 QoS 1 publisher on a plain socket (the load generator's client).

    paho costs ~100 µs per QoS 1 message here (a thread hand-off, select() and three recv()
    calls per PUBACK); this writes many PUBLISH packets per send() and parses PUBACKs from
    one recv() buffer. It honours the broker's Receive Maximum and keeps the connection alive.
    Reconnection is deliberately absent: a broken connection fails the run loudly.
    """

    def __init__(self, host: str, port: int, client_id: str, keepalive: int = 60) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = (
            _mqtt_str("MQTT")
            + bytes([5, 0x02])
            + keepalive.to_bytes(2, "big")
            + b"\x00"
            + _mqtt_str(client_id)
        )
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        self.keepalive = keepalive
        self._buf = bytearray()
        self.receive_maximum = 65535
        self.acked = 0
        self.sent = 0
        self._next_id = 0
        self._last_send = time.monotonic()
        deadline = time.monotonic() + 10
        while True:
            packet = self._packet()
            if packet is not None:
                kind, data = packet
                break
            if time.monotonic() > deadline:
                raise KotaError("no CONNACK from the broker")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise KotaError("broker closed the connection during CONNECT")
            self._buf += chunk
        if kind != 0x20 or len(data) < 2 or data[1] != 0:
            raise KotaError(f"broker refused the load generator: {bytes(data[:2]).hex()}")
        self._connack_properties(data[2:])
        self.sock.settimeout(None)

    def _connack_properties(self, data: bytearray) -> None:
        length, shift, i = 0, 0, 0
        while True:
            b = data[i]
            length |= (b & 0x7F) << shift
            i += 1
            shift += 7
            if not b & 0x80:
                break
        props = data[i : i + length]
        j = 0
        widths = {
            0x11: 4,
            0x21: 2,
            0x22: 2,
            0x24: 1,
            0x25: 1,
            0x27: 4,
            0x28: 1,
            0x29: 1,
            0x2A: 1,
            0x13: 2,
        }
        while j < len(props):
            pid = props[j]
            j += 1
            if pid == 0x21:
                self.receive_maximum = int.from_bytes(props[j : j + 2], "big")
            if pid in widths:
                j += widths[pid]
            elif pid == 0x26:  # user property: two strings
                for _ in range(2):
                    j += 2 + int.from_bytes(props[j : j + 2], "big")
            else:  # strings / binary data
                j += 2 + int.from_bytes(props[j : j + 2], "big")

    def _packet(self) -> tuple[int, bytearray] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            length |= (b & 0x7F) << shift
            i += 1
            shift += 7
            if not b & 0x80:
                break
        if len(buf) < i + length:
            return None
        kind, data = buf[0] & 0xF0, buf[i : i + length]
        del buf[: i + length]
        return kind, data

    def poll(self, timeout: float = 0.0) -> None:
        """Read whatever the broker sent (PUBACKs), waiting up to `timeout` for something."""
        import select

        if timeout > 0:
            select.select([self.sock], [], [], timeout)
        while True:
            try:
                chunk = self.sock.recv(262144, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                raise KotaError("the broker closed the load generator's connection")
            self._buf += chunk
            if len(chunk) < 262144:
                break
        while (packet := self._packet()) is not None:
            kind, data = packet
            if kind == 0x40:
                if len(data) > 2 and data[2] >= 0x80:
                    raise KotaError(f"broker rejected a publish: reason 0x{data[2]:02x}")
                self.acked += 1
            elif kind == 0xE0:
                raise KotaError(f"broker disconnected the load generator: {bytes(data).hex()}")
        if time.monotonic() - self._last_send > self.keepalive / 3:
            self.sock.sendall(b"\xc0\x00")
            self._last_send = time.monotonic()

    @property
    def room(self) -> int:
        return min(self.receive_maximum, 65000) - (self.sent - self.acked)

    def publish_many(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """QoS 1 PUBLISH of (topic, payload) pairs in one send()."""
        out = []
        for topic, payload in messages:
            self._next_id = self._next_id % 65535 + 1
            var = _mqtt_str(topic) + self._next_id.to_bytes(2, "big") + b"\x00"
            out.append(b"\x32" + _varint(len(var) + len(payload)) + var)
            out.append(payload)
        self.sock.sendall(b"".join(out))
        self.sent += len(messages)
        self._last_send = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()


def _loadgen_main(cfg: dict[str, Any], ctl: dict[str, Any]) -> None:
    """The load generator process: publishes uplinks under the orchestrator's control.

    ctl: RawValues `allowed` (messages it may have sent in total), `rate` (messages/s, 0 =
    as fast as allowed), `stop`, and what it reports: `sent`, `acked`, `ready`.
    """
    try:
        pub = RawPublisher(cfg["host"], cfg["port"], cfg["client_id"])
    except (OSError, KotaError):
        ctl["ready"].value = -1
        raise
    ctl["ready"].value = 1
    templates = [
        UplinkTemplate(c, s, d, cfg["client_id"], cfg["readings_per_message"], seed=i)
        for i, (c, s, d) in enumerate(cfg["devices"])
    ]
    di = 0
    rate_seen, rate_t0, rate_sent0 = -1.0, 0.0, 0
    allowed, rate_v, stop = ctl["allowed"], ctl["rate"], ctl["stop"]
    while not stop.value:
        sent = pub.sent
        budget = min(allowed.value - sent, pub.room, 100)
        rate = rate_v.value
        if rate != rate_seen:
            rate_seen, rate_t0, rate_sent0 = rate, time.monotonic(), sent
        if rate > 0:
            budget = min(budget, rate_sent0 + int(rate * (time.monotonic() - rate_t0)) - sent)
        if budget <= 0:
            pub.poll(0.002)
            ctl["acked"].value = pub.acked
            continue
        batch: list[tuple[bytes, bytes]] = []
        now_us = time.time_ns() // 1000
        for _ in range(budget):
            t = templates[di]
            batch.append((t.topic, t.payload(sent + len(batch), now_us, t.next_base(now_us))))
            di = (di + 1) % len(templates)
        pub.publish_many(batch)
        pub.poll()
        ctl["sent"].value = pub.sent
        ctl["acked"].value = pub.acked
    deadline = time.monotonic() + 60
    while pub.acked < pub.sent and time.monotonic() < deadline:
        pub.poll(0.01)
    ctl["sent"].value = pub.sent
    ctl["acked"].value = pub.acked
    pub.close()


class LoadGen:
    """One load generator process (spawned, so it shares nothing with this one)."""

    def __init__(
        self,
        index: int,
        host: str,
        port: int,
        devices: Sequence[BenchDevice],
        readings_per_message: int,
        run_id: str,
    ) -> None:
        ctx = mp.get_context("spawn")
        self.ctl = {
            "allowed": ctx.RawValue("q", 0),
            "rate": ctx.RawValue("d", 0.0),
            "stop": ctx.RawValue("b", 0),
            "sent": ctx.RawValue("q", 0),
            "acked": ctx.RawValue("q", 0),
            "ready": ctx.RawValue("b", 0),
        }
        cfg = {
            "client_id": f"bench-gen-{run_id}-{index}",
            "host": host,
            "port": port,
            "readings_per_message": readings_per_message,
            "devices": [(d.city, d.site, d.device) for d in devices],
        }
        self.proc = ctx.Process(
            target=_loadgen_main,
            args=(cfg, self.ctl),
            daemon=True,
            name=f"kota-bench-loadgen-{index}",
        )
        self.proc.start()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ctl["ready"].value == 0 and time.monotonic() < deadline:
            if not self.proc.is_alive():
                break
            time.sleep(0.02)
        if self.ctl["ready"].value != 1:
            raise KotaError("load generator could not connect to the broker")

    @property
    def pid(self) -> int:
        return int(self.proc.pid or 0)

    @property
    def sent(self) -> int:
        return int(self.ctl["sent"].value)

    @property
    def acked(self) -> int:
        return int(self.ctl["acked"].value)

    def stop(self, timeout: float = 90.0) -> None:
        self.ctl["stop"].value = 1
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --------------------------------------------------------------------------- gateway workers


def _kota_command() -> list[str]:
    script = Path(sys.executable).parent / "kota"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kota_cli.main"]


class Worker:
    """One `kota gateway run` process; its JSON stats lines are parsed as they come."""

    def __init__(
        self,
        index: int,
        stack: Stack,
        group: str,
        run_id: str,
        log_dir: Path,
        batch_max: int,
        batch_max_age_s: float,
    ) -> None:
        self.client_id = f"bench-gw-{run_id}-{index}"
        env = {
            **os.environ,
            "KOTA_DATABASE_URL": str(stack.database_url),
            "KOTA_MQTT_URL": str(stack.mqtt_url),
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            *_kota_command(),
            "gateway",
            "run",
            "--group",
            group,
            "--client-id",
            self.client_id,
            "--stats-every",
            "0.2",
            "--batch-max",
            str(batch_max),
            "--batch-max-age",
            str(batch_max_age_s),
        ]
        self.log_path = log_dir / f"worker-{index}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1
        )
        self.latest: dict[str, Any] = {}
        self.started = threading.Event()
        self.stopped = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and "event" in obj:
                    self.latest = obj
                    if obj["event"] == "gateway_started":
                        self.started.set()
                    elif obj["event"] == "gateway_stopped":
                        self.stopped.set()
        self.stopped.set()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def counter(self, name: str) -> int:
        return int(self.latest.get(name, 0) or 0)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-1500:]
        return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        self._log.close()


# --------------------------------------------------------------------------- processes


def _cluster_pids(postmaster: int | None) -> list[int]:
    import psutil

    if not postmaster:
        return []
    with contextlib.suppress(psutil.Error):
        p = psutil.Process(postmaster)
        return [postmaster, *(c.pid for c in p.children(recursive=True))]
    return []


def _cpu_of(pids: Sequence[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


@dataclass
class Components:
    """pids per component, re-resolved at every sample (postgres backends come and go)."""

    stack: Stack
    workers: list[Worker] = field(default_factory=list)
    loadgens: list[LoadGen] = field(default_factory=list)

    def pids(self) -> dict[str, list[int]]:
        broker = self.stack.broker_pid()
        return {
            "loadgen": [g.pid for g in self.loadgens],
            "gateway_workers": [w.pid for w in self.workers],
            "mosquitto": [broker] if broker else [],
            "postgres": _cluster_pids(self.stack.postmaster_pid()),
            "bench_orchestrator": [os.getpid()],
        }

    def cpu(self) -> dict[str, dict[int, float]]:
        return {name: _cpu_of(pids) for name, pids in self.pids().items()}


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds, iowait seconds) of the whole machine since boot (every process)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0), getattr(t, "iowait", 0.0)


def cpu_delta(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, now in after.items():
        if not now and not before.get(name):
            out[name] = None  # not on this machine (external server)
            continue
        old = before.get(name, {})
        out[name] = sum(t - old.get(pid, 0.0) for pid, t in now.items())
    return out


def memory_sample(comp: Components) -> dict[str, Any]:
    """RSS (MiB) of every process; postgres also as PSS (shared buffers counted once)."""
    import psutil

    def rss(pid: int) -> float | None:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(pid).memory_info().rss / 2**20
        return None

    pids = comp.pids()
    out: dict[str, Any] = {}
    for i, w in enumerate(comp.workers):
        out[f"worker_{i}"] = rss(w.pid)
    for i, g in enumerate(comp.loadgens):
        out[f"loadgen_{i}"] = rss(g.pid)
    out["mosquitto"] = rss(pids["mosquitto"][0]) if pids["mosquitto"] else None
    pg = [p for p in pids["postgres"]]
    if pg:
        total_rss = total_pss = 0.0
        for pid in pg:
            with contextlib.suppress(psutil.Error):
                info = psutil.Process(pid).memory_full_info()
                total_rss += info.rss / 2**20
                total_pss += getattr(info, "pss", info.rss) / 2**20
        out["postgres_rss_sum"] = total_rss
        out["postgres_pss"] = total_pss
        out["postgres_processes"] = len(pg)
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in out.items()}


# --------------------------------------------------------------------------- the run


class Pipeline:
    """Workers + load generators on a Stack, with the closed-loop controller."""

    def __init__(
        self,
        stack: Stack,
        devices: Sequence[BenchDevice],
        *,
        workers: int,
        readings_per_message: int,
        generators: int = 1,
        batch_max: int = 1000,
        batch_max_age_s: float = 0.2,
        window_messages: int | None = None,
    ) -> None:
        self.stack = stack
        self.devices = list(devices)
        self.rpm = readings_per_message
        self.run_id = uuid.uuid4().hex[:8]
        self.group = f"kota-bench-{self.run_id}"
        # worker logs (stderr) and py-spy output: inside the private server's directory
        # (removed with it), else a temp directory of their own
        if stack._pg is not None:
            self.log_dir = Path(stack._pg.base_dir) / f"bench-logs-{self.run_id}"
            self.log_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.log_dir = Path(tempfile.mkdtemp(prefix=f"kota-bench-logs-{self.run_id}-"))
        self.n_workers = workers
        self.n_generators = max(1, min(generators, len(self.devices)))
        self.batch_max = batch_max
        self.batch_max_age_s = batch_max_age_s
        # Every worker may hold BROKER_INFLIGHT unacknowledged messages (mosquitto's
        # max_inflight_messages); as much again waits in the broker so a worker never idles
        # after an ack. Bounded, so the broker queue cannot run away.
        self.window = window_messages or max(200, 2 * max(batch_max, BROKER_INFLIGHT) * workers)
        self.comp = Components(stack)
        self._control_stop = threading.Event()
        self._control: threading.Thread | None = None
        self.backlog_samples: list[tuple[float, int]] = []
        self._rate_total = 0.0

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        for i in range(self.n_workers):
            self.comp.workers.append(
                Worker(
                    i,
                    self.stack,
                    self.group,
                    self.run_id,
                    self.log_dir,
                    self.batch_max,
                    self.batch_max_age_s,
                )
            )
        deadline = time.monotonic() + 60
        for w in self.comp.workers:
            while not w.started.wait(0.1):
                if not w.alive() or time.monotonic() > deadline:
                    raise KotaError(f"gateway worker did not start: {w.log_tail()}")
        host, port = self.stack.mqtt_host_port
        share = [self.devices[i :: self.n_generators] for i in range(self.n_generators)]
        for i, devs in enumerate(share):
            self.comp.loadgens.append(LoadGen(i, host, port, devs, self.rpm, self.run_id))
        for g in self.comp.loadgens:
            g.wait_ready()
        self._control = threading.Thread(target=self._control_loop, daemon=True)
        self._control.start()

    def committed_messages(self) -> int:
        return sum(w.counter("messages") for w in self.comp.workers)

    def handled_readings(self) -> int:
        return sum(w.counter("readings") for w in self.comp.workers)

    def sent(self) -> int:
        return sum(g.sent for g in self.comp.loadgens)

    def _control_loop(self) -> None:
        n = len(self.comp.loadgens)
        while not self._control_stop.is_set():
            committed = self.committed_messages()
            allowed = committed + self.window
            for i, g in enumerate(self.comp.loadgens):
                g.ctl["allowed"].value = allowed // n + (1 if i < allowed % n else 0)
            self.backlog_samples.append((time.monotonic(), self.sent() - committed))
            for w in self.comp.workers:
                if not w.alive():
                    self.error = KotaError(f"gateway worker exited: {w.log_tail()}")
            self._control_stop.wait(0.05)

    error: KotaError | None = None

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def set_rate(self, messages_per_s: float) -> None:
        """0 = as fast as the closed loop allows."""
        self._rate_total = messages_per_s
        n = len(self.comp.loadgens)
        for g in self.comp.loadgens:
            g.ctl["rate"].value = messages_per_s / n

    def wait_committed(self, messages: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if self.committed_messages() >= messages:
                return True
            time.sleep(0.05)
        return False

    def stop_generators(self) -> int:
        for g in self.comp.loadgens:
            g.ctl["stop"].value = 1
        for g in self.comp.loadgens:
            g.stop()
        self._control_stop.set()
        if self._control is not None:
            self._control.join(5)
        unacked = sum(g.sent - g.acked for g in self.comp.loadgens)
        if unacked:
            raise KotaError(f"the broker did not acknowledge {unacked} published messages")
        return self.sent()

    def stop_workers(self) -> None:
        for w in self.comp.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.comp.workers:
            w.stop()

    def close(self) -> None:
        self._control_stop.set()
        for g in self.comp.loadgens:
            if g.proc.is_alive():
                g.stop(10)
        self.stop_workers()
        cleanup_external(
            self.stack, [c for w in self.comp.workers for c in (w.client_id, f"{w.client_id}-hb")]
        )


def _count(url: str, sql: str = "SELECT count(*) FROM readings", params: Sequence[Any] = ()) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _latency(url: str, t_from: float, t_to: float) -> dict[str, Any] | None:
    """publish -> commit of every reading observed in [t_from, t_to) (epoch s), exact."""
    import psycopg

    sql = """
    SELECT count(*),
           percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY lat),
           max(lat)
      FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - observed_at)::float8 AS lat
              FROM readings
             WHERE observed_at >= to_timestamp(%s) AND observed_at < to_timestamp(%s)) s
    """
    with psycopg.connect(url) as conn:
        row = conn.execute(sql, [t_from, t_to]).fetchone()
    if not row or not row[0] or row[1] is None:
        return None
    p50, p90, p99 = row[1]
    return {
        "n": int(row[0]),
        "p50_s": round(p50, 4),
        "p90_s": round(p90, 4),
        "p99_s": round(p99, 4),
        "max_s": round(float(row[2]), 4),
    }


def _committed_between(url: str, t_from: float, t_to: float) -> int:
    return _count(
        url,
        "SELECT count(*) FROM readings WHERE pg_xact_commit_timestamp(xmin) "
        ">= to_timestamp(%s) AND pg_xact_commit_timestamp(xmin) < to_timestamp(%s)",
        [t_from, t_to],
    )


def _thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds per OS thread of `pid` (from /proc), with the kernel's thread name."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
                out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _py_spy(pid: int, seconds: float, out_dir: Path) -> dict[str, Any]:
    """py-spy record of one worker (on-CPU samples, collapsed stacks) plus exact CPU seconds
    per thread from /proc over the same interval."""
    import re

    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return {"error": "py-spy not installed (pip install py-spy)"}
    raw = out_dir / f"worker-{pid}.txt"
    before, started = _thread_cpu(pid), time.monotonic()
    subprocess.run(
        [
            exe,
            "record",
            "-d",
            str(max(1, int(seconds))),
            "-r",
            "100",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--pid",
            str(pid),
            "--threads",
        ],
        capture_output=True,
        check=False,
    )
    after, wall = _thread_cpu(pid), time.monotonic() - started
    if not raw.exists():
        return {"error": "py-spy produced nothing"}
    text = raw.read_text(errors="replace")
    names = {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r"^thread \((\d+)\)(?:: ([^;]+))?;", text, re.M)
        if m.group(2)
    }
    per_thread: dict[str, float] = {}
    for tid, (comm, cpu) in after.items():
        label = names.get(tid, comm)
        label = re.sub(r"bench-gw-[0-9a-f]+-", "", label)
        per_thread[label] = per_thread.get(label, 0.0) + cpu - before.get(tid, (comm, 0.0))[1]
    summary = summarize_collapsed(text)
    summary["thread_cpu_cores"] = {
        k: round(v / wall, 3) for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1]) if v > 0
    }
    summary["raw"] = str(raw)
    return summary


def summarize_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Self time and inclusive time per function from py-spy's collapsed stacks."""
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0][:60]] += count
        self_t[frames[-1]] += count
        for f in set(frames[1:]):
            incl[f] += count
    if not total:
        return {"samples": 0}
    pct = lambda c: round(100.0 * c / total, 1)  # noqa: E731
    return {
        "samples": total,
        "threads_pct": {k: pct(v) for k, v in threads.most_common(8)},
        "self_pct": {k: pct(v) for k, v in self_t.most_common(top)},
        "inclusive_pct": {k: pct(v) for k, v in incl.most_common(top)},
    }


def run_pipeline_bench(
    workers: int = 2,
    seconds: float = 20,
    warmup: float = 5,
    devices: int = 200,
    readings_per_message: int = 50,
    database_url: str | None = None,
    mqtt_url: str | None = None,
    *,
    copy_rows: int | None = None,
    latency_seconds: float | None = None,
    generators: int = 1,
    batch_max: int = 1000,
    batch_max_age_s: float = 0.2,
    window_messages: int | None = None,
    profile_seconds: float = 0.0,
) -> dict[str, Any]:
    """Storage limit, then the full pipeline at its maximum and at 50 %; see the module doc."""
    if workers < 1 or devices < 1 or readings_per_message < 1 or seconds <= 0:
        raise KotaError("workers, devices, readings-per-message and seconds must be positive")
    copy_rows = copy_rows or (600_000 if seconds >= 10 else 100_000)
    latency_seconds = latency_seconds or min(10.0, max(2.0, seconds / 2))
    devs = bench_devices(devices)
    result: dict[str, Any] = {}
    with Stack(database_url, mqtt_url) as stack:
        url = str(stack.database_url)
        register_devices(url, devs)
        result.update(measure_copy_limit(url, devs, copy_rows))
        reset_readings(url)

        pipe = Pipeline(
            stack,
            devs,
            workers=workers,
            readings_per_message=readings_per_message,
            generators=generators,
            batch_max=batch_max,
            batch_max_age_s=batch_max_age_s,
            window_messages=window_messages,
        )
        try:
            pipe.start()
            # readiness: the generator runs closed-loop (rate 0 = as fast as the window
            # allows); wait for a first commit end to end before the warm-up clock starts
            pipe.set_rate(0)
            if not pipe.wait_committed(1, 60):
                raise KotaError(
                    "no reading reached the database within 60 s: "
                    + pipe.comp.workers[0].log_tail()
                )
            # ---- maximum sustainable rate
            time.sleep(warmup)
            pipe.check()
            t0 = time.time()
            cpu0 = pipe.comp.cpu()
            busy0 = machine_busy()
            # Without commit timestamps count(*) now and at t1 (it costs a scan under load).
            rows0 = None if stack.commit_ts else _count(url)
            sent0 = pipe.sent()
            w0 = [dict(w.latest) for w in pipe.comp.workers]
            backlog_from = len(pipe.backlog_samples)
            profile: dict[str, Any] | None = None
            if profile_seconds > 0:
                profile = _py_spy(
                    pipe.comp.workers[0].pid, min(profile_seconds, seconds), pipe.log_dir
                )
            remaining = seconds - (time.time() - t0)
            if remaining > 0:
                time.sleep(remaining)
            t1 = time.time()
            cpu1 = pipe.comp.cpu()
            busy1 = machine_busy()
            rows1 = None if stack.commit_ts else _count(url)
            sent1 = pipe.sent()
            w1 = [dict(w.latest) for w in pipe.comp.workers]
            pipe.check()
            window_s = t1 - t0
            in_window = []
            for a, b in zip(w0, w1, strict=True):
                d = {
                    k: int(b.get(k, 0) or 0) - int(a.get(k, 0) or 0)
                    for k in ("messages", "readings", "batches", "busy_us")
                }
                in_window.append(
                    {
                        "busy_fraction": round(d["busy_us"] / 1e6 / window_s, 3),
                        "batches_per_s": round(d["batches"] / window_s, 2),
                        "messages_per_batch": round(d["messages"] / d["batches"])
                        if d["batches"]
                        else None,
                        "ms_per_batch": round(d["busy_us"] / 1e3 / d["batches"], 1)
                        if d["batches"]
                        else None,
                    }
                )
            backlog = [b for _, b in pipe.backlog_samples[backlog_from:]]
            cpu = cpu_delta(cpu0, cpu1)

            # ---- latency at ~50 %: the rate of the max phase comes from the worker counters
            # here (the exact row count is taken after the run)
            half = 0.5 * (sent1 - sent0) / window_s
            pipe.set_rate(half)
            settle_deadline = time.monotonic() + 30
            while time.monotonic() < settle_deadline:  # let the max-rate backlog drain
                if pipe.sent() - pipe.committed_messages() <= max(2.0, half * 0.3):
                    break
                time.sleep(0.05)
            time.sleep(min(2.0, latency_seconds / 4))
            tl0 = time.time()
            sent_l0 = pipe.sent()
            time.sleep(latency_seconds)
            tl1 = time.time()
            sent_l1 = pipe.sent()

            # ---- stop, drain, account
            published_messages = pipe.stop_generators()
            drained = pipe.wait_committed(
                published_messages, 60 + published_messages / max(half, 1)
            )
            pipe.stop_workers()
            handled = pipe.handled_readings()
            worker_stats = [
                {k: w.latest.get(k) for k in ("messages", "readings", "batches", "busy_us")}
                for w in pipe.comp.workers
            ]
            rows = _count(url)
            distinct = _count(
                url,
                "SELECT count(*) FROM (SELECT DISTINCT device, quantity, "
                "observed_at FROM readings) k",
            )
            dead = _count(url, "SELECT count(*) FROM dead_letters")
            if stack.commit_ts:
                committed = _committed_between(url, t0, t1)
                committed_half = _committed_between(url, tl0, tl1)
                lat_half = _latency(url, tl0, tl1)
                lat_max = _latency(url, t0, t1)
            else:
                committed = int(rows1 or 0) - int(rows0 or 0)
                committed_half = None
                lat_half = lat_max = None
        finally:
            pipe.close()

    readings_per_s = committed / window_s
    msgs_per_s = readings_per_s / readings_per_message
    published = published_messages * readings_per_message
    per100k = {
        k: (round(v / (committed / 1e5), 3) if v is not None and committed else None)
        for k, v in cpu.items()
    }
    gen_util = (cpu.get("loadgen") or 0.0) / window_s
    ncpu = os.cpu_count() or 1
    result.update(
        {
            "readings_per_s": round(readings_per_s),
            "ratio": round(readings_per_s / result["copy_limit_rows_per_s"], 3),
            "p50_latency_s": lat_half["p50_s"] if lat_half else None,
            "p99_latency_s": lat_half["p99_s"] if lat_half else None,
            "lost": published - rows,
            "duplicates": handled - rows,
            "duplicates_in_table": rows - distinct,
            "dead_letters": dead,
            "cpu_s_per_100k": per100k,
            "workers": workers,
            "seconds": round(window_s, 2),
            "warmup": warmup,
            "devices": devices,
            "readings_per_message": readings_per_message,
            "messages_per_s": round(msgs_per_s),
            "counting": (
                "rows whose commit timestamp falls in the window"
                if stack.commit_ts
                else "count(*) at the start and end of the window"
            ),
            "published_readings": published,
            "rows": rows,
            "drained": drained,
            "published_readings_per_s_in_window": round(
                (sent1 - sent0) * readings_per_message / window_s
            ),
            "latency_at_half": {
                "target_messages_per_s": round(half, 1),
                "published_readings_per_s": round(
                    (sent_l1 - sent_l0) * readings_per_message / (tl1 - tl0)
                ),
                "committed_readings_per_s": (
                    round(committed_half / (tl1 - tl0)) if committed_half is not None else None
                ),
                "seconds": round(tl1 - tl0, 2),
                **(lat_half or {}),
            },
            "latency_at_max": lat_max,
            "latency_method": (
                "exact per reading: pg_xact_commit_timestamp(xmin) - observed_at, observed_at = "
                "publish time (same clock); p50/p99 over every reading published in the 50 % phase"
                if stack.commit_ts
                else "unavailable (track_commit_timestamp off)"
            ),
            "backlog_messages": {
                "window": pipe.window,
                "mean": round(sum(backlog) / len(backlog)) if backlog else None,
                "min": min(backlog) if backlog else None,
                "max": max(backlog) if backlog else None,
            },
            "loadgen_cpu_util": round(gen_util, 3),
            "bottleneck": (
                "load generator"
                if backlog and sum(backlog) / len(backlog) < 0.25 * pipe.window
                else "pipeline (generator kept the window full)"
            ),
            "cpu_s": {k: (round(v, 2) if v is not None else None) for k, v in cpu.items()},
            "cpu_util_of_machine": round(sum(v for v in cpu.values() if v) / window_s / ncpu, 3),
            # Everything else running on the machine in the window (other benchmarks, tests):
            # if this is not ~0 the figures are shared with someone else's work.
            "other_processes_cpu_util": round(
                max(0.0, (busy1[0] - busy0[0]) - sum(v for v in cpu.values() if v))
                / window_s
                / ncpu,
                3,
            ),
            "iowait_util": round((busy1[1] - busy0[1]) / window_s / ncpu, 3),
            "durability": "fsync=on, synchronous_commit=on"
            if stack.private_db
            else "as configured",
            "servers": {
                "database": "private" if stack.private_db else "KOTA_DATABASE_URL",
                "broker": "private" if stack.private_broker else "KOTA_MQTT_URL",
            },
            "notes": stack.notes,
        }
    )
    result["handled_readings"] = handled
    result["worker_stats"] = worker_stats
    result["workers_in_window"] = in_window
    if profile is not None:
        result["profile_worker_0"] = profile
    return result


# --------------------------------------------------------------------------- soak


def run_soak(
    minutes: float = 10,
    workers: int = 2,
    *,
    rate_readings_per_s: float | None = None,
    devices: int = 200,
    readings_per_message: int = 50,
    sample_s: float = 10.0,
    probe_seconds: float = 8.0,
    database_url: str | None = None,
    mqtt_url: str | None = None,
) -> dict[str, Any]:
    """The pipeline at half its sustained maximum for `minutes`; memory of every process."""
    devs = bench_devices(devices)
    series: list[dict[str, Any]] = []
    with Stack(database_url, mqtt_url) as stack:
        url = str(stack.database_url)
        register_devices(url, devs)
        pipe = Pipeline(stack, devs, workers=workers, readings_per_message=readings_per_message)
        try:
            pipe.start()
            if not pipe.wait_committed(1, 60):
                raise KotaError("no reading reached the database within 60 s")
            if rate_readings_per_s is None:
                time.sleep(2)
                r0, t0 = _count(url), time.time()
                time.sleep(probe_seconds)
                max_rps = (_count(url) - r0) / (time.time() - t0)
                rate_readings_per_s = 0.5 * max_rps
            else:
                max_rps = None
            pipe.set_rate(rate_readings_per_s / readings_per_message)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and pipe.sent() - pipe.committed_messages() > 50:
                time.sleep(0.1)
            start = time.time()
            end = start + minutes * 60
            # the rate per sample from the workers' counters: a count(*) every 10 s over a
            # table of tens of millions of rows would itself be a load
            rows_prev, t_prev = pipe.handled_readings(), start
            while True:
                pipe.check()
                now = time.time()
                rows_now = pipe.handled_readings()
                sample = {
                    "t_s": round(now - start, 1),
                    **memory_sample(pipe.comp),
                    "readings_per_s": round((rows_now - rows_prev) / max(now - t_prev, 1e-6)),
                    "backlog_messages": pipe.sent() - pipe.committed_messages(),
                }
                series.append(sample)
                rows_prev, t_prev = rows_now, now
                if now >= end:
                    break
                time.sleep(max(0.0, min(sample_s, end - time.time())))
            soak_end = time.time()
            published_messages = pipe.stop_generators()
            drained = pipe.wait_committed(published_messages, 120)
            pipe.stop_workers()
            handled = pipe.handled_readings()
            rows = _count(url)
            lat = _latency(url, start, soak_end) if stack.commit_ts else None
        finally:
            pipe.close()
    published = published_messages * readings_per_message
    keys = [
        k
        for k in series[0]
        if k not in ("t_s", "readings_per_s", "backlog_messages", "postgres_processes")
    ]
    growth: dict[str, Any] = {}
    span = series[-1]["t_s"]
    first = [s for s in series if s["t_s"] <= min(60.0, span / 2)]
    last = [s for s in series if s["t_s"] >= max(span - 60.0, span / 2)]
    for k in keys:
        a = [s[k] for s in first if s.get(k) is not None]
        b = [s[k] for s in last if s.get(k) is not None]
        if a and b:
            ma, mb = sum(a) / len(a), sum(b) / len(b)
            growth[k] = {
                "first_mib": round(ma, 1),
                "last_mib": round(mb, 1),
                "growth_mib": round(mb - ma, 1),
                "growth_pct": round(100 * (mb - ma) / ma, 1) if ma else None,
            }
    return {
        "minutes": minutes,
        "workers": workers,
        "devices": devices,
        "readings_per_message": readings_per_message,
        "max_readings_per_s_probe": round(max_rps) if max_rps is not None else None,
        "target_readings_per_s": round(rate_readings_per_s),
        "achieved_readings_per_s": round(
            sum(s["readings_per_s"] for s in series[1:]) / max(1, len(series) - 1)
        ),
        "sample_every_s": sample_s,
        "memory_growth_first_vs_last_minute": growth,
        "series": series,
        "latency": lat,
        "published_readings": published,
        "rows": rows,
        "lost": published - rows,
        "duplicates": handled - rows,
        "drained": drained,
        "note": "RSS in MiB; postgres_pss counts shared buffers once (postgres_rss_sum counts them "
        "per process); the first minute includes shared_buffers warming up.",
    }


# --------------------------------------------------------------------------- python -m


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from kota_cli.bench import machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--readings-per-message", type=int, default=50)
    p.add_argument("--copy-rows", type=int, default=None)
    p.add_argument("--generators", type=int, default=1)
    p.add_argument("--batch-max", type=int, default=1000)
    p.add_argument("--batch-max-age", type=float, default=0.2)
    p.add_argument("--window", type=int, default=None, help="closed-loop window, messages")
    p.add_argument("--profile", type=float, default=0.0, help="py-spy worker 0 for N s")
    s = sub.add_parser("soak")
    s.add_argument("--minutes", type=float, default=10)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--rate", type=float, default=None, help="readings/s (default: half the max)")
    s.add_argument("--devices", type=int, default=200)
    args = parser.parse_args(argv)
    if args.cmd == "pipeline":
        out = run_pipeline_bench(
            args.workers,
            args.seconds,
            args.warmup,
            args.devices,
            args.readings_per_message,
            copy_rows=args.copy_rows,
            generators=args.generators,
            batch_max=args.batch_max,
            batch_max_age_s=args.batch_max_age,
            window_messages=args.window,
            profile_seconds=args.profile,
        )
    else:
        out = run_soak(
            args.minutes, args.workers, rate_readings_per_s=args.rate, devices=args.devices
        )
    print(json.dumps({**out, "machine": machine()}, default=str))


if __name__ == "__main__":
    main()
