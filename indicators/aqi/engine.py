"""Scalar AQI engine: one concentration -> one sub-index, and the overall index.

Owns: the lookup rules shared with the polars expression (truncation, row choice,
linear interpolation, half-up rounding, above/below-scale handling) and the result
dataclasses. May import: the standard library and this package's data modules only -
never polars, so edge devices can compute an index without the server extra.

Rules, in order: unknown ids raise ValueError (one line, valid ids listed); a
standard without this (pollutant, averaging) -> status "not_defined"; None/NaN/inf ->
"no_data"; negative after unit conversion -> "below_zero"; truncate to the table's
resolution; below the table's first row -> "not_defined" (the table's note says which
averaging to use); inside the table -> "ok"; above the top row -> "above_scale" with the
table's AboveScale rule (extrapolate on the top slope, a fixed index, or no index).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from indicators.aqi.model import POLLUTANTS, PollutantTable, Standard
from indicators.aqi.tables import check_averaging, check_pollutant, get_standard
from indicators.aqi.units import KOTA_UNIT, conversion_factor, normalise_unit

# Absorbs binary representation error (a product landing at 90.99999... instead of 91)
# in truncation and in half-up rounding; the polars expression adds the same constant
# in the same place.
EPS = 1e-9

Reading = tuple[float | None, str, str | None]


@dataclass(frozen=True)
class SubIndex:
    """One pollutant's sub-index and how it was reached."""

    standard: str
    pollutant: str
    averaging: str
    concentration_native: float | None
    unit_native: str | None
    index: int | None
    category: str | None
    colour: str | None
    status: str
    note: str = ""


@dataclass(frozen=True)
class OverallIndex:
    """The maximum sub-index, its pollutant, and every sub-index considered."""

    standard: str
    index: int | None
    category: str | None
    colour: str | None
    dominant: str | None
    sub_indices: tuple[SubIndex, ...]


def grid_scale(decimals: int | None) -> float:
    return 1.0 if decimals is None else 10.0**decimals


def on_grid(native: float, decimals: int | None) -> float:
    """The concentration in steps of the table's resolution, truncated (cut, not rounded).

    With decimals=1, 35.45 -> 354.0. Comparing and interpolating on this integer grid
    avoids dividing back (polars divides by a scalar via its reciprocal, which is not
    correctly rounded), so the scalar and polars paths see identical numbers.
    """
    if decimals is None:
        return native
    return float(math.floor(native * grid_scale(decimals) + EPS))


@dataclass(frozen=True)
class GridRow:
    """A breakpoint row on the truncation grid: integer bounds when the table truncates."""

    lo: float
    hi: float
    slope: float
    i_lo: int


@cache
def grid_rows(table: PollutantTable) -> tuple[GridRow, ...]:
    scale = grid_scale(table.decimals)
    rows = []
    for row in table.rows:
        lo, hi = row.c_lo, row.c_hi
        if table.decimals is not None:
            lo, hi = float(round(lo * scale)), float(round(hi * scale))
        rows.append(GridRow(lo, hi, (row.i_hi - row.i_lo) / (hi - lo), row.i_lo))
    return tuple(rows)


def round_half_up(raw: float) -> int:
    return math.floor(raw + 0.5 + EPS)


def interpolate(row: GridRow, c: float) -> int:
    """I = (I_hi - I_lo) / (C_hi - C_lo) * (C - C_lo) + I_lo, rounded half-up."""
    return round_half_up(row.slope * (c - row.lo) + row.i_lo)


def resolve_unit(pollutant: str, unit: str | None) -> str:
    """The unit id to read `concentration` in (Kota's canonical unit when None), validated."""
    uid = normalise_unit(unit if unit is not None else KOTA_UNIT[pollutant])
    conversion_factor(pollutant, uid, KOTA_UNIT[pollutant])  # rejects ppb/ppm for particles
    return uid


