"""Thailand AQI, Pollution Control Department, PM2.5 bands revised 1 June 2023 (data only).

Source: PCD announcement on the Thai AQI (pcd.go.th, July 2023; AIR4THAI "AQI info").
Checked: the five AQI levels 0-25 / 26-50 / 51-100 / 101-200 / >200 and the PM2.5 bands
(standard 37.5 µg/m³, red level from 75.1 µg/m³) against thailand.go.th and Thai PBS
World (June 2023/2024 reports). UNCONFIRMED: the PM10, O3, CO, SO2 and NO2 rows (kept
from the reference file, the pre-2023 PCD table which the 2023 revision did not change),
the display colours, and the truncation of concentrations (PCD states none; we
truncate to the table's resolution so that no value falls between two rows).
Above 200 the table has no upper concentration; the PCD's own calculator reports 201
for every concentration in the top band (per openaq/aqi-hub docs/indices/thailand.md):
UNCONFIRMED, kept as the fixed value 201 with status "above_scale".
"""

from __future__ import annotations

from indicators.aqi.model import AboveScale, Category, PollutantTable, Standard, bands

SOURCE = "Thailand Pollution Control Department, Thai AQI (PM2.5 bands revised 1 June 2023)"

_TOP = AboveScale(
    "fixed",
    fixed_index=201,
    note="top band (AQI > 200) has no upper concentration: reported as 201",
)
_UNCONFIRMED = "UNCONFIRMED: pre-2023 PCD row kept from the reference; not re-checked against the 2023 announcement"

_TABLES = (
    PollutantTable(
        "pm2_5",
        "24h",
        "ug/m3",
        bands(
            [
                (0.0, 15.0, 0, 25),
                (15.1, 25.0, 26, 50),
                (25.1, 37.5, 51, 100),
                (37.6, 75.0, 101, 200),
            ]
        ),
        decimals=1,
        above=_TOP,
        source_note="2023 revision; confirmed (see module docstring)",
    ),
    PollutantTable(
        "pm10",
        "24h",
        "ug/m3",
        bands([(0, 50, 0, 25), (51, 80, 26, 50), (81, 120, 51, 100), (121, 180, 101, 200)]),
        decimals=0,
        above=_TOP,
        source_note=_UNCONFIRMED,
    ),
    PollutantTable(
        "o3",
        "8h",
        "ppb",
        bands([(0, 35, 0, 25), (36, 50, 26, 50), (51, 70, 51, 100), (71, 120, 101, 200)]),
        decimals=0,
        above=_TOP,
        source_note=_UNCONFIRMED,
    ),
    PollutantTable(
        "co",
        "8h",
        "ppm",
        bands([(0.0, 4.4, 0, 25), (4.5, 6.4, 26, 50), (6.5, 9.0, 51, 100), (9.1, 30.0, 101, 200)]),
        decimals=1,
        above=_TOP,
        source_note=_UNCONFIRMED,
    ),
    PollutantTable(
        "so2",
        "1h",
        "ppb",
        bands([(0, 100, 0, 25), (101, 200, 26, 50), (201, 300, 51, 100), (301, 400, 101, 200)]),
        decimals=0,
        above=_TOP,
        source_note=_UNCONFIRMED,
    ),
    PollutantTable(
        "no2",
        "1h",
        "ppb",
        bands([(0, 60, 0, 25), (61, 106, 26, 50), (107, 170, 51, 100), (171, 340, 101, 200)]),
        decimals=0,
        above=_TOP,
        source_note=_UNCONFIRMED,
    ),
)

STANDARD = Standard(
    id="th_pcd",
    name="Thailand AQI (PCD, 2023 PM2.5 revision)",
    source=SOURCE,
    categories=(
        # Colours follow AIR4THAI's blue/green/yellow/orange/red; hex values UNCONFIRMED.
        Category(0, 25, "Very good", "#3BCCFF"),
        Category(26, 50, "Good", "#92D050"),
        Category(51, 100, "Moderate", "#FFFF00"),
        Category(101, 200, "Starting to affect health", "#FFA200"),
        Category(201, None, "Affects health", "#F04646"),
    ),
    tables=_TABLES,
    notes=("Index rounded half-up (UNCONFIRMED: PCD states no rounding rule).",),
)
