"""AQI engine: sub-indices for six air-quality index standards (us_epa, th_pcd, vn_aqi,
sg_psi, my_api, id_ispu), from breakpoint tables kept as data.

Owns: the breakpoint tables (one module per standard under `standards/`, each citing
its source and edition), the scalar engine (`sub_index`, `overall_index`), the PM
NowCast, the Vietnam daily rules, and a polars expression form of the same tables.
May import: the standard library everywhere; polars only in `polars_expr` (loaded
lazily below), so `import indicators.aqi` works on an edge device without polars.
Does not own: `indicators/__init__.py` or the batch indicator jobs.
Docs: docs/aqi.md.
"""

from __future__ import annotations

from typing import Any

from indicators.aqi.engine import OverallIndex, SubIndex, overall_index, sub_index
from indicators.aqi.model import AVERAGINGS, POLLUTANTS, Standard
from indicators.aqi.nowcast import nowcast
from indicators.aqi.tables import STANDARDS, catalogue, get_standard
from indicators.aqi.units import KOTA_UNIT, UNITS
from indicators.aqi.vietnam import vn_daily_index

__all__ = [
    "AVERAGINGS",
    "KOTA_UNIT",
    "POLLUTANTS",
    "STANDARDS",
    "UNITS",
    "OverallIndex",
    "Standard",
    "SubIndex",
    "catalogue",
    "category_expr",
    "get_standard",
    "nowcast",
    "overall_index",
    "sub_index",
    "sub_index_expr",
    "vn_daily_index",
]

_POLARS_NAMES = ("sub_index_expr", "category_expr")


def __getattr__(name: str) -> Any:
    # The expression helpers need polars; import it only when someone asks for them.
    if name in _POLARS_NAMES:
        from indicators.aqi import polars_expr

        return getattr(polars_expr, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
