"""Export readings as FIWARE Smart Data Models entities in NGSI-LD (normalized form).

One entity per device, Smart Data Model and observation time (the readings a device took at
one instant - e.g. pm2_5, pm10 and temperature from one PMS5003 frame - share an entity), or
with ``hourly=True`` one per device, model and UTC hour from readings_hourly (value = mean).
Raw observations are the default because NGSI-LD consumers (QuantumLeap, Orion-LD temporal)
expect ``observedAt`` per measurement; the hourly form is for bulk transfers.

Models and attributes come from the catalogue (quantities.toml: fiware_model,
fiware_attribute, cefact). Where the catalogue name differs from the published model, the
override table below follows the model's schema and cites it:

* WaterConsumptionObserved (smart-data-models/dataModel.WaterConsumption,
  WaterConsumptionObserved/schema.json): the meter register is ``waterConsumption``
  ("cumulative total ... Cubic meters"); the model has no instantaneous flow attribute, so
  ``flow`` is exported as an extension attribute.
* ThreePhaseAcMeasurement (smart-data-models/dataModel.Energy,
  ThreePhaseAcMeasurement/doc/spec.md): ``activeEnergyImport``/``activePower`` are per-phase
  structured values; a meter total is ``totalActiveEnergyImport``/``totalActiveEnergyExport``/
  ``totalActivePower`` (numbers); ``phaseVoltage`` and ``current`` are structured per phase,
  exported as ``{"L1": value}`` for the single-phase meters Kota reads.
* TrafficFlowObserved (smart-data-models/dataModel.Transportation): one entity per vehicle
  class, with ``vehicleType`` (motorcycle, car, lorry); all counts go to ``intensity``.

Fractions: FIWARE expresses ``relativeHumidity`` and ``occupancy`` as 0-1; Kota stores
percent, so they are divided by 100 and carry unitCode C62 ("one").
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl

from gateway.schema.quantities import QUANTITIES

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
MODEL_CONTEXT: dict[str, str] = {
    "AirQualityObserved": "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld",
    "TrafficFlowObserved": "https://raw.githubusercontent.com/smart-data-models/dataModel.Transportation/master/context.jsonld",
    "WaterConsumptionObserved": "https://raw.githubusercontent.com/smart-data-models/dataModel.WaterConsumption/master/context.jsonld",
    "ThreePhaseAcMeasurement": "https://raw.githubusercontent.com/smart-data-models/dataModel.Energy/master/context.jsonld",
}
# Models whose schema defines dateObserved (the others rely on NGSI-LD observedAt only).
HAS_DATE_OBSERVED = {"AirQualityObserved", "TrafficFlowObserved"}

# quantity -> (attribute, structured phase key or None); see the module docstring for sources.
ATTRIBUTE_OVERRIDES: dict[str, tuple[str, str | None]] = {
    "water_volume": ("waterConsumption", None),
    "active_energy_import": ("totalActiveEnergyImport", None),
    "active_energy_export": ("totalActiveEnergyExport", None),
    "active_power": ("totalActivePower", None),
    "voltage": ("phaseVoltage", "L1"),
    "current": ("current", "L1"),
}
# Percent in Kota, 0-1 fraction in FIWARE.
FRACTION = {"relative_humidity", "lane_occupancy"}
VEHICLE_TYPE = {
    "vehicle_count_motorcycle": "motorcycle",
    "vehicle_count_car": "car",
    "vehicle_count_heavy": "lorry",
}


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with 'Z' (microseconds only when non-zero)."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def attribute(quantity: str) -> tuple[str, str | None]:
    """(NGSI-LD attribute, phase key) of a catalogue quantity."""
    return ATTRIBUTE_OVERRIDES.get(quantity, (QUANTITIES[quantity].fiware_attribute, None))


def property_of(quantity: str, value: float, observed: str) -> dict[str, Any]:
    """The NGSI-LD Property for one reading, with unitCode and observedAt."""
    q = QUANTITIES[quantity]
    _, phase = attribute(quantity)
    unit = q.cefact
    if quantity in FRACTION:
        value, unit = value / 100.0, "C62"
    prop: dict[str, Any] = {
        "type": "Property",
        "value": {phase: value} if phase else value,
        "observedAt": observed,
    }
    if unit:
        prop["unitCode"] = unit
    return prop


def entity_id(model: str, device: str, observed: str, vehicle_type: str | None = None) -> str:
    local = f"{device}-{vehicle_type}" if vehicle_type else device
    return f"urn:ngsi-ld:{model}:{local}:{observed}"


def build_entities(rows: pl.DataFrame, *, hourly: bool = False) -> Iterator[dict[str, Any]]:
    """Entities from rows with device, site, quantity, observed_at (UTC), value, latitude,
    longitude, site_name (and, for hourly, bucket_end)."""
    if rows.height == 0:
        return
    known = [q for q in rows["quantity"].unique().to_list() if q in QUANTITIES]
    meta = pl.DataFrame(
        {
            "quantity": known,
            "model": [QUANTITIES[q].fiware_model for q in known],
            "vehicle_type": [VEHICLE_TYPE.get(q) for q in known],
        },
        schema={"quantity": pl.Utf8, "model": pl.Utf8, "vehicle_type": pl.Utf8},
    )
    rows = rows.join(meta, on="quantity", how="inner").sort(
        ["device", "model", "vehicle_type", "observed_at", "quantity"], nulls_last=False
    )
    keys = ["device", "model", "vehicle_type", "observed_at"]
    for _key, part in rows.group_by(keys, maintain_order=True):
        first = part.row(0, named=True)
        observed = iso(first["observed_at"])
        model, device, vtype = first["model"], first["device"], first["vehicle_type"]
        entity: dict[str, Any] = {"id": entity_id(model, device, observed, vtype), "type": model}
        if model in HAS_DATE_OBSERVED:
            stamp = f"{observed}/{iso(first['bucket_end'])}" if hourly else observed
            entity["dateObserved"] = {
                "type": "Property",
                "value": {"@type": "DateTime", "@value": stamp},
            }
        if first.get("latitude") is not None and first.get("longitude") is not None:
            entity["location"] = {
                "type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [first["longitude"], first["latitude"]]},
            }
        if first.get("site_name"):
            entity["name"] = {"type": "Property", "value": first["site_name"]}
        entity["refDevice"] = {"type": "Relationship", "object": f"urn:ngsi-ld:Device:{device}"}
        if vtype:
            entity["vehicleType"] = {"type": "Property", "value": vtype}
        for q, value in zip(part["quantity"].to_list(), part["value"].to_list(), strict=True):
            name, _ = attribute(q)
            prop = property_of(q, value, observed)
            if name in entity and isinstance(entity[name].get("value"), dict):
                entity[name]["value"].update(prop["value"])  # several phases
            else:
                entity[name] = prop
        entity["@context"] = [MODEL_CONTEXT[model], CORE_CONTEXT]
        yield entity


def fetch_rows(
    conninfo: str, city: str, start: datetime, end: datetime, *, hourly: bool = False
) -> pl.DataFrame:
    """Readings (or hourly means) of a city in [start, end) with their site's location."""
    import psycopg

    if hourly:
        sql = (
            "SELECT r.device, r.site, r.quantity, r.bucket AS observed_at, "
            "r.bucket + interval '1 hour' AS bucket_end, r.mean AS value, "
            "s.latitude, s.longitude, s.name AS site_name FROM readings_hourly r "
            "LEFT JOIN sites s ON s.site_id = r.site "
            "WHERE r.city = %s AND r.bucket >= %s AND r.bucket < %s AND r.mean IS NOT NULL "
            "ORDER BY r.device, r.bucket"
        )
    else:
        sql = (
            "SELECT r.device, r.site, r.quantity, r.observed_at, r.value, "
            "s.latitude, s.longitude, s.name AS site_name FROM readings r "
            "LEFT JOIN sites s ON s.site_id = r.site "
            "WHERE r.city = %s AND r.observed_at >= %s AND r.observed_at < %s "
            "ORDER BY r.device, r.observed_at"
        )
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(sql, (city, start, end))
        names = [d.name for d in cur.description or ()]
        data = cur.fetchall()
    schema: dict[str, Any] = {
        "device": pl.Utf8,
        "site": pl.Utf8,
        "quantity": pl.Utf8,
        "observed_at": pl.Datetime("us", "UTC"),
        "value": pl.Float64,
        "latitude": pl.Float64,
        "longitude": pl.Float64,
        "site_name": pl.Utf8,
    }
    if hourly:
        schema["bucket_end"] = pl.Datetime("us", "UTC")
    return pl.DataFrame(data, schema={n: schema[n] for n in names}, orient="row")
