"""EPA NowCast for hourly PM (also used by VN_AQI for PM2.5 and PM10).

Owns: the 12-hour weighted average. May import: the standard library only.

Rules (EPA TAD 2024 "How the NowCast is calculated"; Decision 1459/QD-TCMT section 2.1):
- input: hourly means, most recent first; only the first 12 are used; None/NaN/inf are
  missing hours;
- valid only if at least 2 of the 3 most recent hours are present, else None;
- w* = c_min / c_max over the present hours, w = max(w*, 0.5) for PM;
  (all hours <= 0 -> w = 1, a plain mean, since the ratio is then meaningless);
- NowCast = sum(w**(i-1) * c_i) / sum(w**(i-1)) over present hours (i = 1 most recent).
The result is not truncated here; `sub_index` truncates with the standard's rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NOWCAST_HOURS = 12
MIN_WEIGHT = 0.5
NOWCAST_POLLUTANTS: tuple[str, ...] = ("pm2_5", "pm10")


def nowcast(
    hourly_values_most_recent_first: Sequence[float | None], pollutant: str
) -> float | None:
    """The PM NowCast of up to 12 hourly values, or None when too few recent hours exist."""
    if pollutant not in NOWCAST_POLLUTANTS:
        raise ValueError(
            f"NowCast is defined for {', '.join(NOWCAST_POLLUTANTS)} only, not {pollutant!r}"
        )
    window = [_present(v) for v in list(hourly_values_most_recent_first)[:NOWCAST_HOURS]]
    if sum(v is not None for v in window[:3]) < 2:
        return None
    present = [(i, v) for i, v in enumerate(window) if v is not None]
    weight = _weight([v for _, v in present])
    numerator = sum(weight**i * v for i, v in present)
    denominator = sum(weight**i for i, _ in present)
    return numerator / denominator


def _present(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _weight(values: list[float]) -> float:
    c_max, c_min = max(values), min(values)
    if c_max <= 0:
        return 1.0
    return max(c_min / c_max, MIN_WEIGHT)
