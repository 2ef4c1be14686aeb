"""The ASCN city registry, loaded from cities.csv (edited by the M&E team)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOCODE = re.compile(r"^[A-Z]{2}[A-Z2-9]{3}$")
COLUMNS = (
    "locode",
    "name",
    "country",
    "timezone",
    "latitude",
    "longitude",
    "population",
    "population_year",
    "population_source",
    "joined",
)


class RegistryError(ValueError):
    """A row of the city registry is invalid; the message names file, row and column."""


@dataclass(frozen=True, slots=True)
class City:
    """One ASCN member city."""

    locode: str
    name: str
    country: str
    timezone: str
    latitude: float
    longitude: float
    population: int
    population_year: int
    population_source: str
    joined: int

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _parse_row(row: dict[str, str], where: str) -> City:
    try:
        city = City(
            locode=row["locode"].strip(),
            name=row["name"].strip(),
            country=row["country"].strip(),
            timezone=row["timezone"].strip(),
            latitude=float(row["latitude"]),
            longitude=float(row["longitude"]),
            population=int(row["population"]),
            population_year=int(row["population_year"]),
            population_source=row["population_source"].strip(),
            joined=int(row["joined"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise RegistryError(f"{where}: {err}") from None
    _validate(city, where)
    return city


def _validate(city: City, where: str) -> None:
    if not LOCODE.match(city.locode):
        raise RegistryError(f"{where}: locode {city.locode!r} is not a UN/LOCODE (e.g. THBKK)")
    if city.locode[:2] != city.country:
        raise RegistryError(
            f"{where}: locode {city.locode} does not start with country {city.country}"
        )
    try:
        ZoneInfo(city.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise RegistryError(f"{where}: timezone {city.timezone!r} is not an IANA zone") from None
    if not (-90 <= city.latitude <= 90 and -180 <= city.longitude <= 180):
        raise RegistryError(f"{where}: latitude/longitude out of range")
    if city.population <= 0:
        raise RegistryError(f"{where}: population must be positive")


def parse_cities(text: str, source: str = "cities.csv") -> dict[str, City]:
    """Parse and validate registry CSV text; raises RegistryError naming the bad row."""
    reader = csv.DictReader(io.StringIO(text))
    missing = set(COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise RegistryError(f"{source}: missing columns {sorted(missing)}")
    cities: dict[str, City] = {}
    for line, row in enumerate(reader, start=2):
        city = _parse_row(row, f"{source}:{line}")
        if city.locode in cities:
            raise RegistryError(f"{source}:{line}: duplicate locode {city.locode}")
        cities[city.locode] = city
    return cities


@cache
def load_cities(path: Path | None = None) -> dict[str, City]:
    """The registry shipped with Kota, or the CSV at `path` (e.g. a city's own edit)."""
    if path is not None:
        return parse_cities(path.read_text("utf-8"), str(path))
    text = resources.files("gateway.schema").joinpath("cities.csv").read_text("utf-8")
    return parse_cities(text)
