"""M&E columns (targets, progress, rank, change), catalogue and period syntax."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from indicators import air, me, periods
from indicators.aqi import STANDARDS
from indicators.catalogue import FOCAL_AREAS, load_catalogue
from indicators.frames import LONG_SCHEMA

STAMP = datetime(2025, 6, 1, tzinfo=UTC)


def long(rows: list[tuple]) -> pl.DataFrame:
    """(city, indicator, period_type, period_start, value)"""
    return pl.DataFrame(
        [(c, i, pt, ps, periods.period_end(ps, pt), v, 300, 0.9) for c, i, pt, ps, v in rows],
        schema=LONG_SCHEMA, orient="row",
    )  # fmt: skip


Y25, Y24 = date(2025, 1, 1), date(2024, 1, 1)
TARGETS = me.parse_targets(
    """
baseline_year = 2024
[targets."air.pm2_5.mean"]
default = 5.0
source = "test"
cities = { BBBBB = 15.0 }
[targets."air.aqi.us_epa.share_good"]
default = 80.0
period_types = ["year", "month"]
source = "test"
"""
)


def table() -> pl.DataFrame:
    current = long([
        ("AAAAA", "air.pm2_5.mean", "year", Y25, 10.0),
        ("BBBBB", "air.pm2_5.mean", "year", Y25, 20.0),
        ("CCCCC", "air.pm2_5.mean", "year", Y25, None),
        ("AAAAA", "air.aqi.us_epa.share_good", "year", Y25, 50.0),
        ("BBBBB", "air.aqi.us_epa.share_good", "year", Y25, 80.0),
        ("CCCCC", "air.aqi.us_epa.share_good", "year", Y25, 50.0),
        ("AAAAA", "traffic.vehicles_per_day", "year", Y25, 1000.0),
    ])  # fmt: skip
    previous = long([
        ("AAAAA", "air.pm2_5.mean", "year", Y24, 20.0),
        ("BBBBB", "air.pm2_5.mean", "year", Y24, 10.0),
        ("AAAAA", "air.aqi.us_epa.share_good", "year", Y24, 40.0),
    ])  # fmt: skip
    return me.assemble(current, previous, previous, TARGETS, STAMP)


def get(df: pl.DataFrame, city: str, indicator: str) -> dict:
    return df.filter((pl.col("city") == city) & (pl.col("indicator") == indicator)).row(
        0, named=True
    )


def test_columns_and_units() -> None:
    df = table()
    assert tuple(df.columns) == me.COLUMNS
    assert get(df, "AAAAA", "air.pm2_5.mean")["unit"] == "µg/m³"
    assert get(df, "AAAAA", "air.pm2_5.mean")["method_version"] == "air-1.0"
    assert df["computed_at"].unique().to_list() == [STAMP]


def test_targets_with_city_override() -> None:
    df = table()
    assert get(df, "AAAAA", "air.pm2_5.mean")["target"] == 5.0
    assert get(df, "BBBBB", "air.pm2_5.mean")["target"] == 15.0
    assert get(df, "AAAAA", "traffic.vehicles_per_day")["target"] is None


def test_progress_lower_and_higher_is_better() -> None:
    df = table()
    # lower: baseline 20 -> value 10, target 5: 10/15 of the gap closed
    assert get(df, "AAAAA", "air.pm2_5.mean")["progress_pct"] == pytest.approx(100 * 10 / 15)
    # baseline (10) already under the target (15): ratio 100 x target / value
    assert get(df, "BBBBB", "air.pm2_5.mean")["progress_pct"] == pytest.approx(75.0)
    # higher: baseline 40 -> 50 toward 80: 25 %
    assert get(df, "AAAAA", "air.aqi.us_epa.share_good")["progress_pct"] == pytest.approx(25.0)
    # higher, no baseline: 100 x value / target
    assert get(df, "BBBBB", "air.aqi.us_epa.share_good")["progress_pct"] == pytest.approx(100.0)
    assert get(df, "CCCCC", "air.pm2_5.mean")["progress_pct"] is None


def test_change_vs_previous_period() -> None:
    df = table()
    assert get(df, "AAAAA", "air.pm2_5.mean")["change_pct"] == pytest.approx(-50.0)
    assert get(df, "BBBBB", "air.pm2_5.mean")["change_pct"] == pytest.approx(100.0)
    assert get(df, "CCCCC", "air.pm2_5.mean")["change_pct"] is None
    assert get(df, "AAAAA", "air.pm2_5.mean")["baseline"] == 20.0


def test_rank_follows_direction() -> None:
    df = table()
    assert get(df, "AAAAA", "air.pm2_5.mean")["rank"] == 1  # lower is better
    assert get(df, "BBBBB", "air.pm2_5.mean")["rank"] == 2
    assert get(df, "CCCCC", "air.pm2_5.mean")["rank"] is None
    assert get(df, "BBBBB", "air.aqi.us_epa.share_good")["rank"] == 1  # higher is better
    assert get(df, "AAAAA", "air.aqi.us_epa.share_good")["rank"] == 2  # tie shares rank 2
    assert get(df, "CCCCC", "air.aqi.us_epa.share_good")["rank"] == 2
    assert get(df, "AAAAA", "traffic.vehicles_per_day")["rank"] is None  # direction none


def test_month_change_uses_previous_month() -> None:
    cur = long([("AAAAA", "air.pm10.mean", "month", date(2025, 3, 1), 30.0),
                ("AAAAA", "air.pm10.mean", "month", date(2025, 4, 1), 60.0)])  # fmt: skip
    prev = long([("AAAAA", "air.pm10.mean", "month", date(2025, 2, 1), 40.0)])
    df = me.assemble(cur, prev, long([]), TARGETS, STAMP)
    assert df["change_pct"].to_list() == pytest.approx([-25.0, 100.0])


def test_unknown_indicator_is_refused() -> None:
    with pytest.raises(ValueError, match="catalogue"):
        me.assemble(
            long([("AAAAA", "air.nope", "year", Y25, 1.0)]), long([]), long([]), TARGETS, STAMP
        )


def test_catalogue_has_every_required_id() -> None:
    cat = load_catalogue()
    required = ["air.pm2_5.mean", "air.pm10.mean", "air.no2.mean", "air.so2.mean", "air.co.mean",
                "air.o3.max8h", "traffic.vehicles_per_day", "traffic.peak_speed_kmh", "traffic.tti",
                "traffic.congestion_pct", "water.domestic_lpcd", "water.interruption_minutes",
                "energy.electricity_kwh_per_capita", "energy.interruption_minutes"]  # fmt: skip
    for p in ("pm2_5", "pm10"):
        required += [f"air.{p}.who_days_above_{x}" for x in ("aqg", "it1", "it2", "it3", "it4")]
    required += ["air.no2.who_days_above_aqg", "air.so2.who_days_above_it1",
                 "air.co.who_days_above_it1", "air.o3.who_days_above_it2"]  # fmt: skip
    for sid, std in STANDARDS.items():
        required += [f"air.aqi.{sid}", f"air.aqi.{sid}.level", f"air.aqi.{sid}.share_good"]
        required += [f"air.aqi.{sid}.days.{air.category_slug(c.name)}" for c in std.categories]
    missing = [r for r in required if r not in cat]
    assert not missing
    assert {i.focal_area for i in cat.values()} <= set(FOCAL_AREAS)
    assert cat["air.pm2_5.who_days_above_it3"].threshold == 37.5
    assert cat["air.pm2_5.mean"].iso37120 == "8.1"


def test_targets_file_parses() -> None:
    tg = me.load_targets()
    assert tg.baseline_year is not None
    assert all(t.source for t in tg.targets.values())


@pytest.mark.parametrize(
    "period,ptype,first,last,expect_type",
    [("2025", None, date(2025, 1, 1), date(2025, 12, 31), "year"),
     ("2025", "month", date(2025, 1, 1), date(2025, 12, 31), "month"),
     ("2024-02", None, date(2024, 2, 1), date(2024, 2, 29), "month"),
     ("2025-03-14", None, date(2025, 3, 14), date(2025, 3, 14), "day"),
     ("2025-03-14", "month", date(2025, 3, 1), date(2025, 3, 31), "month")],
)  # fmt: skip
def test_period_syntax(period, ptype, first, last, expect_type) -> None:
    span, pt = periods.resolve(period, ptype)
    assert (span.first, span.last, pt) == (first, last, expect_type)


def test_period_range_and_errors() -> None:
    span, pt = periods.resolve(None, "day", "2025-03-01", "2025-03-03")
    assert (span.days, pt) == (3, "day")
    for bad in ("2025-13", "25", "2025-02-30"):
        with pytest.raises(ValueError):
            periods.resolve(bad, None)
