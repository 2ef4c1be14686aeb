"""`kota export`: readings for other platforms (FIWARE NGSI-LD Smart Data Models)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path

import click
import orjson

from gateway.devices import DeviceSpecError, parse_time
from gateway.devices_cli import database_option, require_url
from gateway.export_ngsi import build_entities, fetch_rows
from gateway.schema.cities import load_cities
from kota_cli.errors import KotaError

MAX_SPAN = timedelta(days=366)


@click.group()
def group() -> None:
    """Export readings for other platforms.

    \b
    Example:
      kota export ngsi-ld --city THBKK --from 2025-06-01 --to 2025-06-02 --out bkk.jsonld
    """


def _time(text: str, what: str) -> datetime:
    try:
        return parse_time(text, what)
    except DeviceSpecError as err:
        raise KotaError(str(err)) from None


@group.command(name="ngsi-ld")
@click.option("--city", required=True, help="UN/LOCODE, e.g. THBKK.")
@click.option(
    "--from",
    "start_text",
    required=True,
    metavar="TIME",
    help="Start (ISO 8601, UTC if no offset).",
)
@click.option("--to", "end_text", required=True, metavar="TIME", help="End, exclusive.")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file (default: stdout).",
)
@click.option(
    "--hourly", is_flag=True, help="One entity per device and hour from readings_hourly (mean)."
)
@click.option("--jsonl", is_flag=True, help="One entity per line instead of one JSON array.")
@database_option
def ngsi_ld(
    city: str,
    start_text: str,
    end_text: str,
    out_path: Path | None,
    hourly: bool,
    jsonl: bool,
    database_url: str | None,
) -> None:
    """Write FIWARE Smart Data Models entities (NGSI-LD normalized, with unitCode).

    AirQualityObserved, TrafficFlowObserved, WaterConsumptionObserved and
    ThreePhaseAcMeasurement; ids urn:ngsi-ld:<Model>:<device>:<time>. The default JSON array
    is the body of POST /ngsi-ld/v1/entityOperations/upsert (Content-Type application/ld+json).

    Example: kota export ngsi-ld --city THBKK --from 2025-06-01 --to 2025-06-02 --out bkk.jsonld
    """
    import psycopg

    if city not in load_cities():
        raise KotaError(f"city {city[:16]!r} is not in the registry (see `kota cities`)")
    start, end = _time(start_text, "--from"), _time(end_text, "--to")
    if end <= start:
        raise KotaError("--to must be after --from")
    if end - start > MAX_SPAN:
        raise KotaError("export at most 366 days at a time (use --hourly or several runs)")
    try:
        rows = fetch_rows(require_url(database_url), city, start, end, hourly=hourly)
    except psycopg.errors.UndefinedTable:
        raise KotaError("the readings tables do not exist: run `kota db migrate` first") from None
    except psycopg.Error as err:
        raise KotaError(f"database error: {str(err).strip().splitlines()[0]}") from None
    out = out_path.open("wb") if out_path else sys.stdout.buffer
    count = 0
    try:
        if not jsonl:
            out.write(b"[\n")
        for entity in build_entities(rows, hourly=hourly):
            if not jsonl and count:
                out.write(b",\n")
            out.write(orjson.dumps(entity))
            if jsonl:
                out.write(b"\n")
            count += 1
        if not jsonl:
            out.write(b"\n]\n")
    finally:
        if out_path:
            out.close()
        else:
            out.flush()
    click.echo(f"exported {count} entities from {rows.height} readings", err=True)
