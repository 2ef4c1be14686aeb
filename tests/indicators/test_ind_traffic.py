"""Traffic job on crafted speeds and counts: TTI, weighting, peak windows, daily counts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from indicators import me, source, traffic
from indicators.periods import Span

MONDAY, SATURDAY = date(2025, 3, 10), date(2025, 3, 15)
NIGHT = (0, 1, 2, 3, 4, 22, 23)
PEAK = (7, 8, 16, 17, 18)


def site_day(site: str, day: date, night: list[float], peak: list[float], count: float) -> list:
    rows = []
    for h in range(24):
        t = datetime(day.year, day.month, day.day, h, 15) - timedelta(hours=7)  # Bangkok
        if h in NIGHT:
            speed = night[NIGHT.index(h)]
        elif h in PEAK:
            speed = peak[PEAK.index(h)]
        else:
            speed = 45.0
        rows.append(
            ("THBKK", site, f"{site}-lane1", "vehicle_speed", speed, t.replace(tzinfo=UTC), 0)
        )
        rows.append(
            ("THBKK", site, f"{site}-lane1", "vehicle_count", count, t.replace(tzinfo=UTC), 0)
        )
    return rows


def frame(rows: list) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=source.INPUT_SCHEMA, orient="row")


def rows_for(df: pl.DataFrame, first: date, last: date, ptype: str) -> pl.DataFrame:
    return me.compute(source.frame_source(df), Span(first, last), ptype, ["THBKK"]).rows


def value(rows: pl.DataFrame, indicator: str, start: date) -> dict:
    hit = rows.filter((pl.col("indicator") == indicator) & (pl.col("period_start") == start))
    assert hit.height == 1, (indicator, hit)
    return hit.row(0, named=True)


def test_tti_on_crafted_speeds() -> None:
    # site A: night 40..60 -> 85th pct (linear) = 51; peak mean 25.5 -> TTI 2.0
    a = site_day("A", MONDAY, [40, 42, 44, 46, 48, 50, 60], [20, 25, 30, 25, 27.5], 100.0)
    # site B: free flow 60, peak 40 -> TTI 1.5; three times the peak volume
    b = site_day("B", MONDAY, [60.0] * 7, [40.0] * 5, 300.0)
    rows = rows_for(frame(a + b), MONDAY, MONDAY, "day")
    sites = traffic.site_frame(
        source.with_local_time(frame(a + b).lazy(), {"THBKK": "Asia/Bangkok"},
                               datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)),
        "day", traffic.TrafficConfig(),
    ).collect().sort("site")  # fmt: skip
    assert sites["free_flow"].to_list() == pytest.approx([51.0, 60.0])
    assert sites["peak_speed"].to_list() == pytest.approx([25.5, 40.0])
    assert sites["tti"].to_list() == pytest.approx([2.0, 1.5])
    assert sites["peak_volume"].to_list() == pytest.approx([500.0, 1500.0])
    tti = value(rows, "traffic.tti", MONDAY)
    assert tti["value"] == pytest.approx((2.0 * 500 + 1.5 * 1500) / 2000)  # 1.625
    assert tti["n_obs"] == 2
    assert value(rows, "traffic.congestion_pct", MONDAY)["value"] == pytest.approx(62.5)
    speed = value(rows, "traffic.peak_speed_kmh", MONDAY)["value"]
    assert speed == pytest.approx((25.5 * 500 + 40.0 * 1500) / 2000)
    assert value(rows, "traffic.vehicles_per_day", MONDAY)["value"] == 24 * 100 + 24 * 300


def test_weekend_has_no_peak_and_config_changes_windows() -> None:
    sat = site_day("A", SATURDAY, [60.0] * 7, [30.0] * 5, 100.0)
    rows = rows_for(frame(sat), SATURDAY, SATURDAY, "day")
    assert rows.filter(pl.col("indicator") == "traffic.tti").height == 0
    assert value(rows, "traffic.vehicles_per_day", SATURDAY)["value"] == 2400
    # every day counts and the only peak hour is 07:00-08:00: peak speed 30 (hour 7)
    cfg = traffic.TrafficConfig(peaks=((7, 8),), weekdays=(1, 2, 3, 4, 5, 6, 7))
    lf = source.with_local_time(frame(sat).lazy(), {"THBKK": "Asia/Bangkok"},
                                datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))  # fmt: skip
    out = traffic.run(lf, "day", cfg).collect()
    tti = out.filter(pl.col("indicator") == "traffic.tti")["value"].item()
    assert tti == pytest.approx(60.0 / 30.0)


def test_incomplete_day_of_counts_is_missing() -> None:
    rows_in = [r for r in site_day("A", MONDAY, [60.0] * 7, [30.0] * 5, 10.0)
               if r[5].hour not in range(0, 7)]  # fmt: skip  # drop 7 UTC hours -> 17 local hours
    rows = rows_for(frame(rows_in), MONDAY, MONDAY, "day")
    r = value(rows, "traffic.vehicles_per_day", MONDAY)
    assert r["value"] is None and r["completeness"] == pytest.approx(17 / 24)
