"""Edge device drivers, Telegraf-style: one module per device family, registered by name.

``REGISTRY[kind]`` is a :class:`~edge.drivers.base.DriverSpec` with the driver's documented
sample config and its ``build(table, ctx)`` factory. See edge/drivers/README.md.
"""

from __future__ import annotations

from edge.drivers.base import AgentContext, Driver, DriverSpec, Sink

__all__ = ["REGISTRY", "AgentContext", "Driver", "DriverSpec", "Sink"]


def _registry() -> dict[str, DriverSpec]:
    from edge.drivers import modbus, mqtt_source, pms5003, sds011, traffic_nmea

    specs = (pms5003.SPEC, sds011.SPEC, traffic_nmea.SPEC, modbus.SPEC, mqtt_source.SPEC)
    return {spec.kind: spec for spec in specs}


REGISTRY: dict[str, DriverSpec] = _registry()
