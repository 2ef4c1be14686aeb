"""Scalar engine: truncation, unit conversion, scale edges, bad ids, overall index."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from indicators.aqi import STANDARDS, overall_index, sub_index


@pytest.mark.parametrize(
    ("conc", "expected"),
    [
        (35.45, 100),  # truncated to 35.4, the top of Moderate
        (35.5, 101),
        (9.0, 50),
        (9.09, 50),  # truncated to 9.0
        (9.1, 51),  # 9.1 * 10 is 90.999... in binary: must still truncate to 9.1
        (225.49, 300),
        (225.5, 301),
        (325.4, 500),
    ],
)
def test_aqi_epa_pm25_truncation(conc: float, expected: int) -> None:
    assert sub_index("us_epa", "pm2_5", conc, "24h").index == expected


def test_aqi_epa_truncation_of_o3_and_co() -> None:
    assert sub_index("us_epa", "o3", 0.0709, "8h", "ppm").index == 100  # -> 0.070
    assert sub_index("us_epa", "o3", 0.0549, "8h", "ppm").index == 50  # -> 0.054
    assert sub_index("us_epa", "co", 9.49, "8h", "ppm").index == 100  # -> 9.4


def test_aqi_no2_ppb_and_ugm3_agree() -> None:
    # 100 ppb x 46.01 / 24.45 = 188.18 ug/m3; 188.2 ug/m3 -> 100.009 ppb -> 100 ppb.
    in_ppb = sub_index("us_epa", "no2", 100, "1h", "ppb")
    in_ugm3 = sub_index("us_epa", "no2", 188.2, "1h", "ug/m3")
    assert in_ppb.index == in_ugm3.index == 100
    assert in_ugm3.concentration_native == 100.0
    assert in_ugm3.unit_native == "ppb"


def test_aqi_gas_conversions_by_hand() -> None:
    # CO 10 mg/m3 (Kota's unit) -> 10 x 24.45 / 28.01 = 8.729 ppm -> 8.7; 51 + 10 x 4.2 = 93.
    co = sub_index("us_epa", "co", 10.0, "8h")
    assert (co.concentration_native, co.index) == (8.7, 93)
    # SO2 200 ug/m3 -> 200 x 24.45 / 64.07 = 76.32 ppb -> 76 ppb -> 101.
    assert sub_index("us_epa", "so2", 200, "1h").index == 101
    # VN tables are in ug/m3: NO2 100 ppb = 188.18 ug/m3, row 100-200 -> 50 + 0.5 x 88.18 = 94.1 -> 94.
    assert sub_index("vn_aqi", "no2", 100, "1h", "ppb").index == 94
    # CO 10 mg/m3 = 10000 ug/m3, the VN 50 breakpoint.
    assert sub_index("vn_aqi", "co", 10, "1h", "mg/m3").index == 50
    # O3 0.1 ppm = 196.3 ug/m3 (x 48.00 / 24.45): SG 8h 157-235 -> 100 + 100/78 x 39.3 = 150.4 -> 150.
    assert sub_index("sg_psi", "o3", 0.1, "8h", "ppm").index == 150


@pytest.mark.parametrize("unit", ["µg/m³", "μg/m³", "ug/m3", "µg/m3"])
def test_aqi_unit_spellings(unit: str) -> None:
    assert sub_index("us_epa", "pm2_5", 35.5, "24h", unit).index == 101


def test_aqi_mg_m3_for_particles() -> None:
    assert sub_index("us_epa", "pm2_5", 0.0355, "24h", "mg/m³").index == 101


def test_aqi_above_scale_extrapolates_on_top_slope() -> None:
    # 301 + 199/99.9 x (400 - 225.5) = 301 + 347.60 = 648.6 -> 649
    r = sub_index("us_epa", "pm2_5", 400, "24h")
    assert (r.index, r.status, r.category) == (649, "above_scale", "Hazardous")


def test_aqi_malaysia_above_scale_matches_doe_open_ended_equations() -> None:
    # DOE: PM10 > 500: API = 400 + (conc - 500); CO > 30 ppm: API = 300 + 10 x (conc - 30).
    assert sub_index("my_api", "pm10", 700, "24h").index == 600
    assert sub_index("my_api", "co", 60, "8h", "ppm").index == 600
    assert sub_index("my_api", "pm10", 700, "24h").status == "above_scale"


def test_aqi_thailand_top_band_is_201() -> None:
    r = sub_index("th_pcd", "pm2_5", 80, "24h")
    assert (r.index, r.status, r.category) == (201, "above_scale", "Affects health")
    assert sub_index("th_pcd", "pm2_5", 75.05, "24h").index == 200  # truncated to 75.0


@pytest.mark.parametrize(
    ("standard", "pollutant", "conc", "averaging", "unit", "hint"),
    [
        ("us_epa", "o3", 0.25, "8h", "ppm", "1-hour"),
        ("us_epa", "so2", 400, "1h", "ppb", "24-hour"),
        ("vn_aqi", "o3", 450, "8h", "ug/m3", "1-hour"),
        ("sg_psi", "o3", 300, "8h", "ug/m3", "1-hour"),
    ],
)
def test_aqi_above_scale_hands_over_to_other_averaging(
    standard: str, pollutant: str, conc: float, averaging: str, unit: str, hint: str
) -> None:
    r = sub_index(standard, pollutant, conc, averaging, unit)
    assert (r.index, r.status) == (None, "above_scale")
    assert hint in r.note


def test_aqi_epa_so2_24h_high_range() -> None:
    # 201 + 99/299 x (400 - 305) = 201 + 31.45 = 232.45 -> 232
    assert sub_index("us_epa", "so2", 400, "24h", "ppb").index == 232


@pytest.mark.parametrize(
    ("standard", "pollutant", "conc", "averaging", "unit"),
    [
        ("sg_psi", "no2", 500, "1h", "ug/m3"),  # NEA reports NO2 only above 1130
        ("us_epa", "o3", 0.1, "1h", "ppm"),  # 1-hour O3 starts at 0.125
        ("us_epa", "so2", 100, "24h", "ppb"),  # 24-hour SO2 starts at 305
    ],
)
def test_aqi_below_table_start_is_not_defined(
    standard: str, pollutant: str, conc: float, averaging: str, unit: str
) -> None:
    r = sub_index(standard, pollutant, conc, averaging, unit)
    assert (r.index, r.status) == (None, "not_defined")
    assert r.note


def test_aqi_negative_missing_and_non_finite() -> None:
    assert sub_index("us_epa", "pm2_5", -0.5, "24h").status == "below_zero"
    assert sub_index("us_epa", "pm2_5", -0.5, "24h").index is None
    for value in (None, math.nan, math.inf, -math.inf):
        r = sub_index("vn_aqi", "pm10", value, "24h")
        assert (r.index, r.status) == (None, "no_data")
    assert sub_index("us_epa", "pm2_5", 0.0, "24h").index == 0


@pytest.mark.parametrize(
    ("standard", "pollutant", "averaging"),
    [
        ("us_epa", "pm2_5", "1h"),
        ("th_pcd", "o3", "1h"),
        ("id_ispu", "co", "8h"),
        ("sg_psi", "pm2_5", "nowcast"),
    ],
)
def test_aqi_undefined_combination(standard: str, pollutant: str, averaging: str) -> None:
    r = sub_index(standard, pollutant, 10, averaging)
    assert (r.index, r.category, r.status) == (None, None, "not_defined")
    assert "defined averagings" in r.note


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        (("nope", "pm2_5", 1.0, "24h", None), "us_epa, th_pcd, vn_aqi, sg_psi, my_api, id_ispu"),
        (("us_epa", "pm25", 1.0, "24h", None), "pm2_5, pm10, o3, no2, so2, co"),
        (("us_epa", "pm2_5", 1.0, "2h", None), "1h, 8h, 24h, nowcast"),
        (("us_epa", "pm2_5", 1.0, "24h", "g/m3"), "ug/m3, mg/m3, ppb, ppm"),
    ],
)
def test_aqi_bad_ids_raise_one_line_value_error(args: tuple, listed: str) -> None:
    with pytest.raises(ValueError) as err:
        sub_index(*args)
    assert listed in str(err.value)
    assert "\n" not in str(err.value)


def test_aqi_particles_reject_mixing_ratio_units() -> None:
    with pytest.raises(ValueError, match="not valid for pm2_5"):
        sub_index("us_epa", "pm2_5", 10, "24h", "ppb")


def test_aqi_overall_index_takes_max_and_names_dominant() -> None:
    result = overall_index(
        "us_epa",
        {
            "pm2_5": (40.0, "24h", None),  # 101 + 49/19.9 x 4.5 = 112.1 -> 112
            "o3": [(0.08, "8h", "ppm"), (0.2, "1h", "ppm")],  # 8h 133, 1h 151 + 49/39 x 35 = 195
            "no2": (None, "1h", "ppb"),
        },
    )
    assert (result.index, result.dominant, result.category) == (195, "o3", "Unhealthy")
    assert [s.index for s in result.sub_indices] == [112, 133, 195, None]


def test_aqi_overall_index_ties_and_empty() -> None:
    tie = overall_index("vn_aqi", {"pm10": (50, "24h", None), "pm2_5": (25, "24h", None)})
    assert (tie.index, tie.dominant) == (50, "pm2_5")
    empty = overall_index("vn_aqi", {"pm10": (None, "24h", None)})
    assert (empty.index, empty.dominant, empty.category) == (None, None, None)


def test_aqi_categories_cover_every_index_without_overlap() -> None:
    for std in STANDARDS.values():
        for index in range(0, 1001):
            matches = [c for c in std.categories if c.contains(index)]
            assert len(matches) == 1, (std.id, index)


def test_aqi_scalar_engine_imports_without_polars() -> None:
    code = (
        "import sys; sys.modules['polars'] = None\n"
        "from indicators.aqi import sub_index\n"
        "assert sub_index('us_epa', 'pm2_5', 35.5, '24h').index == 101\n"
        "import indicators.aqi_cli\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
