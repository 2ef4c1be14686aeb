"""History for the demo, produced byte for byte on a virtual clock and fed to real edge agents.

Each simulated device (firmware_sim) encodes its values into its real wire bytes at virtual
time t; the edge's own parsers decode those bytes (PMS5003/SDS011 frames, traffic NMEA
sentences, Modbus RTU request/response ADUs with CRC) into samples stamped t; the samples go
into a real edge Agent's outbox, and from there through MQTT, the gateway and ingest.
Only the pty between device and parser is skipped here, because a month of history must pass
in seconds; the live part of the demo (and the driver tests) use real ptys.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.drivers import REGISTRY
from edge.drivers.base import AgentContext, Sink, samples_from
from edge.drivers.modbus import ALIASES, MODELS, decode_block, decode_read_response
from edge.drivers.pms5003 import UNITS as PMS_UNITS
from edge.drivers.pms5003 import Pms5003Parser
from edge.drivers.sds011 import UNITS as SDS_UNITS
from edge.drivers.sds011 import Sds011Parser
from edge.drivers.traffic_nmea import TrafficNmeaParser
from firmware_sim.devices import PMS5003, SDS011, ModbusSlave, TrafficCounter
from firmware_sim.devices.modbus import read_request
from firmware_sim.faults import FaultInjector
from firmware_sim.profiles import make_source
from gateway.schema import Sample

Readings = list[tuple[str, list[Sample]]]


class VirtualTime:
    """The shared virtual 'now' of one city's devices and drivers."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@dataclass
class StreamDevice:
    """A serial device whose bytes are parsed as a stream (PMS5003, SDS011)."""

    device_id: str
    sim: Any
    parser: Any
    units: dict[str, str]

    def readings_at(self, t: float) -> Readings:
        frames = self.parser.feed(self.sim.emit(t))
        us = int(t * 1_000_000)
        return [
            (self.device_id, samples_from(f.values, self.units, us))
            for f in frames
            if f.kind == "data"
        ]


@dataclass
class TrafficDevice:
    """The roadside counter: sentences parsed and stamped by the real traffic driver logic."""

    sim: TrafficCounter
    driver: Any
    parser: TrafficNmeaParser = field(default_factory=TrafficNmeaParser)

    def readings_at(self, t: float) -> Readings:
        collected: Readings = []
        for frame in self.parser.feed(self.sim.emit(t)):
            self.driver.on_frame(frame, lambda dev, s: collected.append((dev, list(s))))
        return collected


class LastValue:
    """Remember a value source's last answer: a Modbus poll asks it once per register block."""

    def __init__(self, source: Callable[[float], Any]) -> None:
        self.source = source
        self.t: float | None = None
        self.values: Any = None

    def __call__(self, t: float) -> Any:
        if t != self.t:
            self.t, self.values = t, self.source(t)
        return self.values


@dataclass
class ModbusBus:
    """Slaves on one RS-485 line, polled with real request/response ADUs every `interval_s`."""

    slaves: list[tuple[str, ModbusSlave, Any]]  # (device_id, simulator, edge model)
    interval_s: float = 900.0
    rejects: dict[str, int] = field(default_factory=dict)

    def readings_at(self, t: float) -> Readings:
        if t % self.interval_s:
            return []
        out: Readings = []
        us = int(t * 1_000_000)
        for device_id, sim, model in self.slaves:
            samples: list[Sample] = []
            for start, count, registers in model.blocks:
                sim.receive(read_request(sim.address, start, count), t)
                words = decode_read_response(sim.emit(t), sim.address, count)
                if isinstance(words, str):
                    self.rejects[words] = self.rejects.get(words, 0) + 1
                    continue
                pairs, _status, _bad = decode_block(start, registers, words)
                samples += [
                    Sample(reg.quantity, value, reg.unit, us)
                    for reg, value in pairs
                    if not reg.channel
                ]
            out.append((device_id, samples))
        return out


