"""PM NowCast (EPA method, also VN_AQI) and the Vietnam daily rules."""

from __future__ import annotations

import math

import pytest

from indicators.aqi import nowcast, sub_index, vn_daily_index

# EPA/AirNow training example "Computing the NowCast": 12 hourly PM2.5 values, oldest
# first 50 80 75 90 82 53 64 74 21 10 16 13; range/max = 80/90 so w = 1 - 0.89 < 0.5
# -> 0.5; (13 + 16/2 + 10/4 + 21/8 + 74/16 + ...) / (1 + 1/2 + ... + 1/2**11) = 17.4.
EPA_EXAMPLE_OLDEST_FIRST = [50, 80, 75, 90, 82, 53, 64, 74, 21, 10, 16, 13]

# Decision 1459/QD-TCMT worked example (as transcribed by openaq/aqi-hub): 9:00..20:00
# PM2.5, w = 17.5/30.2 = 0.579 > 0.5, NowCast reported as 21.4 ug/m3.
VN_EXAMPLE_OLDEST_FIRST = [30.2, 28.9, 23.4, 20.6, 21.7, 19.2, 20.4, 22.3, 17.5, 18.4, 26.3, 20.3]


def test_aqi_nowcast_epa_worked_example() -> None:
    value = nowcast(list(reversed(EPA_EXAMPLE_OLDEST_FIRST)), "pm2_5")
    assert value == pytest.approx(17.41392, abs=1e-5)
    r = sub_index("us_epa", "pm2_5", value, "nowcast")
    # truncated to 17.4; 51 + 49/26.3 x (17.4 - 9.1) = 51 + 15.46 = 66.5 -> 66
    assert (r.concentration_native, r.index) == (17.4, 66)


def test_aqi_nowcast_vietnam_worked_example() -> None:
    value = nowcast(list(reversed(VN_EXAMPLE_OLDEST_FIRST)), "pm2_5")
    assert value is not None
    # The Decision rounds w to 0.579 and the result to one decimal: 21.4.
    assert round(value, 1) == 21.4
    # VN: 50/25 x 21.396 = 42.8 -> 43 (no concentration truncation in VN_AQI)
    assert sub_index("vn_aqi", "pm2_5", value, "nowcast").index == 43


def test_aqi_nowcast_needs_two_of_three_most_recent_hours() -> None:
    assert nowcast([None, None, 10.0, 11.0, 12.0], "pm2_5") is None
    assert nowcast([None, 10.0, math.nan, 11.0], "pm10") is None
    assert nowcast([10.0, None, 12.0], "pm2_5") is not None
    assert nowcast([None, 10.0, 12.0], "pm2_5") is not None
    assert nowcast([], "pm2_5") is None


def test_aqi_nowcast_weights_by_hand() -> None:
    # w* = 10/100 -> floored at 0.5: (100 + 0.5 x 10) / 1.5 = 70
    assert nowcast([100.0, 10.0], "pm2_5") == pytest.approx(70.0)
    # w* = 20/30 = 2/3: (30 + 2/3 x 20) / (1 + 2/3) = 26
    assert nowcast([30.0, 20.0], "pm2_5") == pytest.approx(26.0)
    # missing hour 2 keeps its exponent: w = 0.5, (20 + 0.25 x 40) / (1 + 0.25) = 24
    assert nowcast([20.0, None, 40.0], "pm2_5") == pytest.approx(24.0)
    assert nowcast([0.0, 0.0, 0.0], "pm2_5") == 0.0


def test_aqi_nowcast_uses_only_twelve_hours() -> None:
    twelve = [float(v) for v in range(10, 22)]
    assert nowcast([*twelve, 1000.0, 1000.0], "pm2_5") == nowcast(twelve, "pm2_5")


def test_aqi_nowcast_rejects_gases() -> None:
    with pytest.raises(ValueError, match="pm2_5, pm10"):
        nowcast([1.0, 2.0], "o3")


def test_aqi_vn_daily_rules() -> None:
    o3 = [60.0] * 24
    o3[12:20] = [130.0] * 8
    o3[14] = 180.0  # max 1h 180 -> 50 + 50/40 x 20 = 75; also inside the best 8h window
    result = vn_daily_index(
        {
            "pm2_5": [30.0] * 24,  # 24h mean 30 -> 50 + 50/25 x 5 = 60
            "no2": [50.0] * 23 + [150.0],  # max 1h 150 -> 50 + 50/100 x 50 = 75
            "o3": o3,
        }
    )
    by = {(s.pollutant, s.averaging): s.index for s in result.sub_indices}
    # 8h window 12-19 mean = (7 x 130 + 180)/8 = 136.25 -> 100 + 50/50 x 16.25 = 116.25 -> 116
    assert by == {("pm2_5", "24h"): 60, ("no2", "1h"): 75, ("o3", "1h"): 75, ("o3", "8h"): 116}
    assert (result.index, result.dominant) == (116, "o3")


def test_aqi_vn_daily_skips_8h_o3_above_400() -> None:
    result = vn_daily_index({"o3": [450.0] * 24})
    one_hour, eight_hour = result.sub_indices
    # 1h 450: 200 + 100/400 x 50 = 212.5 -> 213 (half-up)
    assert (one_hour.index, eight_hour.index, eight_hour.status) == (213, None, "above_scale")
    assert result.index == 213


def test_aqi_vn_daily_needs_18_hours_for_pm() -> None:
    values: list[float | None] = [40.0] * 17 + [None] * 7
    result = vn_daily_index({"pm10": values})
    assert result.sub_indices[0].status == "no_data"
    assert result.index is None


def test_aqi_vn_daily_co_in_kota_mg_m3() -> None:
    # CO max 1h 10 mg/m3 = 10000 ug/m3 -> VN 50
    assert vn_daily_index({"co": [1.0] * 23 + [10.0]}).index == 50
