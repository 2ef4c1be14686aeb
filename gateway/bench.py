"""Normalisation throughput: decode + registry + units + calibration + QC in one process.

`run_normalize_bench()` builds realistic uplinks (mixed air-quality units, a calibration,
PurpleAir inputs, a few bad rows), then times `Normalizer.normalize` on them, no MQTT or
database. Wired into `kota bench` by the lead; runnable directly:

    python -m gateway.bench --messages 2000 --readings-per-message 10
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.devices import Calibration, DeviceRegistry, DeviceSpec
from gateway.normalize import Normalizer, RawMessage
from gateway.schema.uplink import Sample, encode_uplink, to_epoch_us, uplink_topic

_MIX = (  # quantity, unit, base value
    ("pm2_5", "µg/m³", 25.0),
    ("pm10", "ug/m3", 40.0),
    ("pm2_5_cf1", "ug/m3", 30.0),
    ("relative_humidity", "%", 70.0),
    ("temperature", "°F", 86.0),
    ("no2", "ppb", 20.0),
    ("co", "ppm", 0.8),
    ("o3", "ppb", 30.0),
    ("so2", "ug/m3", 5.0),
    ("co2", "ppm", 600.0),
)
_NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def make_messages(
    messages: int = 2000, readings_per_message: int = 10, devices: int = 200
) -> tuple[list[RawMessage], DeviceRegistry]:
    """Synthetic uplinks (each message one device, `readings_per_message` rows) and a registry."""
    specs = []
    for d in range(devices):
        specs.append(
            DeviceSpec(
                device_id=f"bench-{d:04d}",
                city="THBKK",
                site_id=f"bkk-site-{d % 50:02d}",
                model="PMS5003",
                driver="pms5003",
                quantities={q: u for q, u, _ in _MIX},
                calibrations=[Calibration("pm2_5", 1.05, -0.5, _NOW - timedelta(days=30))]
                if d % 4 == 0
                else [],
            )
        )
    registry = DeviceRegistry.from_specs(specs)
    start_us = to_epoch_us(_NOW - timedelta(minutes=30))
    out: list[RawMessage] = []
    for m in range(messages):
        spec = specs[m % devices]
        t = start_us + (m // devices) * 10_000_000
        samples = []
        for i in range(readings_per_message):
            q, u, base = _MIX[i % len(_MIX)]
            # each sample of a message at its own microsecond when the mix repeats
            samples.append(Sample(q, base + (m % 7) * 0.5, u, t + i // len(_MIX)))
        out.append(
            RawMessage(
                uplink_topic(spec.city, spec.site_id, spec.device_id),
                encode_uplink(
                    spec.city,
                    spec.site_id,
                    spec.device_id,
                    spec.driver,
                    samples,
                    agent="bench-agent",
                    seq=m,
                    sent_us=t + 1_000_000,
                ),
            )
        )
    return out, registry


def run_normalize_bench(
    messages: int = 2000, readings_per_message: int = 10, repeat: int = 3
) -> dict[str, Any]:
    """Time normalisation of `messages` uplinks; best of `repeat` runs (fresh QC state each)."""
    msgs, registry = make_messages(messages, readings_per_message)
    Normalizer(registry).normalize(msgs[:50], now=_NOW)  # warm-up (imports, caches)
    best = float("inf")
    result = None
    for _ in range(max(1, repeat)):
        normalizer = Normalizer(registry)
        started = time.perf_counter()
        result = normalizer.normalize(msgs, now=_NOW)
        best = min(best, time.perf_counter() - started)
    assert result is not None
    rows = messages * readings_per_message
    return {
        "messages": messages,
        "readings_in": rows,
        "readings_out": result.readings.height,
        "dead_letters": len(result.dead_letters),
        "seconds": round(best, 4),
        "readings_per_s": round(rows / best),
        "messages_per_s": round(messages / best),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--readings-per-message", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run_normalize_bench(args.messages, args.readings_per_message, args.repeat)))


if __name__ == "__main__":
    main()
