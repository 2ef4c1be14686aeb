"""`kota gateway`: run the gateway service, or normalise uplinks offline."""

from __future__ import annotations

import json
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click
import orjson

from gateway.devices import DeviceRegistry, DeviceSpecError
from gateway.devices_cli import database_option, require_url
from gateway.normalize import (
    NormalizeConfig,
    Normalizer,
    RawMessage,
    dead_letter_json,
    readings_to_jsonl,
)
from gateway.schema.deadletter import DeadLetter
from kota_cli.errors import KotaError

CHUNK_LINES = 5000


@click.group()
def group() -> None:
    """Normalise device uplinks into the shared schema.

    \b
    Example:
      kota gateway run --mqtt-url mqtt://127.0.0.1:1883
      kota gateway normalize --accept-unknown-devices < uplinks.jsonl > readings.jsonl
    """


def _config(horizon_days: float, no_purpleair: bool) -> NormalizeConfig:
    if not 0 < horizon_days <= 36_500:
        raise KotaError("--horizon-days must be between 0 and 36500")
    return NormalizeConfig(horizon_days=horizon_days, purpleair_correction=not no_purpleair)


@group.command()
@database_option
@click.option(
    "--mqtt-url",
    envvar="KOTA_MQTT_URL",
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="Broker URL (default: $KOTA_MQTT_URL).",
)
@click.option(
    "--group",
    "share_group",
    default="kota-gateway",
    show_default=True,
    help="Shared-subscription group: gateways of one group split the uplinks.",
)
@click.option(
    "--client-id",
    default=None,
    help="MQTT client id, stable across restarts (it keys the persistent session); "
    "give each gateway on one host its own (default: kota-gw-<host>).",
)
@click.option(
    "--batch-max",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Messages per batch.",
)
@click.option(
    "--batch-max-age",
    "batch_max_age_s",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.001, 60),
    help="Seconds before a partial batch is processed.",
)
@click.option(
    "--publish-normalized",
    is_flag=True,
    help="Also publish readings as reading-v1 JSON Lines on kota/v1/normalized/{city}.",
)
@click.option("--no-heartbeats", is_flag=True, help="Do not store edge heartbeats in agent_status.")
@click.option(
    "--horizon-days", default=400.0, show_default=True, help="Reject readings older than this."
)
@click.option("--no-purpleair", is_flag=True, help="Do not derive pm2_5_corrected.")
@click.option(
    "--stats-every",
    "stats_every_s",
    default=10.0,
    show_default=True,
    help="Seconds between JSON stats lines on stdout.",
)
@click.option(
    "--duration", "duration_s", type=float, default=None, help="Stop after this many seconds."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar="KOTA_METRICS_PORT",
    default=None,
    help="Serve Prometheus kota_ingest_* metrics on this port (default: $KOTA_METRICS_PORT; off if unset).",
)
def run(
    database_url: str | None,
    mqtt_url: str,
    share_group: str,
    client_id: str | None,
    batch_max: int,
    batch_max_age_s: float,
    publish_normalized: bool,
    no_heartbeats: bool,
    horizon_days: float,
    no_purpleair: bool,
    stats_every_s: float,
    duration_s: float | None,
    metrics_port: int | None,
) -> None:
    """Consume uplinks ($share/<group>/kota/v1/+/+/+/up), normalise, write, then acknowledge.

    Start several on one --group to share the load. Prints one JSON stats line every
    --stats-every seconds and one when it stops (SIGTERM/SIGINT).

    Example: KOTA_DATABASE_URL=postgresql://... kota gateway run --publish-normalized
    """
    from gateway.service import GatewayService, GatewaySettings, install_signal_handlers

    settings = GatewaySettings(
        database_url=require_url(database_url),
        mqtt_url=mqtt_url,
        group=share_group,
        client_id=client_id or f"kota-gw-{socket.gethostname()[:40]}",
        batch_max=batch_max,
        batch_max_age_s=batch_max_age_s,
        publish_normalized=publish_normalized,
        heartbeats=not no_heartbeats,
        stats_every_s=stats_every_s,
        normalize=_config(horizon_days, no_purpleair),
        metrics_port=metrics_port,
    )
    try:
        service = GatewayService(settings)
    except ModuleNotFoundError as err:
        raise KotaError(f"`kota gateway run` needs the ingest component ({err.name})") from None
    install_signal_handlers(service)
    try:
        service.run(duration_s=duration_s)
    except OSError as err:
        raise KotaError(f"cannot reach {mqtt_url}: {err}") from None


