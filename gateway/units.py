"""Table-driven unit conversion into the quantity catalogue's canonical units.

Three tables do all the work:

* ``ALIASES``: every spelling a device may send (``µg/m³``, ``ug/m3``, ``μg/m3`` with a Greek
  mu, ``°F``, ``kWh`` ...) -> one UCUM code.
* ``UNITS``: UCUM code -> (dimension, scale, offset) with ``base = value * scale + offset`` in
  the dimension's base unit. Two units convert when they share a dimension.
* ``MOLAR_MASS``: gases whose mixing ratio (ppb/ppm) converts to a mass concentration
  (µg/m³, mg/m³) at 25 °C and 1 atm: ``µg/m³ = ppb × M / 24.45`` (M in g/mol), the
  convention of US EPA and most ASEAN agencies.

A conversion is ``canonical = value * factor + offset``. ``conversion(quantity, unit)`` returns
it, or None when the unit cannot express that quantity (the gateway dead-letters the row as
``incompatible_unit``). Results are cached: the hot path looks up a handful of distinct
(quantity, unit) pairs per batch, never one per reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from gateway.schema.quantities import QUANTITIES

#: Molar volume of an ideal gas at 25 °C and 1 atm (L/mol).
MOLAR_VOLUME_25C = 24.45

#: Molecular weights (g/mol) of the gases reported either as mixing ratio or mass concentration.
MOLAR_MASS: dict[str, float] = {
    "no2": 46.01,
    "so2": 64.07,
    "o3": 48.00,
    "co": 28.01,
    "co2": 44.01,
}

# UCUM code -> (dimension, scale, offset): base = value * scale + offset.
# Base units: mass_conc µg/m³, mixing ppb, temperature °C, fraction %, count_conc per dL,
# count 1, energy kWh, power W, volume m³, flow m³/h, speed km/h, voltage V, current A,
# frequency Hz.
UNITS: dict[str, tuple[str, float, float]] = {
    "ug/m3": ("mass_conc", 1.0, 0.0),
    "mg/m3": ("mass_conc", 1000.0, 0.0),
    "ng/m3": ("mass_conc", 0.001, 0.0),
    "ppb": ("mixing", 1.0, 0.0),
    "ppm": ("mixing", 1000.0, 0.0),
    "Cel": ("temperature", 1.0, 0.0),
    "[degF]": ("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "K": ("temperature", 1.0, -273.15),
    "%": ("fraction", 1.0, 0.0),
    "1": ("fraction", 100.0, 0.0),
    "/dL": ("count_conc", 1.0, 0.0),
    "/L": ("count_conc", 0.1, 0.0),
    "/cm3": ("count_conc", 100.0, 0.0),
    "{vehicle}": ("count", 1.0, 0.0),
    "W.h": ("energy", 0.001, 0.0),
    "kW.h": ("energy", 1.0, 0.0),
    "MW.h": ("energy", 1000.0, 0.0),
    "kJ": ("energy", 1.0 / 3600.0, 0.0),
    "MJ": ("energy", 1000.0 / 3600.0, 0.0),
    "W": ("power", 1.0, 0.0),
    "kW": ("power", 1000.0, 0.0),
    "MW": ("power", 1.0e6, 0.0),
    "m3": ("volume", 1.0, 0.0),
    "L": ("volume", 0.001, 0.0),
    "[gal_us]": ("volume", 0.003785411784, 0.0),
    "m3/h": ("flow", 1.0, 0.0),
    "L/min": ("flow", 0.06, 0.0),
    "L/s": ("flow", 3.6, 0.0),
    "L/h": ("flow", 0.001, 0.0),
    "m3/s": ("flow", 3600.0, 0.0),
    "km/h": ("speed", 1.0, 0.0),
    "m/s": ("speed", 3.6, 0.0),
    "[mi_i]/h": ("speed", 1.609344, 0.0),
    "[kn_i]": ("speed", 1.852, 0.0),
    "V": ("voltage", 1.0, 0.0),
    "mV": ("voltage", 0.001, 0.0),
    "kV": ("voltage", 1000.0, 0.0),
    "A": ("current", 1.0, 0.0),
    "mA": ("current", 0.001, 0.0),
    "Hz": ("frequency", 1.0, 0.0),
}

# Spelling -> UCUM code. Every UCUM code is also its own alias (added below).
ALIASES: dict[str, str] = {
    # mass concentration: micro sign U+00B5, Greek mu U+03BC, ASCII u; superscript or plain 3
    "µg/m³": "ug/m3",
    "µg/m3": "ug/m3",
    "μg/m³": "ug/m3",
    "μg/m3": "ug/m3",
    "ug/m³": "ug/m3",
    "ug/m^3": "ug/m3",
    "ug m-3": "ug/m3",
    "ugm3": "ug/m3",
    "mg/m³": "mg/m3",
    "mg/m^3": "mg/m3",
    "ng/m³": "ng/m3",
    # mixing ratio
    "[ppb]": "ppb",
    "PPB": "ppb",
    "[ppm]": "ppm",
    "PPM": "ppm",
    # temperature
    "°C": "Cel",
    "℃": "Cel",
    "degC": "Cel",
    "C": "Cel",
    "celsius": "Cel",
    "°F": "[degF]",
    "℉": "[degF]",
    "degF": "[degF]",
    "F": "[degF]",
    "fahrenheit": "[degF]",
    # fractions
    "percent": "%",
    "pct": "%",
    "%RH": "%",
    "fraction": "1",
    # particle counts per 0.1 L
    "/0.1L": "/dL",
    "#/0.1L": "/dL",
    "1/dL": "/dL",
    "#/dL": "/dL",
    "/100mL": "/dL",
    "#/L": "/L",
    "1/L": "/L",
    "#/cm3": "/cm3",
    "#/cm³": "/cm3",
    "/cm³": "/cm3",
    # counts
    "{vehicles}": "{vehicle}",
    "{veh}": "{vehicle}",
    "vehicle": "{vehicle}",
    "vehicles": "{vehicle}",
    "veh": "{vehicle}",
    "{count}": "{vehicle}",
    # energy
    "Wh": "W.h",
    "kWh": "kW.h",
    "MWh": "MW.h",
    # volume and flow
    "m³": "m3",
    "l": "L",
    "dm3": "L",
    "gal": "[gal_us]",
    "m³/h": "m3/h",
    "l/min": "L/min",
    "lpm": "L/min",
    "l/s": "L/s",
    "l/h": "L/h",
    "m³/s": "m3/s",
    # speed
    "kmh": "km/h",
    "kph": "km/h",
    "km/hr": "km/h",
    "[mi_i]/h": "[mi_i]/h",
    "mph": "[mi_i]/h",
    "kn": "[kn_i]",
    "knot": "[kn_i]",
}
for _code in UNITS:
    ALIASES.setdefault(_code, _code)


@dataclass(frozen=True, slots=True)
class Conversion:
    """``canonical = value * factor + offset``; ``unit`` is the canonical UCUM code."""

    unit: str
    factor: float
    offset: float


def resolve_unit(spelling: str) -> str | None:
    """The UCUM code of a unit spelling, or None when unknown."""
    code = ALIASES.get(spelling)
    if code is None:
        code = ALIASES.get(spelling.strip())
    return code


def _linear(src: str, dst: str) -> tuple[float, float] | None:
    s_dim, s_scale, s_off = UNITS[src]
    d_dim, d_scale, d_off = UNITS[dst]
    if s_dim != d_dim:
        return None
    return s_scale / d_scale, (s_off - d_off) / d_scale


def _gas(quantity: str, src: str, dst: str) -> tuple[float, float] | None:
    """Mixing ratio <-> mass concentration at 25 °C, 1 atm for a gas with a molar mass."""
    mass = MOLAR_MASS.get(quantity)
    if mass is None:
        return None
    s_dim, s_scale, _ = UNITS[src]
    d_dim, d_scale, _ = UNITS[dst]
    ug_per_ppb = mass / MOLAR_VOLUME_25C  # 1 ppb = M/24.45 µg/m³
    if s_dim == "mixing" and d_dim == "mass_conc":
        return s_scale * ug_per_ppb / d_scale, 0.0
    if s_dim == "mass_conc" and d_dim == "mixing":
        return s_scale / ug_per_ppb / d_scale, 0.0
    return None


@cache
def conversion(quantity: str, unit: str) -> Conversion | None:
    """How to bring `unit` to `quantity`'s canonical unit; None if it cannot be done.

    Unknown quantities also give None (the caller reports `unknown_quantity` first).
    """
    q = QUANTITIES.get(quantity)
    code = resolve_unit(unit)
    if q is None or code is None or q.ucum not in UNITS:
        return None
    pair = _linear(code, q.ucum) or _gas(quantity, code, q.ucum)
    if pair is None:
        return None
    factor, offset = pair
    return Conversion(q.ucum, factor, offset)


class IncompatibleUnit(ValueError):
    """The unit cannot express the quantity (or one of them is unknown)."""


def convert(quantity: str, value: float, unit: str) -> float:
    """One value to the canonical unit (for tools and tests; batches use `conversion`)."""
    conv = conversion(quantity, unit)
    if conv is None:
        raise IncompatibleUnit(f"cannot convert {unit!r} to the canonical unit of {quantity!r}")
    return value * conv.factor + conv.offset


def units_table() -> list[tuple[str, str, str]]:
    """(spelling, UCUM code, dimension) rows, for documentation."""
    return sorted((alias, code, UNITS[code][0]) for alias, code in ALIASES.items())
