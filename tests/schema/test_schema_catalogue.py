"""The shared schema: quantity catalogue, city registry, flags."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest

from gateway.schema import QUANTITIES, QualityFlag, load_cities, quantity
from gateway.schema.cities import RegistryError, parse_cities

REQUIRED_QUANTITIES = {
    "pm1",
    "pm2_5",
    "pm10",
    "no2",
    "o3",
    "co",
    "so2",
    "co2",
    "temperature",
    "relative_humidity",
    "vehicle_count",
    "vehicle_speed",
    "lane_occupancy",
    "water_volume",
    "water_flow",
    "active_energy_import",
    "active_power",
    "voltage",
    "current",
    "frequency",
}
# Canonical units required by the foundation issue, as UCUM codes.
CANONICAL_UCUM = {
    "pm1": "ug/m3",
    "pm2_5": "ug/m3",
    "pm10": "ug/m3",
    "no2": "ug/m3",
    "o3": "ug/m3",
    "so2": "ug/m3",
    "co": "mg/m3",
    "co2": "ppm",
    "temperature": "Cel",
    "relative_humidity": "%",
    "vehicle_count": "{vehicle}",
    "vehicle_speed": "km/h",
    "lane_occupancy": "%",
    "water_volume": "m3",
    "water_flow": "m3/h",
    "active_energy_import": "kW.h",
    "active_power": "W",
    "voltage": "V",
    "current": "A",
    "frequency": "Hz",
}
CEFACT = re.compile(r"^[A-Z0-9]{2,3}$")


def test_catalogue_has_every_required_quantity() -> None:
    assert set(QUANTITIES) >= REQUIRED_QUANTITIES


@pytest.mark.parametrize("name", sorted(CANONICAL_UCUM))
def test_canonical_units(name: str) -> None:
    assert quantity(name).ucum == CANONICAL_UCUM[name]


@pytest.mark.parametrize("name", sorted(QUANTITIES))
def test_every_quantity_is_complete(name: str) -> None:
    q = QUANTITIES[name]
    assert q.ucum and q.label and q.description
    assert q.min < q.max
    assert q.domain in {"air", "weather", "traffic", "water", "energy"}
    assert q.kind in {"instant", "interval", "cumulative"}
    assert q.fiware_model and q.fiware_attribute
    # Either a UN/CEFACT Rec. 20 code, or an explicit note why there is none.
    assert CEFACT.match(q.cefact) or (q.cefact == "" and q.note)


def test_particulate_units_use_gq_code() -> None:
    assert quantity("pm2_5").cefact == "GQ"
    assert quantity("co").cefact == "GP"


def test_unknown_quantity_error_names_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="pm2_5"):
        quantity("pm25")


def test_registry_has_31_valid_cities() -> None:
    cities = load_cities()
    assert len(cities) == 31
    assert sum(c.joined == 2018 for c in cities.values()) == 26
    assert {"THCNX", "THKKC", "THRYG", "KHKOS"} <= {
        c.locode for c in cities.values() if c.joined == 2024
    }
    for city in cities.values():
        ZoneInfo(city.timezone)
        assert city.locode.startswith(city.country)
        assert city.population > 0 and 1990 <= city.population_year <= 2026


HEADER = "locode,name,country,timezone,latitude,longitude,population,population_year,population_source,joined\n"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("THBKK,Bangkok,TH,Asia/Bangkok,13.7,100.5,5000000,2023,x,2018\n" * 2, "duplicate locode"),
        ("THBKK,Bangkok,TH,Asia/Bankok,13.7,100.5,5000000,2023,x,2018\n", "not an IANA zone"),
        ("bkk,Bangkok,TH,Asia/Bangkok,13.7,100.5,5000000,2023,x,2018\n", "not a UN/LOCODE"),
        ("VNHAN,Hanoi,TH,Asia/Bangkok,13.7,100.5,5000000,2023,x,2018\n", "does not start with"),
        ("THBKK,Bangkok,TH,Asia/Bangkok,13.7,100.5,many,2023,x,2018\n", "cities.csv:2"),
    ],
)
def test_registry_errors_name_the_row(row: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_cities(HEADER + row)


def test_flags_are_distinct_bits() -> None:
    values = [int(f) for f in QualityFlag]
    assert all(v & (v - 1) == 0 for v in values)
    assert len(set(values)) == len(values)
    assert QualityFlag.describe(QualityFlag.SPIKE | QualityFlag.LATE) == ["SPIKE", "LATE"]
