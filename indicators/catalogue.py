"""The indicator catalogue: `catalogue.toml` loaded into frozen records.

Owns: loading and validating the data table, the ids the jobs may emit, and upserting the
catalogue into `indicator_definitions` (migration storage/migrations/0900). May import: the
standard library and psycopg (only in `upsert_definitions`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FOCAL_AREAS = (
    "Quality Environment",
    "Health and Well-being",
    "Built Infrastructure",
    "Industry and Innovation",
    "Civic and Social",
    "Safety and Security",
)
DIRECTIONS = ("lower", "higher", "none")
PERIOD_TYPES = ("day", "month", "year")

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Indicator:
    """One catalogue row."""

    id: str
    name: str
    unit: str
    focal_area: str
    iso37120: str
    u4ssc: str
    method_version: str
    direction: str
    period_types: tuple[str, ...]
    description: str
    pollutant: str = ""
    statistic: str = ""
    threshold: float | None = None


def parse_catalogue(text: str, source: str = "catalogue.toml") -> dict[str, Indicator]:
    """Parse and validate catalogue TOML; ValueError names the bad entry."""
    data = tomllib.loads(text)
    out: dict[str, Indicator] = {}
    for i, row in enumerate(data.get("indicator", []), start=1):
        where = f"{source}: indicator #{i} ({row.get('id', '?')})"
        try:
            ind = Indicator(
                id=row["id"], name=row["name"], unit=row["unit"], focal_area=row["focal_area"],
                iso37120=row.get("iso37120", ""), u4ssc=row.get("u4ssc", ""),
                method_version=row["method_version"], direction=row.get("direction", "none"),
                period_types=tuple(row.get("period_types", PERIOD_TYPES)),
                description=row.get("description", ""), pollutant=row.get("pollutant", ""),
                statistic=row.get("statistic", ""),
                threshold=None if row.get("threshold") is None else float(row["threshold"]),
            )  # fmt: skip
        except KeyError as err:
            raise ValueError(f"{where}: missing field {err}") from None
        if ind.focal_area not in FOCAL_AREAS:
            raise ValueError(f"{where}: focal_area {ind.focal_area!r} not in {FOCAL_AREAS}")
        if ind.direction not in DIRECTIONS:
            raise ValueError(f"{where}: direction {ind.direction!r} not in {DIRECTIONS}")
        if bad := set(ind.period_types) - set(PERIOD_TYPES):
            raise ValueError(f"{where}: unknown period types {sorted(bad)}")
        if ind.id in out:
            raise ValueError(f"{where}: duplicate id")
        out[ind.id] = ind
    return out


@cache
def load_catalogue(path: Path | None = None) -> dict[str, Indicator]:
    """The shipped catalogue, or the TOML at `path`."""
    if path is not None:
        return parse_catalogue(path.read_text("utf-8"), str(path))
    text = (HERE / "catalogue.toml").read_text("utf-8")
    return parse_catalogue(text)


def as_rows(catalogue: dict[str, Indicator] | None = None) -> list[dict[str, Any]]:
    """The catalogue as plain dicts (for `kota indicators list` and the export sidecar)."""
    cat = catalogue if catalogue is not None else load_catalogue()
    return [
        {
            "indicator": i.id, "name": i.name, "unit": i.unit, "focal_area": i.focal_area,
            "iso37120": i.iso37120, "u4ssc": i.u4ssc, "method_version": i.method_version,
            "direction": i.direction, "period_types": list(i.period_types),
            "description": i.description,
        }
        for i in cat.values()
    ]  # fmt: skip


_UPSERT = """
INSERT INTO indicator_definitions
    (indicator, name, unit, focal_area, iso37120, u4ssc, method_version, direction, description)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (indicator) DO UPDATE SET
    name = EXCLUDED.name, unit = EXCLUDED.unit, focal_area = EXCLUDED.focal_area,
    iso37120 = EXCLUDED.iso37120, u4ssc = EXCLUDED.u4ssc,
    method_version = EXCLUDED.method_version, direction = EXCLUDED.direction,
    description = EXCLUDED.description
"""


def upsert_definitions(conn: Any, catalogue: dict[str, Indicator] | None = None) -> int:
    """Insert or update every catalogue row in `indicator_definitions` (psycopg connection)."""
    cat = catalogue if catalogue is not None else load_catalogue()
    rows = [
        (i.id, i.name, i.unit, i.focal_area, i.iso37120, i.u4ssc, i.method_version,
         i.direction, i.description)
        for i in cat.values()
    ]  # fmt: skip
    with conn.cursor() as cur:
        cur.executemany(_UPSERT, rows)
    return len(rows)
