"""`kota bench edge`: the agent's footprint with N devices at R Hz against a real broker.

`run_edge_bench()` starts the agent as its own process (``python -m edge.agent``) with
`devices` synthetic drivers, lets it publish to Mosquitto (a private one from
`kota_cli.servers.MosquittoServer` unless `broker_url` is given), and reports its peak RSS
(VmHWM), its CPU use in steady state as % of one core, the readings the broker delivered
to a subscriber, and the outbox write cost per reading measured in-process.

The synthetic driver is also the documented load generator and test device:
``driver = "python:edge.bench:build_synthetic"`` in a [[devices]] table.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.schema import Sample
from kota_cli.errors import ConfigError, KotaError

DEFAULT_QUANTITIES = (
    ("pm2_5", "ug/m3"),
    ("pm10", "ug/m3"),
    ("temperature", "Cel"),
    ("relative_humidity", "%"),
)
_SYNTHETIC_KEYS = {
    "kind",
    "driver",
    "device_id",
    "enabled",
    "description",
    "name",
    "rate_hz",
    "quantities",
    "log_path",
    "limit",
}


class SyntheticDriver:
    """A device that produces one sample per quantity at a fixed rate; value = sequence number.

    With `log_path`, every hand-off the outbox accepted is appended as
    ``device observed_us n`` (tests compare it with what the broker delivered).
    """

    kind = "synthetic"

    def __init__(
        self,
        device_id: str,
        *,
        rate_hz: float = 1.0,
        quantities: Sequence[tuple[str, str]] = DEFAULT_QUANTITIES,
        clock: Any = time.time,
        log_path: Path | None = None,
        limit: int = 0,
    ) -> None:
        self.device_id = device_id
        self.rate_hz = rate_hz
        self.quantities = tuple(quantities)
        self.clock = clock
        self.log_path = log_path
        self.limit = limit
        self.produced = 0
        self.handed = 0
        self.failures = 0

    def run(self, sink: Any, stop: threading.Event) -> None:
        period = 1.0 / self.rate_hz
        log = open(self.log_path, "a", buffering=1) if self.log_path else None  # noqa: SIM115
        next_t = time.monotonic()
        try:
            while not stop.is_set() and (not self.limit or self.produced < self.limit):
                t_us = int(self.clock() * 1_000_000)
                n = self.produced
                samples = [Sample(q, float(n), unit, t_us) for q, unit in self.quantities]
                self.produced += 1
                try:
                    sink(self.device_id, samples)
                except Exception:  # a driver never raises for I/O errors
                    self.failures += 1
                else:
                    self.handed += 1
                    if log is not None:
                        log.write(f"{self.device_id} {t_us} {n}\n")
                next_t += period
                stop.wait(max(0.0, next_t - time.monotonic()))
            stop.wait()
        finally:
            if log is not None:
                log.close()

    def health(self) -> dict[str, object]:
        return {
            "state": "ok",
            "produced": self.produced,
            "handed": self.handed,
            "failures": self.failures,
        }


def build_synthetic(table: Mapping[str, Any], ctx: Any) -> SyntheticDriver:
    """Factory with the DriverSpec.build signature (see module docstring)."""
    unknown = sorted(set(table) - _SYNTHETIC_KEYS)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown option (known: {', '.join(sorted(_SYNTHETIC_KEYS))})"
        )
    device_id = table.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise ConfigError("device_id: is required")
    rate = table.get("rate_hz", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1000:
        raise ConfigError(f"rate_hz: must be a number in (0, 1000], got {rate!r}")
    quantities: tuple[tuple[str, str], ...] = DEFAULT_QUANTITIES
    if "quantities" in table:
        raw = table["quantities"]
        if (
            not isinstance(raw, list)
            or not all(isinstance(q, str) and ":" in q for q in raw)
            or not raw
        ):
            raise ConfigError('quantities: must be a list of "quantity:unit" strings')
        quantities = tuple((q.split(":", 1)[0], q.split(":", 1)[1]) for q in raw)
    limit = table.get("limit", 0)
    if type(limit) is not int or limit < 0:
        raise ConfigError(f"limit: must be an integer >= 0, got {limit!r}")
    log_path = table.get("log_path")
    return SyntheticDriver(
        device_id,
        rate_hz=float(rate),
        quantities=quantities,
        clock=getattr(ctx, "clock", time.time),
        log_path=Path(log_path) if log_path else None,
        limit=limit,
    )


# --------------------------------------------------------------------------- measurements


def _proc_status(pid: int, key: str) -> int:
    """A kB field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_outbox_cost(
    directory: Path,
    *,
    sync: str = "normal",
    samples_per_put: int = 4,
    puts: int = 2000,
) -> dict[str, float]:
    """µs per put and per reading for the real `Outbox.put` (one transaction per put)."""
    from edge.outbox import Outbox

    path = directory / f"cost-{sync}-{samples_per_put}.sqlite"
    with Outbox(path, sync=sync, exclusive=False) as outbox:
        t_us = int(time.time() * 1_000_000)
        batch = [
            Sample(q, 12.5, unit, t_us) for q, unit in (DEFAULT_QUANTITIES * 100)[:samples_per_put]
        ]
        for _ in range(50):  # warm-up
            outbox.put("bench-dev", "bench-site", "synthetic", batch)
        start = time.perf_counter()
        for i in range(puts):
            outbox.put(f"bench-dev-{i % 10}", "bench-site", "synthetic", batch)
        elapsed = time.perf_counter() - start
        size = outbox.stats().bytes
        readings = outbox.stats().readings
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(str(path) + suffix).unlink()
    return {
        "us_per_put": elapsed / puts * 1e6,
        "us_per_reading": elapsed / (puts * samples_per_put) * 1e6,
        "bytes_per_reading": size / readings,
    }


