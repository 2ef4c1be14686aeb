"""VN_AQI daily index from a day's hourly values (Decision 1459/QD-TCMT, section 2.2).

Owns: the daily aggregation rules. May import: the standard library and this
package's scalar engine.

Rules: PM2.5 and PM10 by the 24-hour mean; NO2, SO2 and CO by the day's maximum
1-hour value; O3 by the larger of the sub-indices of the day's maximum 1-hour value and
maximum 8-hour mean, where the 8-hour sub-index is skipped when that mean exceeds
400 µg/m³ (the O3 8h table's above-scale rule returns no index there).
Completeness is not stated in the Decision; Kota's choice (UNCONFIRMED): a daily mean
needs 18 of 24 hours, an 8-hour mean 6 of 8 hours, and only windows inside the day
(hours 0-7 ... 16-23) are used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from indicators.aqi.engine import OverallIndex, SubIndex, combine, sub_index
from indicators.aqi.tables import get_standard
from indicators.aqi.units import KOTA_UNIT

MIN_DAILY_HOURS = 18
MIN_8H_HOURS = 6


def vn_daily_index(
    hourly: Mapping[str, Sequence[float | None]],
    units: Mapping[str, str] | None = None,
) -> OverallIndex:
    """Daily VN_AQI from {pollutant: the day's 24 hourly means, hour 0 first}.

    `units` maps pollutant -> unit id (default: Kota's canonical unit per pollutant).
    """
    subs: list[SubIndex] = []
    for pollutant, values in hourly.items():
        unit = (units or {}).get(pollutant, KOTA_UNIT.get(pollutant, "ug/m3"))
        subs.extend(_daily_sub_indices(pollutant, list(values), unit))
    return combine(get_standard("vn_aqi"), subs)


def _daily_sub_indices(pollutant: str, values: list[float | None], unit: str) -> list[SubIndex]:
    if pollutant in ("pm2_5", "pm10"):
        return [sub_index("vn_aqi", pollutant, daily_mean(values), "24h", unit)]
    if pollutant == "o3":
        return [
            sub_index("vn_aqi", "o3", _max(values), "1h", unit),
            sub_index("vn_aqi", "o3", max_8h_mean(values), "8h", unit),
        ]
    return [sub_index("vn_aqi", pollutant, _max(values), "1h", unit)]


def daily_mean(values: Sequence[float | None]) -> float | None:
    present = _clean(values)
    return sum(present) / len(present) if len(present) >= MIN_DAILY_HOURS else None


def max_8h_mean(values: Sequence[float | None]) -> float | None:
    """Largest mean of 8 consecutive hours within the day (each window needs 6 values)."""
    means = []
    for start in range(0, max(len(values) - 7, 0)):
        window = _clean(values[start : start + 8])
        if len(window) >= MIN_8H_HOURS:
            means.append(sum(window) / len(window))
    return max(means) if means else None


def _max(values: Sequence[float | None]) -> float | None:
    present = _clean(values)
    return max(present) if present else None


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]