def _messages(stream: IO[bytes], dead: list[DeadLetter], now: datetime) -> Iterator[RawMessage]:
    """Input lines -> messages. `{"topic": ..., "payload": {...}}` or a bare uplink object."""
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                dead.append(
                    DeadLetter(
                        now,
                        "invalid_json",
                        f"input line {number} is not JSON",
                        payload=DeadLetter.cut(line),
                    )
                )
                continue
        if isinstance(obj, dict) and "payload" in obj and "schema" not in obj:
            topic = obj.get("topic")
            payload = obj["payload"]
            if isinstance(payload, str):
                raw = payload.encode()
            else:
                raw = json.dumps(payload, separators=(",", ":"), allow_nan=True).encode()
            yield RawMessage(topic if isinstance(topic, str) else None, raw)
        else:
            yield RawMessage(None, line)


@group.command()
@click.option(
    "--devices",
    "devices_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Device registry CSV (same columns as `kota devices import`).",
)
@click.option(
    "--accept-unknown-devices",
    is_flag=True,
    help="Accept devices that are not registered (for trying things out).",
)
@click.option(
    "--dead-letters",
    "dead_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write dead letters (JSON Lines) here instead of stderr.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read uplinks from this file instead of stdin.",
)
@click.option(
    "--now",
    "now_text",
    metavar="TIME",
    help="Pretend the gateway received everything at this ISO time.",
)
@click.option(
    "--horizon-days", default=400.0, show_default=True, help="Reject readings older than this."
)
@click.option("--no-purpleair", is_flag=True, help="Do not derive pm2_5_corrected.")
def normalize(
    devices_csv: Path | None,
    accept_unknown_devices: bool,
    dead_path: Path | None,
    input_path: Path | None,
    now_text: str | None,
    horizon_days: float,
    no_purpleair: bool,
) -> None:
    """Normalise uplinks offline: JSON Lines in, reading-v1 JSON Lines out.

    Each input line is {"topic": "kota/v1/...", "payload": {uplink}} or a bare uplink
    object. Runs exactly the code of `kota gateway run`, without MQTT or a database.

    Example: kota gateway normalize --devices devices.csv < uplinks.jsonl > readings.jsonl
    """
    from gateway.devices import parse_time

    if devices_csv is None and not accept_unknown_devices:
        raise KotaError("give --devices devices.csv or --accept-unknown-devices")
    try:
        registry = (
            DeviceRegistry.from_csv(devices_csv, accept_unknown=accept_unknown_devices)
            if devices_csv
            else DeviceRegistry.accept_all()
        )
        now = parse_time(now_text, "--now") if now_text else None
    except DeviceSpecError as err:
        raise KotaError(str(err)) from None
    normalizer = Normalizer(registry, _config(horizon_days, no_purpleair))
    out = sys.stdout.buffer
    dead_out: IO[bytes] = dead_path.open("wb") if dead_path else sys.stderr.buffer
    totals: Counter[str] = Counter()
    stream = input_path.open("rb") if input_path else sys.stdin.buffer
    try:
        clock = now or datetime.now(UTC)
        pending_dead: list[DeadLetter] = []
        chunk: list[RawMessage] = []

        def flush() -> None:
            batch = normalizer.normalize(chunk, now=now)
            out.write(readings_to_jsonl(batch.readings))
            for d in [*pending_dead, *batch.dead_letters]:
                dead_out.write(orjson.dumps(dead_letter_json(d)) + b"\n")
            totals["readings"] += batch.readings.height
            totals["dead_letters"] += len(batch.dead_letters) + len(pending_dead)
            totals["messages"] += len(chunk)
            pending_dead.clear()
            chunk.clear()

        for message in _messages(stream, pending_dead, clock):
            chunk.append(message)
            if len(chunk) >= CHUNK_LINES:
                flush()
        flush()
    finally:
        if input_path:
            stream.close()
        if dead_path:
            dead_out.close()
        out.flush()
    click.echo(
        f"normalized {totals['messages']} messages: {totals['readings']} readings, "
        f"{totals['dead_letters']} dead letters",
        err=True,
    )
