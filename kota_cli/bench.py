"""`kota bench`: measure the platform, each benchmark printing one JSON object (--json) or a table.

The work is done by each component's own bench module; this file only wires them to the CLI
and adds the machine description so every figure in docs/benchmarks.md says where it came from.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from typing import Any

import click


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem_kib = 0
    try:
        with open("/proc/meminfo") as fh:
            mem_kib = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024**2, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def emit(result: dict[str, Any], as_json: bool) -> None:
    result = {**result, "machine": machine()}
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        click.echo(f"{key.ljust(width)}  {shown}")


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(func)


@click.group(name="bench")
def group() -> None:
    """Benchmarks. Not timed tests: figures go to docs/benchmarks.md with their command.

    \b
    kota bench pipeline     sensors-to-database throughput vs a bare COPY, latency, lost/duplicates
    kota bench edge         an edge agent with 10 devices at 1 Hz: RSS, CPU, outbox cost
    kota bench normalize    gateway normalisation alone, readings/s in one process
    kota bench indicators   the annual M&E job over ~30 M readings from Parquet, vs SQL
    kota bench soak         the pipeline at half its maximum for N minutes, memory over time
    """


@group.command()
@click.option("--workers", default=2, show_default=True, help="gateway+ingest worker processes")
@click.option("--seconds", default=20.0, show_default=True, help="measured duration after warm-up")
@click.option("--warmup", default=5.0, show_default=True)
@click.option("--devices", default=200, show_default=True)
@click.option("--readings-per-message", default=50, show_default=True)
@json_option
def pipeline(
    workers: int,
    seconds: float,
    warmup: float,
    devices: int,
    readings_per_message: int,
    as_json: bool,
) -> None:
    """Full pipeline at maximum sustainable rate against the bare COPY limit.

    Example: kota bench pipeline --workers 2 --seconds 30 --json
    """
    from kota_cli.bench_pipeline import run_pipeline_bench

    emit(
        run_pipeline_bench(
            workers=workers,
            seconds=seconds,
            warmup=warmup,
            devices=devices,
            readings_per_message=readings_per_message,
        ),
        as_json,
    )


@group.command()
@click.option("--devices", default=10, show_default=True)
@click.option("--rate-hz", default=1.0, show_default=True)
@click.option("--seconds", default=60.0, show_default=True)
@json_option
def edge(devices: int, rate_hz: float, seconds: float, as_json: bool) -> None:
    """An edge agent with N devices polled at R Hz publishing to a real Mosquitto.

    Example: kota bench edge --seconds 60 --json
    """
    from edge.bench import run_edge_bench

    emit(run_edge_bench(devices=devices, rate_hz=rate_hz, seconds=seconds), as_json)


@group.command()
@click.option("--messages", default=2000, show_default=True)
@click.option("--readings-per-message", default=10, show_default=True)
@json_option
def normalize(messages: int, readings_per_message: int, as_json: bool) -> None:
    """Gateway normalisation alone (decode, units, time, QC), readings/s in one process."""
    from gateway.bench import run_normalize_bench

    emit(run_normalize_bench(messages=messages, readings_per_message=readings_per_message), as_json)


@group.command()
@click.option("--cities", default=31, show_default=True)
@click.option("--devices-per-city", default=20, show_default=True)
@click.option("--quantities", default=6, show_default=True)
@click.option("--days", default=365, show_default=True)
@json_option
def indicators(
    cities: int, devices_per_city: int, quantities: int, days: int, as_json: bool
) -> None:
    """The annual indicator job over a year of hourly readings from Parquet, beside SQL."""
    from indicators.bench import run_indicators_bench

    emit(
        run_indicators_bench(
            cities=cities, devices_per_city=devices_per_city, quantities=quantities, days=days
        ),
        as_json,
    )


@group.command()
@click.option("--minutes", default=10.0, show_default=True)
@click.option("--workers", default=2, show_default=True)
@json_option
def soak(minutes: float, workers: int, as_json: bool) -> None:
    """The pipeline at half its sustained maximum for N minutes; memory of every process."""
    from kota_cli.bench_pipeline import run_soak

    emit(run_soak(minutes=minutes, workers=workers), as_json)
