"""Unit ids and conversion to a table's native unit.

Owns: the accepted unit ids (with their µ/³ spellings), Kota's canonical unit per
pollutant, and the gas conversion at 25 °C and 1 atm (µg/m³ = ppb × M / 24.45).
May import: the standard library only.
"""

from __future__ import annotations

MOLAR_VOLUME_L = 24.45  # litres per mole at 25 °C, 1 atm (the convention every standard here uses)
MOLAR_MASS: dict[str, float] = {"no2": 46.01, "so2": 64.07, "o3": 48.00, "co": 28.01}

# Amount of each unit in its family's base unit: µg/m³ for mass, ppb for volume.
_MASS: dict[str, float] = {"ug/m3": 1.0, "mg/m3": 1000.0}
_VOLUME: dict[str, float] = {"ppb": 1.0, "ppm": 1000.0}
UNITS: tuple[str, ...] = ("ug/m3", "mg/m3", "ppb", "ppm")

_ALIASES: dict[str, str] = {
    "µg/m³": "ug/m3",  # U+00B5 micro sign
    "μg/m³": "ug/m3",  # U+03BC Greek mu, which keyboards also produce
    "µg/m3": "ug/m3",
    "μg/m3": "ug/m3",
    "mg/m³": "mg/m3",
}

# Kota stores PM and NO2/O3/SO2 in µg/m³ and CO in mg/m³ (the catalogue's canonical units).
KOTA_UNIT: dict[str, str] = {
    "pm2_5": "ug/m3",
    "pm10": "ug/m3",
    "o3": "ug/m3",
    "no2": "ug/m3",
    "so2": "ug/m3",
    "co": "mg/m3",
}


def normalise_unit(unit: str) -> str:
    """Map an accepted spelling to its unit id, or raise ValueError listing valid ids."""
    uid = _ALIASES.get(unit.strip(), unit.strip())
    if uid not in UNITS:
        raise ValueError(
            f"unknown unit {unit!r}; valid units: {', '.join(UNITS)} (also µg/m³, mg/m³)"
        )
    return uid


def conversion_factor(pollutant: str, unit: str, native: str) -> float:
    """Multiplier taking a concentration in `unit` to the table's `native` unit."""
    src, dst = normalise_unit(unit), normalise_unit(native)
    if src in _MASS and dst in _MASS:
        return _MASS[src] / _MASS[dst]
    if src in _VOLUME and dst in _VOLUME:
        return _VOLUME[src] / _VOLUME[dst]
    if pollutant not in MOLAR_MASS:
        # Particles have no molar mass: a mixing ratio cannot describe them.
        raise ValueError(f"unit {unit!r} is not valid for {pollutant}; use ug/m3 or mg/m3")
    mass = MOLAR_MASS[pollutant]
    if src in _VOLUME:
        return _VOLUME[src] * mass / MOLAR_VOLUME_L / _MASS[dst]
    return _MASS[src] * MOLAR_VOLUME_L / mass / _VOLUME[dst]
