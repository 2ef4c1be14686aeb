"""The polars expressions agree with the scalar engine on every table.

Grid: for every (standard, pollutant, averaging) table, ~700 values spanning negatives,
each row's ends and their neighbours at the truncation step, the inside, and 1.5x the
top of the table (several thousand values in all), plus hypothesis-generated batches
with NaN, None and infinities, in several input units.
"""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indicators.aqi import STANDARDS, sub_index
from indicators.aqi.polars_expr import category_expr, sub_index_expr

TABLES = [
    (std.id, t.pollutant, t.averaging, t.unit) for std in STANDARDS.values() for t in std.tables
]


def _grid(standard: str, pollutant: str, averaging: str) -> list[float | None]:
    table = STANDARDS[standard].table(pollutant, averaging)
    assert table is not None
    step = 10.0**-table.decimals if table.decimals is not None else 0.01
    top = table.rows[-1].c_hi
    values: list[float | None] = [None, math.nan, math.inf, -1.0, -step, 0.0]
    for row in table.rows:
        for edge in (row.c_lo, row.c_hi):
            values += [edge - step, edge - step / 2, edge, edge + step / 2, edge + step]
    values += [top * 1.5 * k / 600 for k in range(601)]
    return values


def _both(
    standard: str, pollutant: str, averaging: str, unit: str, values: list[float | None]
) -> None:
    frame = pl.DataFrame({"c": values}, schema={"c": pl.Float64})
    got = frame.select(
        sub_index_expr(standard, pollutant, averaging, pl.col("c"), unit).alias("i")
    )["i"].to_list()
    want = [sub_index(standard, pollutant, v, averaging, unit).index for v in values]
    mismatches = [(v, g, w) for v, g, w in zip(values, got, want, strict=True) if g != w]
    assert mismatches == [], mismatches[:10]


@pytest.mark.parametrize(("standard", "pollutant", "averaging", "unit"), TABLES)
def test_aqi_expr_matches_scalar_on_grid(
    standard: str, pollutant: str, averaging: str, unit: str
) -> None:
    _both(standard, pollutant, averaging, unit, _grid(standard, pollutant, averaging))


@pytest.mark.parametrize(("standard", "pollutant", "averaging", "native"), TABLES)
def test_aqi_expr_matches_scalar_after_unit_conversion(
    standard: str, pollutant: str, averaging: str, native: str
) -> None:
    # Feed the grid in Kota's canonical unit instead of the table's native unit.
    unit = "mg/m3" if pollutant == "co" else "ug/m3"
    values = [v * 2.1 if v is not None else None for v in _grid(standard, pollutant, averaging)]
    _both(standard, pollutant, averaging, unit, values)


@settings(max_examples=150, deadline=None)
@given(
    table=st.sampled_from(TABLES),
    values=st.lists(
        st.one_of(
            st.none(),
            st.sampled_from([math.nan, math.inf, -math.inf]),
            st.floats(min_value=-50, max_value=1e5),
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_aqi_expr_matches_scalar_random(
    table: tuple[str, str, str, str], values: list[float | None]
) -> None:
    standard, pollutant, averaging, unit = table
    _both(standard, pollutant, averaging, unit, values)


def test_aqi_expr_undefined_combination_is_null() -> None:
    frame = pl.DataFrame({"c": [1.0, 50.0]})
    out = frame.select(sub_index_expr("us_epa", "pm2_5", "1h", pl.col("c")).alias("i"))["i"]
    assert out.dtype == pl.Int64
    assert out.to_list() == [None, None]


def test_aqi_expr_bad_id_raises() -> None:
    with pytest.raises(ValueError, match="valid standards"):
        sub_index_expr("xx", "pm2_5", "24h", pl.col("c"))


@pytest.mark.parametrize("standard", list(STANDARDS))
def test_aqi_category_expr_matches_categories(standard: str) -> None:
    std = STANDARDS[standard]
    indices = [None, *range(0, 801)]
    frame = pl.DataFrame({"i": indices}, schema={"i": pl.Int64})
    got = frame.select(category_expr(standard, pl.col("i")).alias("c"))["c"].to_list()
    want = [None if i is None else std.category(i).name for i in indices]  # type: ignore[union-attr]
    assert got == want


def test_aqi_expr_example_frame() -> None:
    frame = pl.DataFrame({"pm": [35.45, 35.5, 9.0, 9.1, 225.5, None, -1.0]})
    out = frame.with_columns(i=sub_index_expr("us_epa", "pm2_5", "24h", pl.col("pm"))).with_columns(
        cat=category_expr("us_epa", pl.col("i"))
    )
    assert out["i"].to_list() == [100, 101, 50, 51, 301, None, None]
    assert out["cat"].to_list()[:2] == ["Moderate", "Unhealthy for Sensitive Groups"]
