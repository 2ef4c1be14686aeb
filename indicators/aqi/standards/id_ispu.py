"""Indonesia ISPU, Permen LHK P.14/MENLHK/SETJEN/KUM.1/7/2020 (data only).

Source: Peraturan Menteri LHK No. P.14/MENLHK/SETJEN/KUM.1/7/2020 tentang Indeks
Standar Pencemar Udara, Lampiran Tabel 2 "Batas dan konversi nilai konsentrasi
parameter ISPU" (all 24-hour, µg/m³, CO included) and Tabel 1 (categories, colours
hijau / biru / kuning / merah / hitam).
Checked: every value against a full-text copy of the regulation (123dok, "Permen LHK
Nomor 14 Tahun 2020"); NO2 at ISPU 100 is 200 µg/m³ (a public data file's "2000" is a
typo). The regulation gives one upper concentration per ISPU level, read here as
anchors of a continuous line; openaq/aqi-hub instead infers discrete lower bounds
(+1 or +0.1), which shifts results by up to one index point at band starts.
UNCONFIRMED: which of those two readings KLHK uses, the hex colours, rounding (half-up).
HC (hydrocarbons) is in the regulation but not a Kota quantity, so it is omitted.
"""

from __future__ import annotations

from indicators.aqi.model import Category, PollutantTable, Standard, anchors

SOURCE = "Indonesia Permen LHK P.14/MENLHK/SETJEN/KUM.1/7/2020 on ISPU, Lampiran Tabel 2"

_LEVELS = (0, 50, 100, 200, 300, 500)


def _table(pollutant: str, concentrations: tuple[float, ...]) -> PollutantTable:
    rows = anchors(list(zip(concentrations, _LEVELS, strict=False)))
    return PollutantTable(pollutant, "24h", "ug/m3", rows, decimals=None)


STANDARD = Standard(
    id="id_ispu",
    name="Indonesia ISPU (P.14/2020)",
    source=SOURCE,
    categories=(
        # The regulation labels bands 1-50 ... 201-300 and ">= 300"; 0 is put in Good and
        # 300 in Very unhealthy so the bands do not overlap.
        Category(0, 50, "Good", "#00B050"),
        Category(51, 100, "Moderate", "#0070C0"),
        Category(101, 200, "Unhealthy", "#FFFF00"),
        Category(201, 300, "Very unhealthy", "#FF0000"),
        Category(301, None, "Hazardous", "#000000"),
    ),
    tables=(
        _table("pm10", (0, 50, 150, 350, 420, 500)),
        _table("pm2_5", (0, 15.5, 55.4, 150.4, 250.4, 500)),
        _table("so2", (0, 52, 180, 400, 800, 1200)),
        _table("co", (0, 4000, 8000, 15000, 30000, 45000)),
        _table("o3", (0, 120, 235, 400, 800, 1000)),
        _table("no2", (0, 80, 200, 1130, 2260, 3000)),
    ),
)
