"""``kota sim``: byte captures from the device simulators, and the full simulator run."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import click

from kota_cli.errors import KotaError

CAPTURE_DEVICES = (
    "pms5003",
    "sds011",
    "traffic_nmea",
    "s8",
    "sdm120",
    "sdm630",
    "thprobe",
    "watermeter",
)


@dataclass(frozen=True)
class CaptureOptions:
    """What ``kota sim frames`` was asked for."""

    device: str
    count: int
    seed: int | None
    faults: str
    start: float
    address: int | None


def capture(opts: CaptureOptions) -> Iterator[bytes]:
    """Yield the bytes of ``opts.count`` frames (Modbus: request + reply per exchange).

    Time is simulated (no sleeping): frames are produced at the device's own interval
    from ``opts.start``; values come from :func:`firmware_sim.base.demo_source`.
    """
    from firmware_sim.base import demo_source
    from firmware_sim.devices import make_device
    from firmware_sim.devices.modbus import MODELS, ModbusSlave, read_request
    from firmware_sim.faults import FaultInjector

    faults = FaultInjector.from_spec(opts.faults, opts.seed) if opts.faults else None
    kind = opts.device
    t = opts.start
    if kind in MODELS:
        dev = make_device(kind, demo_source, faults=faults, address=opts.address)
        assert isinstance(dev, ModbusSlave)
        regs = [r for r in dev.model.registers if r.quantity]
        addr = dev.address
        for i in range(opts.count):
            reg = regs[i % len(regs)]
            request = read_request(addr, reg.address, reg.words)
            dev.receive(request, t)
            yield request + dev.emit(t)
            t += 1.0
        return
    options: dict[str, Any] = {"faults": faults}
    if kind == "traffic_nmea":
        options["interval_s"] = 60
    dev = make_device(kind, demo_source, **options)
    sent = 0
    while sent < opts.count:
        out = dev.emit(t)
        if out:
            frames = [f for f in dev.sent_log[sent:] if f.frame_type == "data"]
            sent += len(frames)
            yield out
        t += 1.0


def _parse_start(value: str | None) -> float:
    if value is None:
        from firmware_sim.base import DEMO_EPOCH

        return DEMO_EPOCH
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KotaError(f"--start {value!r} is not epoch seconds or an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


@click.group(name="sim")
def group() -> None:
    """Simulated sensors and meters, byte for byte (PMS5003, SDS011, traffic, Modbus)."""


@group.command("frames")
@click.option(
    "--device", required=True, type=click.Choice(CAPTURE_DEVICES), help="Device to simulate."
)
@click.option(
    "--count", default=10, show_default=True, type=int, help="Frames (or Modbus exchanges)."
)
@click.option("--seed", type=int, default=None, help="Seed of the fault RNG (reproducible faults).")
@click.option("--faults", default="", help="Fault rates, e.g. bad_checksum=0.1,garbage=0.05.")
@click.option("--start", default=None, help="Start time: epoch seconds or ISO 8601 (UTC).")
@click.option("--address", type=int, default=None, help="Modbus slave address (default: model's).")
@click.option("--out", "out", default="-", show_default=True, help="Output file, - for stdout.")
def frames(
    device: str,
    count: int,
    seed: int | None,
    faults: str,
    start: str | None,
    address: int | None,
    out: str,
) -> None:
    """Write a raw byte capture of COUNT frames.

    For Modbus devices each exchange is the master's read request followed by the reply.

    Example: kota sim frames --device pms5003 --count 5 --out pms.bin
    """
    if count < 1:
        raise KotaError("--count must be at least 1")
    if address is not None and device not in CAPTURE_DEVICES[3:]:
        raise KotaError("--address only applies to Modbus devices (s8, sdm120, ...)")
    from firmware_sim.faults import FaultInjector

    if faults:
        try:
            FaultInjector.from_spec(faults, seed)
        except ValueError as err:
            raise KotaError(f"--faults: {err}") from None
    opts = CaptureOptions(device, count, seed, faults, _parse_start(start), address)
    try:
        chunks = capture(opts)
        if out == "-":
            _write(chunks, sys.stdout.buffer)
        else:
            with open(out, "wb") as fh:
                _write(chunks, fh)
    except ValueError as err:
        raise KotaError(str(err)) from None
    except OSError as err:
        raise KotaError(f"--out {out}: {err.strerror or err}") from None


def _write(chunks: Iterator[bytes], fh: BinaryIO) -> None:
    for chunk in chunks:
        fh.write(chunk)
    fh.flush()


@group.command("run")
@click.option(
    "--config",
    "config",
    required=True,
    type=str,
    help="Simulator config (sim.toml).",
)
def run(config: str) -> None:
    """Run every simulated device in sim.toml (ptys, MQTT devices) until Ctrl-C.

    Example: kota sim run --config sim.toml
    """
    import importlib
    import os

    if not os.path.isfile(config):
        raise KotaError(f"--config {config}: no such file")
    try:
        runner = importlib.import_module("firmware_sim.runner")
    except ModuleNotFoundError as err:
        if err.name == "firmware_sim.runner":
            raise KotaError("firmware_sim.runner is not available in this install") from None
        raise
    runner.run(config)
