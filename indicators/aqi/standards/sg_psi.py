"""Singapore Pollutant Standards Index, NEA (PM2.5 added 1 April 2014) (data only).

Source: National Environment Agency, "Computation of the Pollutant Standards Index
(PSI)" (haze.gov.sg FAQ PDF), which lists one concentration per PSI level 0, 50, 100,
200, 300, 400, 500 (a continuous piecewise-linear scale; the reference file's ranges
such as "13-55" are a rounded rendering of the same anchors).
Checked: the PM2.5 anchors (0, 12, 55, 150, 250, 350, 500) and PM10 anchors (0, 50,
150, 350, 420, 500, 600) against independent code quoting the NEA PDF, which settles
the reference's UNCONFIRMED PM10 101-200 row as 150-350 µg/m³. The switch rules (O3
8h -> 1h; NO2 reported only above 1130 µg/m³) match openaq/aqi-hub. UNCONFIRMED (kept
from the reference): SO2, CO, O3 and NO2 anchors; whether 8-hour O3 also defines
PSI 200-300 (openaq says "8-hour O3 above 785 switches to 1-hour", the reference puts
236-785 in the 1-hour column - we follow the reference); colours; rounding (half-up).
"""

from __future__ import annotations

from indicators.aqi.model import AboveScale, Category, PollutantTable, Standard, anchors

SOURCE = "Singapore NEA, Computation of the Pollutant Standards Index (PSI), PM2.5 included from 1 Apr 2014"

_LEVELS = (0, 50, 100, 200, 300, 400, 500)
_UNCONFIRMED = "UNCONFIRMED: anchors kept from the reference; NEA PDF not re-read"


def _full(
    pollutant: str, averaging: str, unit: str, concentrations: tuple[float, ...], note: str
) -> PollutantTable:
    rows = anchors(list(zip(concentrations, _LEVELS, strict=False)))
    return PollutantTable(pollutant, averaging, unit, rows, decimals=None, source_note=note)


_TABLES = (
    _full("pm2_5", "24h", "ug/m3", (0, 12, 55, 150, 250, 350, 500), "confirmed"),
    _full("pm10", "24h", "ug/m3", (0, 50, 150, 350, 420, 500, 600), "confirmed"),
    _full("so2", "24h", "ug/m3", (0, 80, 365, 800, 1600, 2100, 2620), _UNCONFIRMED),
    _full("co", "8h", "mg/m3", (0, 5.0, 10.0, 17.0, 34.0, 46.0, 57.5), _UNCONFIRMED),
    PollutantTable(
        "o3",
        "8h",
        "ug/m3",
        anchors([(0, 0), (118, 50), (157, 100), (235, 200)]),
        decimals=None,
        above=AboveScale(
            "undefined",
            note="8-hour O3 above 235 ug/m3 defines no PSI here: use the 1-hour O3 value",
        ),
        source_note=_UNCONFIRMED,
    ),
    PollutantTable(
        "o3",
        "1h",
        "ug/m3",
        anchors([(235, 200), (785, 300), (980, 400), (1180, 500)]),
        decimals=None,
        below_note="1-hour O3 is used only above 235 ug/m3 (PSI > 200): use the 8-hour O3 value",
        source_note=_UNCONFIRMED,
    ),
    PollutantTable(
        "no2",
        "1h",
        "ug/m3",
        anchors([(1130, 200), (2260, 300), (3000, 400), (3750, 500)]),
        decimals=None,
        below_note="NEA reports the NO2 sub-index only above 1130 ug/m3 (PSI > 200)",
        source_note=_UNCONFIRMED,
    ),
)

STANDARD = Standard(
    id="sg_psi",
    name="Singapore Pollutant Standards Index (NEA)",
    source=SOURCE,
    categories=(
        # Band names from NEA; hex colours are Kota's display choice (UNCONFIRMED).
        Category(0, 50, "Good", "#00E400"),
        Category(51, 100, "Moderate", "#FFFF00"),
        Category(101, 200, "Unhealthy", "#FF7E00"),
        Category(201, 300, "Very unhealthy", "#FF0000"),
        Category(301, None, "Hazardous", "#7E0023"),
    ),
    tables=_TABLES,
)
