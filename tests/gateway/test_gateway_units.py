"""Every unit conversion against hand-computed values (literals, not recomputed formulas)."""

from __future__ import annotations

import pytest

from gateway.schema.quantities import QUANTITIES
from gateway.units import ALIASES, UNITS, IncompatibleUnit, conversion, convert, resolve_unit

# (quantity, value, unit, expected canonical value) - worked by hand:
#   gases at 25 °C, 1 atm: µg/m³ = ppb × M / 24.45
CASES = [
    # particulates: every spelling of µg/m³ is the identity
    ("pm2_5", 12.5, "ug/m3", 12.5),
    ("pm2_5", 12.5, "µg/m³", 12.5),  # micro sign U+00B5, superscript three
    ("pm2_5", 12.5, "μg/m3", 12.5),  # Greek small mu U+03BC
    ("pm2_5", 12.5, "µg/m3", 12.5),
    ("pm10", 0.05, "mg/m3", 50.0),
    ("pm10", 0.05, "mg/m³", 50.0),
    ("pm1", 2500.0, "ng/m3", 2.5),
    # NO2 M = 46.01: 100 × 46.01 / 24.45 = 188.1800
    ("no2", 100.0, "ppb", 188.1800),
    ("no2", 0.1, "ppm", 188.1800),
    ("no2", 1.0, "mg/m3", 1000.0),
    # SO2 M = 64.07: 10 × 64.07 / 24.45 = 26.2045
    ("so2", 10.0, "ppb", 26.2045),
    ("so2", 10.0, "[ppb]", 26.2045),
    # O3 M = 48.00: 50 × 48 / 24.45 = 98.1595; 0.1 ppm = 100 ppb = 196.3190
    ("o3", 50.0, "ppb", 98.1595),
    ("o3", 0.1, "ppm", 196.3190),
    # CO M = 28.01, canonical mg/m³: 1 ppm = 28.01 / 24.45 = 1.1456 mg/m³
    ("co", 1.0, "ppm", 1.1456),
    ("co", 1000.0, "ppb", 1.1456),
    ("co", 1000.0, "ug/m3", 1.0),
    ("co", 2.0, "mg/m3", 2.0),
    # CO2 M = 44.01, canonical ppm: 1800 mg/m³ × 24.45 / 44.01 = 1000.0 ppm
    ("co2", 1800.0, "mg/m3", 1000.0),
    ("co2", 420.0, "ppm", 420.0),
    ("co2", 420000.0, "ppb", 420.0),
    # temperature
    ("temperature", 86.0, "[degF]", 30.0),
    ("temperature", 86.0, "°F", 30.0),
    ("temperature", 32.0, "degF", 0.0),
    ("temperature", -40.0, "°F", -40.0),
    ("temperature", 30.0, "°C", 30.0),
    ("temperature", 30.0, "degC", 30.0),
    ("temperature", 30.0, "Cel", 30.0),
    ("temperature", 300.0, "K", 26.85),
    # humidity / occupancy
    ("relative_humidity", 55.0, "%", 55.0),
    ("relative_humidity", 0.55, "1", 55.0),
    ("lane_occupancy", 12.0, "%", 12.0),
    # particle counts per 0.1 L
    ("particles_0_3", 1500.0, "/0.1L", 1500.0),
    ("particles_0_3", 1500.0, "/dL", 1500.0),
    ("particles_0_3", 1000.0, "/L", 100.0),
    ("particles_2_5", 2.0, "/cm3", 200.0),
    # counts
    ("vehicle_count", 42.0, "{vehicle}", 42.0),
    ("vehicle_count_car", 7.0, "vehicles", 7.0),
    # energy: 1500 W.h = 1.5 kW.h
    ("active_energy_import", 1500.0, "W.h", 1.5),
    ("active_energy_import", 1500.0, "Wh", 1.5),
    ("active_energy_import", 1.5, "kWh", 1.5),
    ("active_energy_import", 1.5, "kW.h", 1.5),
    ("active_energy_export", 2.0, "MWh", 2000.0),
    ("active_energy_import", 3600.0, "kJ", 1.0),
    # power
    ("active_power", 2.5, "kW", 2500.0),
    ("active_power", -350.0, "W", -350.0),
    # volume: 250 L = 0.25 m³
    ("water_volume", 250.0, "L", 0.25),
    ("water_volume", 250.0, "l", 0.25),
    ("water_volume", 12.0, "m³", 12.0),
    ("water_volume", 12.0, "m3", 12.0),
    ("water_volume", 100.0, "gal", 0.3785411784),
    # flow: 100 L/min = 6 m³/h; 1 L/s = 3.6 m³/h
    ("water_flow", 100.0, "L/min", 6.0),
    ("water_flow", 1.0, "L/s", 3.6),
    ("water_flow", 3.0, "m3/h", 3.0),
    ("water_flow", 500.0, "L/h", 0.5),
    # speed: 10 m/s = 36 km/h; 60 mph = 96.56064 km/h
    ("vehicle_speed", 10.0, "m/s", 36.0),
    ("vehicle_speed", 60.0, "[mi_i]/h", 96.56064),
    ("vehicle_speed", 60.0, "mph", 96.56064),
    ("vehicle_speed", 50.0, "km/h", 50.0),
    ("vehicle_speed", 10.0, "[kn_i]", 18.52),
    # electrical
    ("voltage", 230.0, "V", 230.0),
    ("voltage", 230000.0, "mV", 230.0),
    ("current", 1500.0, "mA", 1.5),
    ("current", 4.2, "A", 4.2),
    ("frequency", 50.0, "Hz", 50.0),
]


@pytest.mark.parametrize(("quantity", "value", "unit", "expected"), CASES)
def test_conversion_matches_hand_computed_value(
    quantity: str, value: float, unit: str, expected: float
) -> None:
    assert convert(quantity, value, unit) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [
        ("pm2_5", "ppb"),  # no molar mass for particles
        ("temperature", "%"),
        ("water_volume", "m3/h"),  # volume vs flow
        ("active_energy_import", "W"),  # energy vs power
        ("vehicle_speed", "Hz"),
        ("pm2_5", "furlongs"),  # unknown unit
        ("not_a_quantity", "ug/m3"),
        ("co2", "%"),
    ],
)
def test_incompatible_units_have_no_conversion(quantity: str, unit: str) -> None:
    assert conversion(quantity, unit) is None
    with pytest.raises(IncompatibleUnit):
        convert(quantity, 1.0, unit)


def test_every_catalogue_unit_is_in_the_table_and_converts_to_itself() -> None:
    for q in QUANTITIES.values():
        assert q.ucum in UNITS, q.name
        conv = conversion(q.name, q.ucum)
        assert conv is not None and (conv.factor, conv.offset, conv.unit) == (1.0, 0.0, q.ucum)


def test_aliases_resolve_to_known_codes_and_strip_whitespace() -> None:
    assert all(code in UNITS for code in ALIASES.values())
    assert resolve_unit(" ug/m3 ") == "ug/m3"
    assert resolve_unit("µg/m³") == resolve_unit("μg/m3") == "ug/m3"
    assert resolve_unit("nonsense") is None