def sub_index(
    standard: str,
    pollutant: str,
    concentration: float | None,
    averaging: str,
    unit: str | None = None,
) -> SubIndex:
    """The sub-index of one concentration; `unit` None means Kota's canonical unit."""
    std = get_standard(standard)
    check_pollutant(pollutant)
    check_averaging(averaging)
    uid = resolve_unit(pollutant, unit)
    table = std.table(pollutant, averaging)
    if table is None:
        defined = ", ".join(std.averagings(pollutant)) or "none"
        note = (
            f"{std.id} defines no {pollutant} {averaging} sub-index (defined averagings: {defined})"
        )
        return _result(std, pollutant, averaging, None, None, None, "not_defined", note)
    if concentration is None or not math.isfinite(concentration):
        return _result(
            std,
            pollutant,
            averaging,
            None,
            table.unit,
            None,
            "no_data",
            "missing or non-finite value",
        )
    native = concentration * conversion_factor(pollutant, uid, table.unit)
    if native < 0:
        return _result(
            std,
            pollutant,
            averaging,
            native,
            table.unit,
            None,
            "below_zero",
            "negative concentration",
        )
    return _lookup(std, table, native)


def _lookup(std: Standard, table: PollutantTable, native: float) -> SubIndex:
    c = on_grid(native, table.decimals)
    shown = c / grid_scale(table.decimals)  # the truncated concentration, for reporting only
    rows = grid_rows(table)
    if c < rows[0].lo:
        return _result(
            std,
            table.pollutant,
            table.averaging,
            shown,
            table.unit,
            None,
            "not_defined",
            table.below_note,
        )
    for row in rows:
        if c <= row.hi:
            index = interpolate(row, c)
            return _result(
                std, table.pollutant, table.averaging, shown, table.unit, index, "ok", ""
            )
    index_above = _above(table, c)
    return _result(
        std,
        table.pollutant,
        table.averaging,
        shown,
        table.unit,
        index_above,
        "above_scale",
        table.above.note,
    )


def _above(table: PollutantTable, c: float) -> int | None:
    rule = table.above
    if rule.mode == "extrapolate":
        return interpolate(grid_rows(table)[-1], c)
    if rule.mode == "fixed":
        return rule.fixed_index
    return None


def _result(
    std: Standard,
    pollutant: str,
    averaging: str,
    concentration: float | None,
    unit: str | None,
    index: int | None,
    status: str,
    note: str,
) -> SubIndex:
    category = std.category(index) if index is not None else None
    return SubIndex(
        standard=std.id,
        pollutant=pollutant,
        averaging=averaging,
        concentration_native=concentration,
        unit_native=unit,
        index=index,
        category=category.name if category else None,
        colour=category.colour if category else None,
        status=status,
        note=note,
    )


def overall_index(
    standard: str, readings: Mapping[str, Reading | Sequence[Reading]]
) -> OverallIndex:
    """Max sub-index over {pollutant: (conc, averaging, unit)} or a list of such tuples.

    A list lets one pollutant carry several averagings (US O3 1h and 8h: the larger
    counts). Ties go to the earlier pollutant in POLLUTANTS order (pm2_5 first).
    """
    subs: list[SubIndex] = []
    for pollutant in sorted(readings, key=_pollutant_order):
        for conc, averaging, unit in _as_list(readings[pollutant]):
            subs.append(sub_index(standard, pollutant, conc, averaging, unit))
    return combine(get_standard(standard), subs)


def combine(std: Standard, subs: Sequence[SubIndex]) -> OverallIndex:
    """The OverallIndex of already computed sub-indices (first maximum wins)."""
    best: SubIndex | None = None
    for sub in subs:
        if sub.index is not None and (best is None or best.index is None or sub.index > best.index):
            best = sub
    index = best.index if best else None
    category = std.category(index) if index is not None else None
    return OverallIndex(
        standard=std.id,
        index=index,
        category=category.name if category else None,
        colour=category.colour if category else None,
        dominant=best.pollutant if best else None,
        sub_indices=tuple(subs),
    )


def _pollutant_order(pollutant: str) -> int:
    check_pollutant(pollutant)
    return POLLUTANTS.index(pollutant)


def _as_list(value: Reading | Sequence[Reading]) -> list[Reading]:
    if value and isinstance(value[0], tuple | list):
        return [cast(Reading, tuple(v)) for v in cast(Sequence[Sequence[Any]], value)]
    return [cast(Reading, value)]
