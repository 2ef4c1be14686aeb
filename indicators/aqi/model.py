"""Data model for AQI breakpoint tables (frozen dataclasses, no logic beyond lookups).

Owns: the shapes every standard's table is written in (`Breakpoint`, `Category`,
`AboveScale`, `PollutantTable`, `Standard`) and the two row builders (`bands`,
`anchors`). May import: the standard library only; the scalar engine and the polars
expression module both read these objects, so they must stay dependency-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

POLLUTANTS: tuple[str, ...] = ("pm2_5", "pm10", "o3", "no2", "so2", "co")
AVERAGINGS: tuple[str, ...] = ("1h", "8h", "24h", "nowcast")

AboveMode = Literal["extrapolate", "fixed", "undefined"]


@dataclass(frozen=True)
class Breakpoint:
    """One row: concentrations [c_lo, c_hi] (native unit) map linearly onto [i_lo, i_hi]."""

    c_lo: float
    c_hi: float
    i_lo: int
    i_hi: int


@dataclass(frozen=True)
class Category:
    """An index band with its published name and display colour (i_hi None = open-ended)."""

    i_lo: int
    i_hi: int | None
    name: str
    colour: str

    def contains(self, index: int) -> bool:
        return index >= self.i_lo and (self.i_hi is None or index <= self.i_hi)


@dataclass(frozen=True)
class AboveScale:
    """What a concentration above the top row's c_hi yields.

    extrapolate: continue the top row's line (index may exceed the top i_hi);
    fixed: report `fixed_index` (Thailand's open "201+" band);
    undefined: no index here, `note` says which averaging the standard uses instead.
    The status is always "above_scale", so callers can tell it from an in-table value.
    """

    mode: AboveMode
    fixed_index: int | None = None
    note: str = ""


EXTRAPOLATE = AboveScale(
    "extrapolate", note="beyond the top of the table: extrapolated on the top row's slope"
)


@dataclass(frozen=True)
class PollutantTable:
    """Breakpoint rows for one (pollutant, averaging) in the standard's native unit.

    decimals: truncate the concentration to 10**-decimals before lookup (None = no
    truncation); tables with gaps between rows (9.0 | 9.1) need the truncation so that
    no value falls between two rows.
    below_note: why there is no index below rows[0].c_lo when the table starts above 0.
    """

    pollutant: str
    averaging: str
    unit: str
    rows: tuple[Breakpoint, ...]
    decimals: int | None
    above: AboveScale = EXTRAPOLATE
    below_note: str = ""
    source_note: str = ""


@dataclass(frozen=True)
class Standard:
    """One index standard: its citation, categories and breakpoint tables."""

    id: str
    name: str
    source: str
    categories: tuple[Category, ...]
    tables: tuple[PollutantTable, ...]
    notes: tuple[str, ...] = field(default=())

    def table(self, pollutant: str, averaging: str) -> PollutantTable | None:
        for table in self.tables:
            if table.pollutant == pollutant and table.averaging == averaging:
                return table
        return None

    def averagings(self, pollutant: str) -> tuple[str, ...]:
        return tuple(t.averaging for t in self.tables if t.pollutant == pollutant)

    def category(self, index: int) -> Category | None:
        for category in self.categories:
            if category.contains(index):
                return category
        return None


def bands(rows: Sequence[tuple[float, float, int, int]]) -> tuple[Breakpoint, ...]:
    """Rows written as published ranges, e.g. (9.1, 35.4, 51, 100)."""
    return tuple(
        Breakpoint(float(c_lo), float(c_hi), i_lo, i_hi) for c_lo, c_hi, i_lo, i_hi in rows
    )


def anchors(points: Sequence[tuple[float, int]]) -> tuple[Breakpoint, ...]:
    """Rows from published anchor points (concentration -> index), joined end to end.

    Standards that publish one concentration per index level (VN, SG, MY, ID) define a
    continuous piecewise-linear line through the points, so consecutive rows share an end.
    """
    return tuple(
        Breakpoint(float(c0), float(c1), i0, i1) for (c0, i0), (c1, i1) in pairwise(points)
    )


def rename(table: PollutantTable, averaging: str) -> PollutantTable:
    """The same rows under another averaging id (NowCast reuses the 24-hour PM rows)."""
    return PollutantTable(
        pollutant=table.pollutant,
        averaging=averaging,
        unit=table.unit,
        rows=table.rows,
        decimals=table.decimals,
        above=table.above,
        below_note=table.below_note,
        source_note=table.source_note,
    )
