"""`kota ingest`: write normalised readings from MQTT into PostgreSQL, and table counts."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import click

from kota_cli.errors import ConfigError, KotaError

MQTT_SETTING = "KOTA_MQTT_URL"
DB_SETTING = "KOTA_DATABASE_URL"


def _setting(value: str | None, name: str, example: str) -> str:
    value = (value or os.environ.get(name, "")).strip()
    if not value:
        raise ConfigError(f"{name}: not set; give the option or set it, e.g. {example}")
    return value


def _check_database(url: str) -> None:
    import psycopg
    from psycopg import conninfo

    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as err:
        raise ConfigError(
            f"{DB_SETTING}: invalid database URL: {str(err).splitlines()[0]}"
        ) from None
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT to_regclass('readings') IS NOT NULL").fetchone()
    except psycopg.Error as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise KotaError(f"{DB_SETTING}: could not connect: {first}") from None
    if not row or not row[0]:
        raise KotaError(
            f"{DB_SETTING}: the database has no readings table; run `kota db migrate` first"
        )


@click.group()
def group() -> None:
    """Write normalised readings into the database (acknowledged MQTT consumption).

    \b
    Settings: KOTA_DATABASE_URL (postgresql://...), KOTA_MQTT_URL (mqtt://host:1883).
    See docs/ingest.md for delivery guarantees and tuning.
    """


@group.command()
@click.option("--database-url", help=f"PostgreSQL URL (default ${DB_SETTING}).")
@click.option(
    "--mqtt-url", help=f"Broker URL mqtt://[user:pass@]host:port (default ${MQTT_SETTING})."
)
@click.option(
    "--topic",
    default="kota/v1/normalized/#",
    show_default=True,
    help="Topic filter carrying reading-v1 JSON Lines.",
)
@click.option(
    "--group",
    "share_group",
    default="kota-ingest",
    show_default=True,
    help="Shared-subscription group ('' = plain subscription).",
)
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id = persistent session "
    "(default kota-ingest-<hostname>); keep it stable across restarts.",
)
@click.option("--batch-max", default=5000, show_default=True)
@click.option("--batch-max-age", default=0.5, show_default=True, help="Seconds.")
@click.option(
    "--metrics-port", default=0, show_default=True, help="Serve Prometheus /metrics (0 = off)."
)
@click.option(
    "--stats-every", default=10.0, show_default=True, help="Seconds between JSON stats lines."
)
@click.option("--duration", default=None, type=float, help="Stop after this many seconds.")
def run(
    database_url: str | None,
    mqtt_url: str | None,
    topic: str,
    share_group: str,
    client_id: str | None,
    batch_max: int,
    batch_max_age: float,
    metrics_port: int,
    stats_every: float,
    duration: float | None,
) -> None:
    """Consume the normalised topic into the readings table (exactly once per reading).

    Example: KOTA_DATABASE_URL=postgresql://kota@db/kota kota ingest run --mqtt-url mqtt://broker:1883
    """
    from ingest.consumer import MqttBatchConsumer, parse_mqtt_url
    from ingest.metrics import IngestMetrics
    from ingest.service import ReadingsHandler
    from ingest.writer import ReadingWriter

    db = _setting(database_url, DB_SETTING, "postgresql://kota@127.0.0.1:5432/kota")
    mq = _setting(mqtt_url, MQTT_SETTING, "mqtt://127.0.0.1:1883")
    parse_mqtt_url(mq)
    _check_database(db)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    metrics = IngestMetrics()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    handler = ReadingsHandler(ReadingWriter(db, metrics=metrics))
    consumer = MqttBatchConsumer(
        mq,
        topic,
        handler,
        client_id=client_id or f"kota-ingest-{socket.gethostname()}"[:64],
        group=share_group or None,
        batch_max=batch_max,
        batch_max_age_s=batch_max_age,
        metrics=metrics,
    )
    stop = threading.Event()

    def _signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    consumer.start()

    def emit(event: str) -> None:
        click.echo(
            json.dumps(
                {
                    "event": event,
                    "received": consumer.received,
                    "acked": consumer.acked,
                    "batches": consumer.batches,
                    "failures": consumer.handler_failures,
                    "reconnects": consumer.reconnects,
                    **handler.totals,
                }
            ),
            nl=True,
        )

    emit("ingest_started")
    deadline = None if duration is None else time.monotonic() + duration
    next_stats = time.monotonic() + stats_every
    try:
        while not stop.wait(0.2):
            if consumer.error is not None:
                raise KotaError(f"ingest consumer failed: {consumer.error}")
            if deadline is not None and time.monotonic() >= deadline:
                break
            if time.monotonic() >= next_stats:
                emit("ingest_stats")
                next_stats = time.monotonic() + stats_every
    finally:
        consumer.stop()
        handler.writer.close()
        emit("ingest_stopped")


@group.command()
@click.option("--database-url", help=f"PostgreSQL URL (default ${DB_SETTING}).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def stats(database_url: str | None, as_json: bool) -> None:
    """Print readings / dead-letter counts (per city and per reason).

    Example: kota ingest stats --json
    """
    import psycopg

    db = _setting(database_url, DB_SETTING, "postgresql://kota@127.0.0.1:5432/kota")
    _check_database(db)
    with psycopg.connect(db) as conn:
        readings = conn.execute(
            "SELECT count(*), max(observed_at), max(received_at) FROM readings"
        ).fetchone()
        per_city = conn.execute(
            "SELECT city, count(*) FROM readings GROUP BY city ORDER BY city"
        ).fetchall()
        dead = conn.execute(
            "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
        ).fetchall()
    assert readings is not None
    out: dict[str, Any] = {
        "readings": int(readings[0]),
        "latest_observed_at": readings[1].isoformat() if readings[1] else None,
        "latest_received_at": readings[2].isoformat() if readings[2] else None,
        "readings_per_city": {c: int(n) for c, n in per_city},
        "dead_letters": sum(int(n) for _, n in dead),
        "dead_letters_per_reason": {r: int(n) for r, n in dead},
    }
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(
        f"readings      {out['readings']:>12,}   latest observed_at {out['latest_observed_at']}"
    )
    for city, n in out["readings_per_city"].items():
        click.echo(f"  {city:<11} {n:>12,}")
    click.echo(f"dead_letters  {out['dead_letters']:>12,}")
    for reason, n in out["dead_letters_per_reason"].items():
        click.echo(f"  {reason:<24} {n:>12,}")