def _bench_config(directory: Path, broker_url: str, devices: int, rate_hz: float) -> Path:
    lines = [
        "[agent]",
        'id = "bench-agent"',
        'city = "THBKK"',
        'site = "bench-site"',
        f'state_dir = "{directory}"',
        "heartbeat_s = 10",
        "",
        "[uplink]",
        f'url = "{broker_url}"',
        "",
        "[metrics]",
        "enabled = false",
        "",
    ]
    for i in range(devices):
        lines += [
            "[[devices]]",
            'driver = "python:edge.bench:build_synthetic"',
            'kind = "synthetic"',
            f'device_id = "bench-dev-{i:02d}"',
            f"rate_hz = {rate_hz}",
            "",
        ]
    path = directory / "edge.toml"
    path.write_text("\n".join(lines))
    return path


def _count_readings(
    broker_url: str, ready: threading.Event, stop: threading.Event, counts: dict[str, int]
) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from gateway.schema import decode_uplink

    host, _, port = broker_url.split("://", 1)[1].partition(":")
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="kota-bench-edge-sub", protocol=mqtt.MQTTv5
    )

    def on_connect(c: Any, *_: Any) -> None:
        c.subscribe("kota/v1/+/+/+/up", qos=1)

    def on_subscribe(*_: Any) -> None:
        ready.set()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        batch = decode_uplink(msg.payload, msg.topic)
        counts["messages"] += 1
        counts["readings"] += len(batch)

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect(host, int(port or 1883))
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def run_edge_bench(
    devices: int = 10, rate_hz: float = 1.0, seconds: float = 60, broker_url: str | None = None
) -> dict[str, Any]:
    """Run the agent with `devices` synthetic devices at `rate_hz` for `seconds`; see module doc."""
    from kota_cli.servers import MosquittoServer, temp_dir

    if broker_url is not None and not broker_url.startswith("mqtt://"):
        raise KotaError(f"bench edge: broker url {broker_url!r} must be mqtt://host:port")
    work = Path(tempfile.mkdtemp(prefix="kota-bench-edge-"))
    broker = None
    if broker_url is None:
        broker = MosquittoServer(temp_dir("kota-bench-mq-"))
        broker.start()
        broker_url = broker.url
    counts = {"messages": 0, "readings": 0}
    sub_ready, sub_stop = threading.Event(), threading.Event()
    sub = threading.Thread(
        target=_count_readings, args=(broker_url, sub_ready, sub_stop, counts), daemon=True
    )
    sub.start()
    sub_ready.wait(10)
    config = _bench_config(work, broker_url, devices, rate_hz)
    # The agent imports the whole driver registry first, as it does for a real edge.toml.
    launcher = "import sys, edge.drivers; from edge.agent import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, "--config", str(config), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        warmup = min(5.0, seconds / 4)
        time.sleep(warmup)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise KotaError(f"bench edge: the agent exited: {err.strip()[-400:]}")
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        time.sleep(max(1.0, seconds - warmup))
        cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
        peak_rss = _proc_status(proc.pid, "VmHWM")
        rss = _proc_status(proc.pid, "VmRSS")
        startup_cpu = cpu0
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        sub_stop.set()
        sub.join(5)
        if broker is not None:
            broker.destroy()
    cost_normal = measure_outbox_cost(work, sync="normal")
    cost_full = measure_outbox_cost(work, sync="full", puts=300)
    produced_expected = int(devices * rate_hz * seconds) * len(DEFAULT_QUANTITIES)
    with contextlib.suppress(OSError):
        for path in sorted(work.iterdir(), reverse=True):
            path.unlink()
        work.rmdir()
    return {
        "devices": devices,
        "rate_hz": rate_hz,
        "seconds": seconds,
        "peak_rss_mb": round(peak_rss / 1e6, 1),
        "rss_mb": round(rss / 1e6, 1),
        "cpu_percent_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
        "startup_cpu_s": round(startup_cpu, 2),
        "outbox_us_per_reading": round(cost_normal["us_per_reading"], 1),
        "outbox_us_per_put": round(cost_normal["us_per_put"], 1),
        "outbox_full_sync_us_per_reading": round(cost_full["us_per_reading"], 1),
        "outbox_bytes_per_reading": round(cost_normal["bytes_per_reading"], 1),
        "messages_received": counts["messages"],
        "readings_received": counts["readings"],
        "readings_expected_approx": produced_expected,
        "budget": {"peak_rss_mb": 40, "cpu_percent_one_core": 2},
        "within_budget": peak_rss / 1e6 < 40 and 100 * (cpu1 - cpu0) / (t1 - t0) < 2,
    }
