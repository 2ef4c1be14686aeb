"""Ingest micro-benchmarks behind the figures in docs/ingest.md.

    python -m ingest.bench copy [--rows 200000] [--batch 5000]
        COPY method comparison (write_row vs prebuilt binary buffer vs Arrow CSV), staging
        COPY only and the full `ReadingWriter.write`, plus the COPY-straight-into-readings
        alternative, on a private PostgreSQL.
    python -m ingest.bench mqtt [--messages 50000]
        The QoS 1 consumption hazard: mosquitto_sub vs plain paho vs a naive batch-acking
        paho consumer vs `MqttBatchConsumer`, on private Mosquitto brokers (stock config and
        the production one in ingest/mosquitto.conf).

Needs the server binaries (kota_cli.servers); never touches services already running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np
import polars as pl
import psycopg

from ingest.writer import STAGE, ReadingWriter, _stage_frame, copy_readings


def synthetic_readings(
    n: int, *, start: datetime | None = None, devices: int = 500
) -> pl.DataFrame:
    """`n` plausible readings (READING_COLUMNS), unique keys, one per device per 10 s."""
    start = start or datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    idx = np.arange(n)
    rng = np.random.default_rng(42)
    quantities = np.array(["pm25", "pm10", "temperature", "relative_humidity"])
    start_us = int(start.timestamp() * 1_000_000)
    observed = start_us + (idx // (devices * len(quantities))) * 10_000_000
    value = rng.normal(25, 8, n).round(2)
    return pl.DataFrame(
        {
            "city": np.where(idx % 2 == 0, "THBKK", "VNHAN"),
            "site": np.char.add("site-", (idx % devices // 10).astype(str)),
            "device": np.char.add("dev-", (idx % devices).astype(str)),
            "quantity": quantities[(idx // devices) % len(quantities)],
            "value": value,
            "unit": "ug/m3",
            "raw_value": value,
            "observed_at": pl.Series(observed).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "received_at": pl.Series(observed + 2_000_000)
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC"),
            "flags": pl.Series((idx % 3 == 0).astype(np.int16) * 16, dtype=pl.Int16),
            "source": "sds011",
        }
    )


def _write_all(writer: ReadingWriter, batches: list[pl.DataFrame]) -> None:
    for part in batches:
        writer.write(part, [])


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ------------------------------------------------------------------------------- COPY
def bench_copy(url: str, rows: int, batch: int) -> dict[str, dict[str, float]]:
    frame = _stage_frame(synthetic_readings(rows))
    batches = [frame.slice(i, batch) for i in range(0, rows, batch)]
    results: dict[str, dict[str, float]] = {}
    with psycopg.connect(url) as conn:
        conn.execute(
            f"CREATE TEMP TABLE {STAGE} (device text, quantity text, observed_at timestamptz, "
            "city text, site text, value float8, raw_value float8, received_at timestamptz, "
            "flags int2, source text) ON COMMIT DELETE ROWS"
        )
        conn.commit()
        for method in ("rows", "csv", "binary"):

            def run(method: str = method) -> None:
                for part in batches:
                    with conn.transaction(), conn.cursor() as cur:
                        copy_readings(cur, part, method)  # type: ignore[arg-type]

            run()  # warm-up
            seconds = min(_timed(run) for _ in range(3))
            results[f"stage COPY {method}"] = {"rows_per_s": rows / seconds, "seconds": seconds}
    # Full writer (COPY + INSERT .. ON CONFLICT + commit) into fresh tables per method.
    for method in ("rows", "csv", "binary"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE readings")
        writer = ReadingWriter(url, copy_method=method)  # type: ignore[arg-type]
        seconds = _timed(partial(_write_all, writer, batches))
        results[f"write() {method}, new rows"] = {"rows_per_s": rows / seconds, "seconds": seconds}
        if method == "binary":
            seconds = _timed(partial(_write_all, writer, batches))
            results["write() binary, all duplicates"] = {
                "rows_per_s": rows / seconds,
                "seconds": seconds,
            }
        writer.close()
    # Alternative: COPY straight into readings, fall back to staging on a unique violation.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
    from ingest.pgcopy import encode_binary_copy
    from ingest.writer import _NAMES, STAGE_COLUMNS

    with psycopg.connect(url) as conn:

        def direct() -> None:
            for part in batches:
                payload = encode_binary_copy(part, STAGE_COLUMNS)
                with (
                    conn.transaction(),
                    conn.cursor() as cur,
                    cur.copy(f"COPY readings ({_NAMES}) FROM STDIN (FORMAT binary)") as copy,
                ):
                    copy.write(payload)

        seconds = _timed(direct)
        results["direct COPY into readings, new rows"] = {
            "rows_per_s": rows / seconds,
            "seconds": seconds,
        }
        failed = 0

        def direct_dup() -> None:
            nonlocal failed
            for part in batches[:5]:
                payload = encode_binary_copy(part, STAGE_COLUMNS)
                try:
                    with (
                        conn.transaction(),
                        conn.cursor() as cur,
                        cur.copy(f"COPY readings ({_NAMES}) FROM STDIN (FORMAT binary)") as copy,
                    ):
                        copy.write(payload)
                except psycopg.errors.UniqueViolation:
                    failed += 1

        seconds = _timed(direct_dup)
        n = min(5, len(batches)) * batch
        results["direct COPY, all duplicates (fails, before fallback)"] = {
            "rows_per_s": n / seconds,
            "seconds": seconds,
        }
    return results


# ------------------------------------------------------------------------------- MQTT
def _publish_backlog(port: int, topic: str, n: int, payload: bytes) -> None:
    """Queue n QoS 1 messages with mosquitto_pub -l (fast C publisher)."""
    lines = (payload.replace(b"\n", b" ") + b"\n") * n
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-l"], input=lines, check=True
    )


def _paho_plain(port: int, topic: str, n: int, client_id: str) -> float:
    import paho.mqtt.client as mqtt

    count = 0
    t0 = 0.0
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        nonlocal count, t0
        if count == 0:
            t0 = time.perf_counter()
        count += 1
        if count >= n:
            done.set()
            client.disconnect()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port, clean_start=True)
    threading.Thread(
        target=lambda: _publish_backlog(port, topic, n, b"x" * 200), daemon=True
    ).start()
    client.loop_forever()
    return n / (time.perf_counter() - t0)


def _paho_naive_batch(port: int, topic: str, n: int, client_id: str, age: float) -> float:
    """Manual acks, ack a batch after a `age`-second timer (like a DB commit every age s)."""
    import paho.mqtt.client as mqtt

    pending: list[tuple[int, int]] = []
    lock = threading.Lock()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
    )

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        with lock:
            pending.append((msg.mid, msg.qos))

    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    publisher = threading.Thread(
        target=lambda: _publish_backlog(port, topic, n, b"x" * 200), daemon=True
    )
    publisher.start()
    got = 0
    t0 = time.perf_counter()
    deadline = t0 + 20
    while got < n and time.perf_counter() < deadline:
        time.sleep(age)
        with lock:
            batch = pending[:]
            pending.clear()
        for mid, qos in batch:
            client.ack(mid, qos)
        got += len(batch)
    rate = got / (time.perf_counter() - t0)
    client.disconnect()
    client.loop_stop()
    return rate


def _mosquitto_sub(port: int, topic: str, n: int) -> float:
    proc = subprocess.Popen(
        ["mosquitto_sub", "-p", str(port), "-q", "1", "-t", topic, "-C", str(n)],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    t0 = time.perf_counter()
    _publish_backlog(port, topic, n, b"x" * 200)
    proc.wait(120)
    return n / (time.perf_counter() - t0)


def _batch_consumer(port: int, topic: str, n: int, **kwargs: Any) -> float:
    from ingest.consumer import MqttBatchConsumer

    got = 0
    t0 = 0.0

    def handler(messages: Sequence[Any]) -> None:
        nonlocal got, t0
        if got == 0:
            t0 = time.perf_counter()
        got += len(messages)
        if got >= n:
            consumer.stop()

    consumer = MqttBatchConsumer(
        f"mqtt://127.0.0.1:{port}", topic, handler, client_id="bench-consumer", **kwargs
    )
    consumer.start()
    publisher = threading.Thread(
        target=lambda: _publish_backlog(port, topic, n, b"x" * 200), daemon=True
    )
    publisher.start()
    consumer.run(timeout=60)
    return n / (time.perf_counter() - t0)


def bench_mqtt(messages: int) -> dict[str, float]:
    from kota_cli.servers import MosquittoServer, temp_dir

    results: dict[str, float] = {}
    stock = MosquittoServer(temp_dir("kota-bench-mq-"), persistence=False)
    stock.write_config()
    # stock = mosquitto defaults (max_inflight_messages 20, Nagle on) + a large queue
    stock.config_path.write_text(
        f"listener {stock.port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n"
    )
    stock.write_config = lambda: None  # type: ignore[method-assign]
    stock.start()
    prod_dir = temp_dir("kota-bench-mqp-")
    prod = MosquittoServer(prod_dir, persistence=False)
    prod.write_config()
    conf = (Path(__file__).parent / "mosquitto.conf").read_text()
    keep = [
        ln
        for ln in conf.splitlines()
        if ln.strip()
        and not ln.startswith("#")
        and ln.split()[0]
        in {
            "max_inflight_messages",
            "max_queued_messages",
            "max_queued_bytes",
            "set_tcp_nodelay",
            "message_size_limit",
        }
    ]
    prod.config_path.write_text(
        f"listener {prod.port} 127.0.0.1\nallow_anonymous true\n" + "\n".join(keep) + "\n"
    )
    prod.write_config = lambda: None  # type: ignore[method-assign]
    prod.start()
    try:
        for name, broker in (("stock", stock), ("production", prod)):
            port = broker.port
            if shutil.which("mosquitto_sub"):
                results[f"{name}: mosquitto_sub -q 1"] = _mosquitto_sub(
                    port, f"b/{name}/sub", messages
                )
            results[f"{name}: plain paho (auto-ack)"] = _paho_plain(
                port, f"b/{name}/plain", messages, f"plain-{name}"
            )
            small = min(messages, 2000)
            for age in (0.5, 0.2):
                results[
                    f"{name}: naive batch-ack paho, {age}s timer, no Receive Maximum ({small} msgs)"
                ] = _paho_naive_batch(
                    port, f"b/{name}/naive{age}", small, f"naive-{name}-{age}", age
                )
            results[f"{name}: MqttBatchConsumer"] = _batch_consumer(
                port, f"b/{name}/consumer", messages
            )
            results[f"{name}: MqttBatchConsumer, stock paho reader"] = _batch_consumer(
                port, f"b/{name}/consumer2", messages, fast_reader=False
            )
    finally:
        stock.destroy()
        prod.destroy()
    return results


@click.group()
def main() -> None:
    """Ingest benchmarks (see docs/ingest.md)."""


@main.command("copy")
@click.option("--rows", default=200_000, show_default=True)
@click.option("--batch", default=5000, show_default=True)
@click.option(
    "--database-url",
    envvar="KOTA_BENCH_DATABASE_URL",
    default=None,
    help="Use this (disposable!) database instead of a private server.",
)
def copy_cmd(rows: int, batch: int, database_url: str | None) -> None:
    """Compare COPY methods."""
    from kota_cli.servers import PostgresServer, temp_dir
    from storage.migrate import migrate

    server = None
    if database_url is None:
        server = PostgresServer(temp_dir("kota-bench-pg-"), fsync=True)
        server.start()
        database_url = server.create_database("bench")
    try:
        migrate(database_url)
        for name, r in bench_copy(database_url, rows, batch).items():
            click.echo(f"{name:<55} {r['rows_per_s']:>12,.0f} rows/s  ({r['seconds']:.3f} s)")
    finally:
        if server is not None:
            server.destroy()


@main.command("mqtt")
@click.option("--messages", default=50_000, show_default=True)
def mqtt_cmd(messages: int) -> None:
    """Compare QoS 1 consumers."""
    for name, rate in bench_mqtt(messages).items():
        click.echo(f"{name:<80} {rate:>10,.0f} msg/s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
