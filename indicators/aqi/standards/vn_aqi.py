"""Vietnam VN_AQI, Decision 1459/QD-TCMT of 12 November 2019 (data only).

Source: General Department of Environment, Decision 1459/QD-TCMT (2019), Table 1
(categories, colours) and Table 2 (breakpoints BP_i for I_i = 0, 50, 100, 150, 200,
300, 400, 500; all in µg/m³, CO included). Checked: every row against independent
implementations of Table 2 (GitHub code quoting "Bảng 2 ... QĐ 1459", identical values)
and openaq/aqi-hub docs/indices/vietnam.md. Colours: the Decision uses the EPA RGB
triplets (0,228,0 ... 126,0,35). UNCONFIRMED: the rounding rule (the Decision's text
only says the AQI is an integer; transcriptions disagree: rounded, truncated, and a
worked example that implies rounding up) - we round half-up.
No truncation of concentrations: the Decision states none and the rows are continuous.
Above the top breakpoint we extrapolate on the top row's slope (the Decision defines
nothing beyond 500).
"""

from __future__ import annotations

from indicators.aqi.model import (
    EXTRAPOLATE,
    AboveScale,
    Category,
    PollutantTable,
    Standard,
    anchors,
    rename,
)

SOURCE = "Vietnam General Department of Environment, Decision 1459/QD-TCMT (12 Nov 2019)"

_LEVELS = (0, 50, 100, 150, 200, 300, 400, 500)


def _table(
    pollutant: str,
    averaging: str,
    concentrations: tuple[float, ...],
    above: AboveScale = EXTRAPOLATE,
) -> PollutantTable:
    points = list(zip(concentrations, _LEVELS, strict=False))
    return PollutantTable(
        pollutant, averaging, "ug/m3", anchors(points), decimals=None, above=above
    )


_PM2_5 = _table("pm2_5", "24h", (0, 25, 50, 80, 150, 250, 350, 500))
_PM10 = _table("pm10", "24h", (0, 50, 150, 250, 350, 420, 500, 600))

_TABLES = (
    _PM2_5,
    rename(_PM2_5, "nowcast"),
    _PM10,
    rename(_PM10, "nowcast"),
    _table("o3", "1h", (0, 160, 200, 300, 400, 800, 1000, 1200)),
    _table(
        "o3",
        "8h",
        (0, 100, 120, 170, 210, 400),
        # The Decision: when the day's max 8-hour O3 exceeds 400 µg/m³, use only the 1-hour value.
        above=AboveScale(
            "undefined", note="8-hour O3 above 400 ug/m3 is not used: use the 1-hour O3 value"
        ),
    ),
    _table("co", "1h", (0, 10000, 30000, 45000, 60000, 90000, 120000, 150000)),
    _table("so2", "1h", (0, 125, 350, 550, 800, 1600, 2100, 2630)),
    _table("no2", "1h", (0, 100, 200, 700, 1200, 2350, 3100, 3850)),
)

STANDARD = Standard(
    id="vn_aqi",
    name="Vietnam VN_AQI (Decision 1459/QD-TCMT, 2019)",
    source=SOURCE,
    categories=(
        Category(0, 50, "Good", "#00E400"),
        Category(51, 100, "Moderate", "#FFFF00"),
        Category(101, 150, "Poor", "#FF7E00"),
        Category(151, 200, "Bad", "#FF0000"),
        Category(201, 300, "Very bad", "#8F3F97"),
        Category(301, None, "Hazardous", "#7E0023"),
    ),
    tables=_TABLES,
    notes=(
        "Hourly: PM by 12-hour NowCast, gases by the 1-hour value (O3 by 1-hour only).",
        "Daily: see indicators.aqi.vietnam.vn_daily_index.",
    ),
)