@dataclass(frozen=True)
class CityPlan:
    """Which simulated devices a demo city has (ids are also the registry's device ids)."""

    city: str
    site: str

    def device_ids(self) -> list[tuple[str, str]]:
        """(device_id, driver) of every device the gateway will see."""
        c = self.city.lower()
        return [
            (f"{c}-pms-1", "pms5003"),
            (f"{c}-sds-1", "sds011"),
            (f"{c}-trf-1-L1", "traffic_nmea"),
            (f"{c}-trf-1-L2", "traffic_nmea"),
            (f"{c}-kwh-1", "modbus"),
            (f"{c}-kwh-2", "modbus"),
            (f"{c}-wtr-1", "modbus"),
            (f"{c}-wtr-2", "modbus"),
            (f"{c}-th-1", "modbus"),
        ]


def build_devices(plan: CityPlan, clock: VirtualTime, seed: int, step_s: float) -> list[Any]:
    c, city = plan.city.lower(), plan.city

    def source(kind: str, device_id: str, interval: float) -> Any:
        return LastValue(make_source(city, kind, device_id, seed, interval_s=interval))

    ctx = AgentContext(agent_id=f"{c}-pi-1", city=city, site=plan.site, clock=clock)
    traffic_driver = REGISTRY["traffic_nmea"].build(
        {"device_id": f"{c}-trf-1", "port": "/dev/null"}, ctx
    )
    meter_step = max(step_s, 900.0)

    def slave(device_id: str, kind: str, model: str, address: int) -> tuple[str, ModbusSlave, Any]:
        sim = ModbusSlave(
            source(kind, device_id, meter_step), device_id, model=model, address=address
        )
        return device_id, sim, MODELS[ALIASES.get(model, model)]

    pms_faults = FaultInjector.from_spec("bad_checksum=0.01,garbage=0.02", seed)
    return [
        StreamDevice(
            f"{c}-pms-1",
            PMS5003(
                source("air", f"{c}-pms-1", step_s),
                f"{c}-pms-1",
                interval_s=step_s,
                faults=pms_faults,
            ),
            Pms5003Parser(),
            PMS_UNITS,
        ),
        StreamDevice(
            f"{c}-sds-1",
            SDS011(source("pm", f"{c}-sds-1", step_s), f"{c}-sds-1", interval_s=step_s),
            Sds011Parser(),
            SDS_UNITS,
        ),
        TrafficDevice(
            TrafficCounter(
                source("traffic:2", f"{c}-trf-1", 900.0), f"{c}-trf-1", lanes=2, interval_s=900
            ),
            traffic_driver,
        ),
        ModbusBus(
            [
                slave(f"{c}-kwh-1", "energy_1p", "sdm120", 1),
                slave(f"{c}-kwh-2", "energy_1p", "sdm120", 2),
                slave(f"{c}-wtr-1", "water", "watermeter", 3),
                slave(f"{c}-wtr-2", "water", "watermeter", 4),
                slave(f"{c}-th-1", "th", "thprobe", 5),
            ],
            interval_s=meter_step,
        ),
    ]


class BackfillDriver:
    """An edge-agent driver that replays a city's devices over [start, end) on virtual time."""

    kind = "backfill"

    def __init__(self, plan: CityPlan, start: float, end: float, step_s: float, seed: int) -> None:
        self.device_id = f"{plan.city.lower()}-backfill"
        self.clock = VirtualTime(start)
        self.devices = build_devices(plan, self.clock, seed, step_s)
        self.times = [start + i * step_s for i in range(int((end - start) // step_s))]
        self.produced = 0
        self.done = threading.Event()
        self.on_readings: Callable[[int], None] | None = None

    def run(self, sink: Sink, stop: threading.Event) -> None:
        if not self.done.is_set():
            for t in self.times:
                if stop.is_set():
                    return
                self.clock.t = t
                for device in self.devices:
                    for device_id, samples in device.readings_at(t):
                        if samples:
                            sink(device_id, samples)
                            self.produced += len(samples)
            self.done.set()
        stop.wait()

    def health(self) -> dict[str, object]:
        return {"state": "done" if self.done.is_set() else "backfilling", "produced": self.produced}

    def parser_rejects(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for device in self.devices:
            counters: Sequence[tuple[str, int]] = ()
            if isinstance(device, StreamDevice | TrafficDevice):
                counters = tuple(device.parser.rejects.items())
            elif isinstance(device, ModbusBus):
                counters = tuple(device.rejects.items())
            for reason, n in counters:
                totals[reason] = totals.get(reason, 0) + n
        return totals
