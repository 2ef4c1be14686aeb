"""Fill a real database with simulated city data through the pipeline's own code.

firmware_sim profiles -> uplink v1 (the edge's wire format) -> gateway normalisation ->
ingest binary COPY writer -> storage rollups. Used by tests that need realistic rows
(dashboard queries, indicators); the serial/MQTT transport is covered by other tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from firmware_sim.backfill import generate
from gateway.devices import DeviceRegistry, DeviceSpec, upsert_devices
from gateway.normalize import RawMessage, normalize_batch
from gateway.schema import QUANTITIES, Sample, encode_uplink, uplink_topic
from gateway.service import parse_heartbeat, store_heartbeats
from ingest.writer import ReadingWriter
from storage.migrate import migrate
from storage.rollups import refresh_rollups

KINDS = {
    "air": "pms5003",
    "traffic_lane:1": "traffic_nmea",
    "water": "modbus",
    "energy_1p": "modbus",
}


@dataclass(frozen=True)
class Filled:
    start: datetime
    end: datetime
    cities: tuple[str, ...]
    readings: int
    devices: tuple[str, ...]


def device_id(city: str, kind: str) -> str:
    return f"sim-{city.lower()}-{kind.replace(':', '-').replace('_', '-')}"


def fill(
    pg_url: str,
    cities: tuple[str, ...] = ("THBKK", "VNHAN"),
    days: float = 3,
    step_s: float = 900,
    seed: int = 7,
    end: datetime | None = None,
) -> Filled:
    migrate(pg_url)
    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    specs = [
        DeviceSpec(
            device_id(city, kind),
            city,
            f"{city.lower()}-site-1",
            kind,
            driver,
            site_name=f"{city} demo site",
            latitude=13.75,
            longitude=100.5,
        )
        for city in cities
        for kind, driver in KINDS.items()
    ]
    upsert_devices(pg_url, specs)
    registry = DeviceRegistry.from_db(pg_url)
    messages = []
    for city in cities:
        devices = {device_id(city, kind): kind for kind in KINDS}
        for t, dev, values in generate(city, devices, start, end, step_s, seed):
            samples = [
                Sample(q, v, QUANTITIES[q].ucum, int(t * 1_000_000))
                for q, v in values.items()
                if q in QUANTITIES
            ]
            site = f"{city.lower()}-site-1"
            payload = encode_uplink(city, site, dev, KINDS[devices[dev]], samples)
            messages.append(RawMessage(uplink_topic(city, site, dev), payload))
    # Input that must become dead letters: an unknown device and a malformed payload.
    messages.append(
        RawMessage(
            uplink_topic(cities[0], "nowhere", "ghost-1"),
            encode_uplink(
                cities[0],
                "nowhere",
                "ghost-1",
                "pms5003",
                [Sample("pm2_5", 1.0, "ug/m3", int(end.timestamp() * 1e6) - 1)],
            ),
        )
    )
    messages.append(RawMessage(uplink_topic(cities[0], "s", "d"), b"{not json"))
    batch = normalize_batch(messages, registry, now=end + timedelta(minutes=1))
    with ReadingWriter(pg_url) as writer:
        result = writer.write(batch.readings, batch.dead_letters)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        refresh_rollups(conn)
    heartbeats = [
        parse_heartbeat(
            f"kota/v1/{city}/{city.lower()}-site-1/pi-{city.lower()}/heartbeat",
            json.dumps({"version": "0.1.0", "outbox": {"depth": 3, "oldest_s": 12.5}}).encode(),
        )
        for city in cities
    ]
    store_heartbeats(pg_url, [h for h in heartbeats if h])
    return Filled(start, end, cities, result.inserted, tuple(s.device_id for s in specs))
