"""Vectorised sub-index and category as polars expressions, from the SAME tables.

Owns: the translation of a `PollutantTable` into a pl.when/then chain that mirrors
`engine.sub_index` operation for operation (same factor, same truncation grid, same
slope literal, same half-up rounding, no division), so both give identical integers.
May import: the standard library, polars, and this package's data/engine modules.
Statuses are not carried: every non-"ok"/"above_scale"-with-index case is null.
"""

from __future__ import annotations

import polars as pl

from indicators.aqi.engine import EPS, GridRow, grid_rows, grid_scale, resolve_unit
from indicators.aqi.model import PollutantTable
from indicators.aqi.tables import check_averaging, check_pollutant, get_standard
from indicators.aqi.units import conversion_factor

_NULL_INDEX = pl.lit(None, dtype=pl.Int64)


def sub_index_expr(
    standard: str,
    pollutant: str,
    averaging: str,
    conc_col: pl.Expr,
    unit: str | None = "ug/m3",
) -> pl.Expr:
    """Int64 sub-index of `conc_col` (read in `unit`); null wherever sub_index gives None."""
    std = get_standard(standard)
    check_pollutant(pollutant)
    check_averaging(averaging)
    uid = resolve_unit(pollutant, unit)
    table = std.table(pollutant, averaging)
    if table is None:
        # A column-dependent predicate keeps the result as long as conc_col (a bare
        # literal would collapse a select to one row).
        return pl.when(conc_col.is_null()).then(_NULL_INDEX).otherwise(_NULL_INDEX)
    native = conc_col.cast(pl.Float64) * conversion_factor(pollutant, uid, table.unit)
    return _index_chain(table, native)


def category_expr(standard: str, index_expr: pl.Expr) -> pl.Expr:
    """Category name of an index expression (null for a null index)."""
    std = get_standard(standard)
    chain: pl.Expr = pl.lit(None, dtype=pl.String)
    for category in reversed(std.categories):
        within = index_expr >= category.i_lo
        if category.i_hi is not None:
            within = within & (index_expr <= category.i_hi)
        chain = pl.when(within).then(pl.lit(category.name)).otherwise(chain)
    return chain


def _on_grid(table: PollutantTable, native: pl.Expr) -> pl.Expr:
    if table.decimals is None:
        return native
    return (native * grid_scale(table.decimals) + EPS).floor()


def _index_of(row: GridRow, c: pl.Expr) -> pl.Expr:
    raw = (c - row.lo) * row.slope + float(row.i_lo)
    # strict=False: an extrapolated index beyond Int64 becomes null instead of raising.
    return (raw + 0.5 + EPS).floor().cast(pl.Int64, strict=False)


def _index_chain(table: PollutantTable, native: pl.Expr) -> pl.Expr:
    c = _on_grid(table, native)
    rows = grid_rows(table)
    invalid = native.is_null() | native.is_nan() | native.is_infinite() | (native < 0)
    chain = pl.when(invalid).then(_NULL_INDEX).when(c < rows[0].lo).then(_NULL_INDEX)
    for row in rows:
        chain = chain.when(c <= row.hi).then(_index_of(row, c))
    return chain.otherwise(_above(table, c))


def _above(table: PollutantTable, c: pl.Expr) -> pl.Expr:
    rule = table.above
    if rule.mode == "extrapolate":
        return _index_of(grid_rows(table)[-1], c)
    if rule.mode == "fixed":
        return pl.lit(rule.fixed_index, dtype=pl.Int64)
    return _NULL_INDEX
