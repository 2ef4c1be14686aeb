"""Shared polars helpers for the jobs: the long output schema and period columns.

Owns: `LONG_SCHEMA` (what every job returns: city, indicator, period_type, period_start,
period_end, value, n_obs, completeness), `with_period` (local day -> period start/end/length)
and the 75 % completeness constants. May import: polars.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

MIN_HOURS_PER_DAY = 18  # a daily value needs 18 of 24 hourly values (75 %)
MIN_SHARE = 0.75  # a monthly/annual value needs 75 % of the period's days valid

LONG_SCHEMA: dict[str, pl.DataType] = {
    "city": pl.String(),
    "indicator": pl.String(),
    "period_type": pl.String(),
    "period_start": pl.Date(),
    "period_end": pl.Date(),
    "value": pl.Float64(),
    "n_obs": pl.Int64(),
    "completeness": pl.Float64(),
}


def with_period(lf: pl.LazyFrame, period_type: str, day: str = "day") -> pl.LazyFrame:
    """Add period_start, period_end (inclusive) and period_days for the local date `day`."""
    d = pl.col(day)
    if period_type == "day":
        start, end = d, d
    elif period_type == "month":
        start = d.dt.truncate("1mo")
        end = d.dt.month_end()
    elif period_type == "year":
        start = d.dt.truncate("1y")
        end = d.dt.truncate("1y").dt.offset_by("1y").dt.offset_by("-1d")
    else:
        raise ValueError(f"unknown period type {period_type!r}")
    return lf.with_columns(period_start=start, period_end=end).with_columns(
        period_days=((pl.col("period_end") - pl.col("period_start")).dt.total_days() + 1)
    )


def index_of(schema: pl.Schema, name: str, values: Sequence[str], dtype: pl.DataType) -> pl.Expr:
    """The position of column `name`'s value in `values` as `dtype` (null when absent).

    On an Enum column (source.coded) this is a gather by the physical code - no string is
    hashed; on String or Categorical columns a `replace_strict` on the values.
    """
    col = pl.col(name)
    current = schema.get(name)
    if isinstance(current, pl.Enum):
        pos = {v: i for i, v in enumerate(values)}
        table = pl.Series([pos.get(c) for c in current.categories], dtype=dtype)
        return pl.lit(table).gather(col.to_physical())
    return col.replace_strict(
        {v: i for i, v in enumerate(values)}, default=None, return_dtype=dtype
    )


def long_rows(lf: pl.LazyFrame, indicator: pl.Expr | str, period_type: str) -> pl.LazyFrame:
    """Select the LONG_SCHEMA columns from a frame with city/period/value/n_obs/completeness."""
    ind = pl.lit(indicator) if isinstance(indicator, str) else indicator
    return lf.select(
        pl.col("city").cast(pl.String),
        ind.cast(pl.String).alias("indicator"),
        pl.lit(period_type).alias("period_type"),
        pl.col("period_start").cast(pl.Date),
        pl.col("period_end").cast(pl.Date),
        pl.col("value").cast(pl.Float64),
        pl.col("n_obs").cast(pl.Int64),
        pl.col("completeness").cast(pl.Float64),
    )


def empty_long() -> pl.LazyFrame:
    return pl.LazyFrame(schema=LONG_SCHEMA)


# Deterministic sums and means. polars' parallel group_by adds partial float sums in an order
# that varies between runs, so the same input could give results differing in the last bit
# (and re-runs would not be byte-identical). Every float sum/mean in the jobs is therefore done
# in fixed point: value x 10^6 rounded to an integer (a millionth of the unit: far below any
# sensor's resolution), summed exactly as Int64, then divided once.
FIXED_SCALE = 1_000_000.0


def fixed(expr: pl.Expr) -> pl.Expr:
    return (expr * FIXED_SCALE).round().cast(pl.Int64)


def dsum(expr: pl.Expr) -> pl.Expr:
    """Order-independent sum (fixed point, see FIXED_SCALE)."""
    return fixed(expr).sum() / FIXED_SCALE


def dmean(expr: pl.Expr) -> pl.Expr:
    """Order-independent mean of the non-null values (null when there are none)."""
    n = expr.count()
    return pl.when(n > 0).then(fixed(expr).sum() / FIXED_SCALE / n)
