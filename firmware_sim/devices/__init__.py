"""Byte-exact device simulators and a factory that builds one by kind.

``make_device("pms5003", source, name="pm-1", interval_s=1.0)`` or
``make_device("modbus:sdm120", source, address=2)``; the kinds are listed in :data:`KINDS`.
"""

from __future__ import annotations

from typing import Any

from firmware_sim.base import DeviceBase, ValueSource
from firmware_sim.devices.modbus import MODELS, ModbusSlave
from firmware_sim.devices.pms5003 import PMS5003
from firmware_sim.devices.sds011 import SDS011
from firmware_sim.devices.traffic_nmea import TrafficCounter

#: every device kind; Modbus models also answer to their bare model name ("sdm120")
KINDS = ("pms5003", "sds011", "traffic_nmea", *(f"modbus:{m}" for m in MODELS))


def make_device(
    kind: str, source: ValueSource, name: str | None = None, **options: Any
) -> DeviceBase:
    """Build the simulator of ``kind`` with its device options (see each class)."""
    if kind == "pms5003":
        return PMS5003(source, name or kind, **options)
    if kind == "sds011":
        return SDS011(source, name or kind, **options)
    if kind == "traffic_nmea":
        return TrafficCounter(source, name or kind, **options)
    model = kind.removeprefix("modbus:")
    if model in MODELS:
        return ModbusSlave(source, name or model, model=model, **options)
    raise ValueError(f"unknown device kind {kind!r}; known: {', '.join(KINDS)}")


__all__ = ["KINDS", "PMS5003", "SDS011", "ModbusSlave", "TrafficCounter", "make_device"]
