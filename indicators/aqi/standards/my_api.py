"""Malaysia Air Pollutant Index, Department of Environment (data only).

Source: DOE Malaysia, "Air Pollutant Index (API) Calculation" (apims.doe.gov.my
API_Calculation.pdf), sub-index equations as reproduced in Table 1 of Heliyon 8(3)
e09157 (2022), "Source: Malaysian Department of Environment".
Checked: PM10, CO, O3, NO2 and SO2 anchors and averaging periods against that table
(e.g. CO <9 ppm: API = 11.11111 x conc; NO2 0.17-0.6 ppm: 100 + 232.56 x (conc - 0.17)).
The DOE equations are open-ended above their last anchor; the rows up to index 500 and
our extrapolation above them follow the DOE's last slope exactly (PM10 >500: 400 +
(conc - 500); CO >30: 300 + 10 x (conc - 30); O3 >0.4: 300 + 1000 x (conc - 0.4);
NO2 >1.2: 300 + 250 x (conc - 1.2); SO2 >0.6: 300 + 500 x (conc - 0.6)).
UNCONFIRMED: PM2.5 (added 2018; rows taken from a third-party implementation that
cites "DOE API_Calculation.pdf page 10", not read here), colours, rounding (half-up).
"""

from __future__ import annotations

from indicators.aqi.model import Category, PollutantTable, Standard, anchors, bands

SOURCE = "Malaysia DOE, Air Pollutant Index (API) Calculation (apims.doe.gov.my), as tabulated in Heliyon 8 (2022) e09157 Table 1"

_TABLES = (
    PollutantTable(
        "pm2_5",
        "24h",
        "ug/m3",
        bands(
            [
                (0.0, 12.0, 0, 50),
                (12.1, 75.4, 51, 100),
                (75.5, 150.4, 101, 200),
                (150.5, 250.4, 201, 300),
                (250.5, 350.4, 301, 400),
                (350.5, 500.4, 401, 500),
            ]
        ),
        decimals=1,
        source_note="UNCONFIRMED: third-party transcription of the DOE PDF",
    ),
    PollutantTable(
        "pm10",
        "24h",
        "ug/m3",
        anchors([(0, 0), (50, 50), (150, 100), (350, 200), (420, 300), (500, 400), (600, 500)]),
        decimals=None,
    ),
    PollutantTable(
        "co",
        "8h",
        "ppm",
        anchors([(0, 0), (9, 100), (15, 200), (30, 300), (50, 500)]),
        decimals=None,
    ),
    PollutantTable(
        "o3", "1h", "ppm", anchors([(0, 0), (0.2, 200), (0.4, 300), (0.6, 500)]), decimals=None
    ),
    PollutantTable(
        "no2",
        "1h",
        "ppm",
        anchors([(0, 0), (0.17, 100), (0.6, 200), (1.2, 300), (2.0, 500)]),
        decimals=None,
    ),
    PollutantTable(
        "so2",
        "24h",
        "ppm",
        anchors([(0, 0), (0.04, 100), (0.3, 200), (0.6, 300), (1.0, 500)]),
        decimals=None,
    ),
)

STANDARD = Standard(
    id="my_api",
    name="Malaysia Air Pollutant Index (DOE)",
    source=SOURCE,
    categories=(
        # DOE bands; colours follow APIMS blue/green/yellow/orange/red, hex UNCONFIRMED.
        Category(0, 50, "Good", "#0000FF"),
        Category(51, 100, "Moderate", "#00B050"),
        Category(101, 200, "Unhealthy", "#FFFF00"),
        Category(201, 300, "Very unhealthy", "#FFA500"),
        Category(301, None, "Hazardous", "#FF0000"),
    ),
    tables=_TABLES,
    notes=("API above 500 is reported as computed (DOE: a state of emergency is declared).",),
)
