"""Decode a serial capture offline: ``kota edge decode --driver pms5003 capture.bin``.

``decode_capture(kind, stream)`` returns an iterator of readings (one dict per value, with
the frame's offset in the stream and protocol fields such as ``lane``) and a Counter of
rejected frames by reason, filled as the iterator is consumed. The click command prints one
JSON object per reading on stdout and a summary of rejects on stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import click

from edge.drivers import pms5003, sds011, traffic_nmea
from edge.drivers.base import StreamParser
from kota_cli.errors import KotaError

CHUNK = 4096
#: driver kind (as on the command line) -> (parser factory, units)
DECODERS: dict[str, tuple[Callable[[], StreamParser], dict[str, str]]] = {
    "pms5003": (pms5003.Pms5003Parser, pms5003.UNITS),
    "sds011": (sds011.Sds011Parser, sds011.UNITS),
    "traffic-nmea": (traffic_nmea.TrafficNmeaParser, traffic_nmea.UNITS),
}


def decode_capture(
    driver_kind: str, stream: BinaryIO
) -> tuple[Iterator[dict[str, Any]], Counter[str]]:
    """(readings, rejects by reason) of a byte capture; the Counter fills as you iterate."""
    kind = driver_kind.replace("_", "-")
    if kind not in DECODERS:
        raise KotaError(f"--driver {driver_kind}: unknown; use one of {', '.join(DECODERS)}")
    factory, units = DECODERS[kind]
    parser = factory()
    rejects: Counter[str] = parser.rejects

    def readings() -> Iterator[dict[str, Any]]:
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                break
            for frame in parser.feed(chunk):
                yield from _rows(frame.kind, frame.offset, frame.values, frame.meta, units)
        parser.flush()

    return readings(), rejects


def _rows(
    kind: str, offset: int, values: dict[str, float], meta: dict[str, Any], units: dict[str, str]
) -> Iterator[dict[str, Any]]:
    if kind != "data":
        return
    extra = {k: v for k, v in meta.items() if k not in ("reserved", "interval_end")}
    if "interval_end" in meta:
        end = dt.datetime.fromtimestamp(meta["interval_end"], dt.UTC)
        extra["interval_end"] = end.isoformat().replace("+00:00", "Z")
    for quantity, value in values.items():
        yield {
            "quantity": quantity,
            "value": value,
            "unit": units[quantity],
            "frame_offset": offset,
            **extra,
        }


@click.command("decode")
@click.option(
    "--driver",
    "driver_kind",
    required=True,
    type=click.Choice(sorted(DECODERS), case_sensitive=False),
    help="Protocol of the capture.",
)
@click.argument("path", type=click.File("rb"))
def decode_command(driver_kind: str, path: BinaryIO) -> None:
    """Decode a raw serial capture (a file, or - for stdin) into readings.

    Prints one JSON object per reading (quantity, value, unit, frame_offset and protocol
    fields such as lane) on stdout and the rejected frames by reason on stderr.

    Example: kota edge decode --driver pms5003 /var/lib/kota/capture-pms.bin | head
    Capture one with: timeout 10 cat /dev/serial/by-id/usb-...-port0 > capture.bin
    """
    readings, rejects = decode_capture(driver_kind.lower(), path)
    n = 0
    out = sys.stdout
    for row in readings:
        out.write(json.dumps(row) + "\n")
        n += 1
    summary = ", ".join(f"{reason}={count}" for reason, count in sorted(rejects.items()))
    click.echo(f"{n} readings; rejected frames: {summary or 'none'}", err=True)
