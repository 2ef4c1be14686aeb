"""US EPA Air Quality Index, 2024 PM2.5 revision (data only).

Source: US EPA, "Technical Assistance Document for the Reporting of Daily Air Quality -
the Air Quality Index (AQI)", EPA-454/B-24-002, May 2024 (Table 6 breakpoints, Table 2
colours), implementing the PM NAAQS final rule effective 6 May 2024 (89 FR 16202).
Checked: PM2.5 rows 0.0-9.0 / 9.1-35.4 / 35.5-55.4 / 55.5-125.4 / 125.5-225.4 / 225.5+
and all lower breakpoints of every pollutant against openaq/aqi-hub docs/data/us/
breakpoints.csv (2024 table, Hazardous shown as one 301+ row). The upper ends of the
merged Hazardous row (PM2.5 325.4, PM10 604, CO 50.4, O3 1h 0.604, SO2 1004, NO2 2049
-> 500) are the old 401-500 tops; several 2024 implementations quote the same
"301-500: 225.5-325.4" row. AQI above 500 continues on the Hazardous slope (2024 TAD
footnote as quoted by those implementations; the TAD text was not read directly).
Truncation: PM2.5 0.1 µg/m³, PM10 1 µg/m³, O3 0.001 ppm, CO 0.1 ppm, SO2 and NO2 1 ppb.
"""

from __future__ import annotations

from indicators.aqi.model import (
    EXTRAPOLATE,
    AboveScale,
    Category,
    PollutantTable,
    Standard,
    bands,
    rename,
)

SOURCE = "US EPA, Technical Assistance Document for the Reporting of Daily Air Quality - the AQI, EPA-454/B-24-002 (May 2024)"

_PM2_5 = PollutantTable(
    "pm2_5",
    "24h",
    "ug/m3",
    bands(
        [
            (0.0, 9.0, 0, 50),
            (9.1, 35.4, 51, 100),
            (35.5, 55.4, 101, 150),
            (55.5, 125.4, 151, 200),
            (125.5, 225.4, 201, 300),
            (225.5, 325.4, 301, 500),
        ]
    ),
    decimals=1,
    above=EXTRAPOLATE,
)

_PM10 = PollutantTable(
    "pm10",
    "24h",
    "ug/m3",
    bands(
        [
            (0, 54, 0, 50),
            (55, 154, 51, 100),
            (155, 254, 101, 150),
            (255, 354, 151, 200),
            (355, 424, 201, 300),
            (425, 604, 301, 500),
        ]
    ),
    decimals=0,
)

_O3_8H = PollutantTable(
    "o3",
    "8h",
    "ppm",
    bands(
        [
            (0.000, 0.054, 0, 50),
            (0.055, 0.070, 51, 100),
            (0.071, 0.085, 101, 150),
            (0.086, 0.105, 151, 200),
            (0.106, 0.200, 201, 300),
        ]
    ),
    decimals=3,
    # The TAD: 8-hour O3 does not define AQI values above 300; use the 1-hour value.
    above=AboveScale(
        "undefined", note="8-hour O3 above 0.200 ppm defines no AQI: use the 1-hour O3 value"
    ),
)

_O3_1H = PollutantTable(
    "o3",
    "1h",
    "ppm",
    bands(
        [
            (0.125, 0.164, 101, 150),
            (0.165, 0.204, 151, 200),
            (0.205, 0.404, 201, 300),
            (0.405, 0.604, 301, 500),
        ]
    ),
    decimals=3,
    below_note="1-hour O3 below 0.125 ppm defines no AQI: use the 8-hour O3 value",
)

_CO = PollutantTable(
    "co",
    "8h",
    "ppm",
    bands(
        [
            (0.0, 4.4, 0, 50),
            (4.5, 9.4, 51, 100),
            (9.5, 12.4, 101, 150),
            (12.5, 15.4, 151, 200),
            (15.5, 30.4, 201, 300),
            (30.5, 50.4, 301, 500),
        ]
    ),
    decimals=1,
)

_SO2_1H = PollutantTable(
    "so2",
    "1h",
    "ppb",
    bands([(0, 35, 0, 50), (36, 75, 51, 100), (76, 185, 101, 150), (186, 304, 151, 200)]),
    decimals=0,
    # The TAD: 1-hour SO2 defines AQI up to 200; at 305 ppb and above use the 24-hour average.
    above=AboveScale(
        "undefined",
        note="1-hour SO2 at or above 305 ppb defines no AQI: use the 24-hour SO2 average",
    ),
)

_SO2_24H = PollutantTable(
    "so2",
    "24h",
    "ppb",
    bands([(305, 604, 201, 300), (605, 1004, 301, 500)]),
    decimals=0,
    below_note="24-hour SO2 below 305 ppb defines no AQI: use the 1-hour SO2 value",
)

_NO2 = PollutantTable(
    "no2",
    "1h",
    "ppb",
    bands(
        [
            (0, 53, 0, 50),
            (54, 100, 51, 100),
            (101, 360, 101, 150),
            (361, 649, 151, 200),
            (650, 1249, 201, 300),
            (1250, 2049, 301, 500),
        ]
    ),
    decimals=0,
)

STANDARD = Standard(
    id="us_epa",
    name="US EPA Air Quality Index (2024 PM2.5 revision)",
    source=SOURCE,
    categories=(
        Category(0, 50, "Good", "#00E400"),
        Category(51, 100, "Moderate", "#FFFF00"),
        Category(101, 150, "Unhealthy for Sensitive Groups", "#FF7E00"),
        Category(151, 200, "Unhealthy", "#FF0000"),
        Category(201, 300, "Very Unhealthy", "#8F3F97"),
        # The 2024 TAD names the top band "301 and higher".
        Category(301, None, "Hazardous", "#7E0023"),
    ),
    tables=(
        _PM2_5,
        rename(_PM2_5, "nowcast"),
        _PM10,
        rename(_PM10, "nowcast"),
        _O3_8H,
        _O3_1H,
        _CO,
        _SO2_1H,
        _SO2_24H,
        _NO2,
    ),
    notes=(
        "Index rounded half-up to the nearest integer after truncating the concentration.",
        "Where both 1-hour and 8-hour O3 exist, report the larger sub-index (overall_index takes the max).",
    ),
)
