"""Air job: completeness, local days, WHO exceedance days, AQI against the scalar engine."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from indicators import air, me, source
from indicators.aqi import STANDARDS, overall_index
from indicators.periods import Span

UTC_OFFSET = {"THBKK": 7, "PHMNL": 8}


def readings(rows: list[tuple[str, str, datetime, float]], flags: int = 0) -> pl.DataFrame:
    """rows of (city, quantity, LOCAL naive time, value) -> input frame (one device per city)."""
    return pl.DataFrame(
        {
            "city": [r[0] for r in rows],
            "site": [f"{r[0].lower()}-s1" for r in rows],
            "device": [f"{r[0].lower()}-d1" for r in rows],
            "quantity": [r[1] for r in rows],
            "value": [float(r[3]) for r in rows],
            "observed_at": [
                (r[2] - timedelta(hours=UTC_OFFSET[r[0]])).replace(tzinfo=UTC) for r in rows
            ],
            "flags": [flags] * len(rows),
        },
        schema=source.INPUT_SCHEMA,
    )


def day_hours(city: str, q: str, day: date, hours: range, value: float) -> list:
    return [(city, q, datetime(day.year, day.month, day.day, h, 10), value) for h in hours]


def run(df: pl.DataFrame, first: date, last: date, ptype: str) -> pl.DataFrame:
    return me.compute(
        source.frame_source(df), Span(first, last), ptype, sorted(set(df["city"]))
    ).rows


def row(rows: pl.DataFrame, indicator: str, start: date, city: str = "THBKK") -> dict:
    hit = rows.filter(
        (pl.col("indicator") == indicator)
        & (pl.col("period_start") == start)
        & (pl.col("city") == city)
    )
    assert hit.height == 1, (indicator, start, hit)
    return hit.row(0, named=True)


def test_daily_mean_needs_18_of_24_hours() -> None:
    d17, d18 = date(2025, 3, 10), date(2025, 3, 11)
    df = readings(
        day_hours("THBKK", "pm2_5", d17, range(17), 20.0)
        + day_hours("THBKK", "pm2_5", d18, range(18), 30.0)
    )
    rows = run(df, d17, d18, "day")
    r17 = row(rows, "air.pm2_5.mean", d17)
    assert r17["value"] is None
    assert r17["n_obs"] == 17 and r17["completeness"] == pytest.approx(17 / 24)
    r18 = row(rows, "air.pm2_5.mean", d18)
    assert r18["value"] == pytest.approx(30.0) and r18["completeness"] == pytest.approx(0.75)


def test_out_of_range_readings_are_excluded() -> None:
    d = date(2025, 3, 10)
    good = readings(day_hours("THBKK", "pm2_5", d, range(24), 10.0))
    bad = readings(day_hours("THBKK", "pm2_5", d, range(24), 1e6), flags=1).with_columns(
        device=pl.lit("thbkk-d2")
    )
    result = me.compute(source.frame_source(pl.concat([good, bad])), Span(d, d), "day", ["THBKK"])
    assert row(result.rows, "air.pm2_5.mean", d)["value"] == pytest.approx(10.0)
    assert result.coverage.filter(pl.col("quantity") == "pm2_5")["excluded"].item() == 24


def test_city_hourly_mean_is_mean_of_device_means() -> None:
    d = date(2025, 3, 10)
    one = readings(day_hours("THBKK", "pm2_5", d, range(24), 10.0))
    # device 2 reports twice an hour (20 and 40 -> device mean 30): city hour = (10 + 30) / 2
    two = pl.concat(
        [
            readings(day_hours("THBKK", "pm2_5", d, range(24), 20.0)),
            readings(day_hours("THBKK", "pm2_5", d, range(24), 40.0)).with_columns(
                pl.col("observed_at") + timedelta(minutes=30)
            ),
        ]
    ).with_columns(device=pl.lit("thbkk-d2"))
    rows = run(pl.concat([one, two]), d, d, "day")
    assert row(rows, "air.pm2_5.mean", d)["value"] == pytest.approx(20.0)


@pytest.mark.parametrize("valid_days,expect_value", [(274, True), (273, False)])
def test_annual_mean_needs_75_percent_of_days(valid_days: int, expect_value: bool) -> None:
    start = date(2025, 1, 1)
    rows_in: list = []
    for i in range(valid_days):
        rows_in += day_hours("THBKK", "pm10", start + timedelta(days=i), range(24), 40.0)
    # one extra day with 10 hours: present but not valid
    rows_in += day_hours("THBKK", "pm10", date(2025, 12, 31), range(10), 99.0)
    rows = run(readings(rows_in), start, date(2025, 12, 31), "year")
    r = row(rows, "air.pm10.mean", start)
    assert r["n_obs"] == valid_days
    assert r["completeness"] == pytest.approx(valid_days / 365)
    assert (r["value"] == pytest.approx(40.0)) if expect_value else r["value"] is None


def test_monthly_mean_needs_75_percent_of_days() -> None:
    rows_in: list = []
    for i in range(23):  # 23/31 = 0.742 < 0.75 in March; 23/30 = 0.767 in April
        rows_in += day_hours("THBKK", "no2", date(2025, 3, 1) + timedelta(days=i), range(24), 30.0)
        rows_in += day_hours("THBKK", "no2", date(2025, 4, 1) + timedelta(days=i), range(24), 30.0)
    rows = run(readings(rows_in), date(2025, 3, 1), date(2025, 4, 30), "month")
    assert row(rows, "air.no2.mean", date(2025, 3, 1))["value"] is None
    assert row(rows, "air.no2.mean", date(2025, 4, 1))["value"] == pytest.approx(30.0)


@pytest.mark.parametrize(
    "city,zone,offset", [("THBKK", "Asia/Bangkok", 7), ("PHMNL", "Asia/Manila", 8)]
)
def test_local_day_boundary(city: str, zone: str, offset: int) -> None:
    late = datetime(2025, 3, 10, 23, 30) - timedelta(hours=offset)  # 23:30 local, in UTC
    early = datetime(2025, 3, 11, 0, 30) - timedelta(hours=offset)  # 00:30 local next day
    df = pl.DataFrame(
        {"city": [city, city], "site": ["s", "s"], "device": ["d", "d"], "quantity": ["pm2_5"] * 2,
         "value": [1.0, 2.0], "observed_at": [late.replace(tzinfo=UTC), early.replace(tzinfo=UTC)],
         "flags": [0, 0]},
        schema=source.INPUT_SCHEMA,
    )  # fmt: skip
    start, end = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    out = source.with_local_time(df.lazy(), {city: zone}, start, end).collect()
    assert out["day"].to_list() == [date(2025, 3, 10), date(2025, 3, 11)]
    assert out["hod"].to_list() == [23, 0]
    # the UTC dates are the same day, the local days differ
    assert late.date() == early.date()


def test_zone_with_dst_is_converted_exactly() -> None:
    # Europe/Berlin switches to UTC+2 on 2025-03-30 01:00 UTC: both sides land correctly.
    df = pl.DataFrame(
        {"city": ["THBKK"] * 2, "site": ["s"] * 2, "device": ["d"] * 2, "quantity": ["pm2_5"] * 2,
         "value": [1.0, 2.0],
         "observed_at": [datetime(2025, 3, 29, 22, 30, tzinfo=UTC), datetime(2025, 3, 30, 22, 30, tzinfo=UTC)],
         "flags": [0, 0]},
        schema=source.INPUT_SCHEMA,
    )  # fmt: skip
    start, end = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 30, tzinfo=UTC)
    assert len(source.zone_offsets("Europe/Berlin", start, end)) == 2
    out = source.with_local_time(df.lazy(), {"THBKK": "Europe/Berlin"}, start, end).collect()
    assert out["day"].to_list() == [date(2025, 3, 29), date(2025, 3, 31)]  # 23:30 CET, 00:30 CEST
    assert out["hod"].to_list() == [23, 0]


def test_who_exceedance_days() -> None:
    means = [10.0, 15.0, 15.01, 30.0, 40.0, 60.0, 80.0]
    rows_in: list = []
    for i, v in enumerate(means):
        rows_in += day_hours("THBKK", "pm2_5", date(2025, 3, 1 + i), range(24), v)
    rows_in += day_hours("THBKK", "pm2_5", date(2025, 3, 20), range(12), 500.0)  # not valid
    rows = run(readings(rows_in), date(2025, 3, 1), date(2025, 3, 31), "month")
    expected = {"aqg": 5, "it4": 4, "it3": 3, "it2": 2, "it1": 1}
    for level, n in expected.items():
        r = row(rows, f"air.pm2_5.who_days_above_{level}", date(2025, 3, 1))
        assert r["value"] == n, level
        assert r["n_obs"] == 7 and r["completeness"] == pytest.approx(7 / 31)


def test_o3_who_days_use_daily_max_8h() -> None:
    d = date(2025, 3, 3)
    # 110 for hours 8-15 (one full 8-hour window), 20 elsewhere: max 8 h = 110 > 100 (AQG)
    rows_in = [
        ("THBKK", "o3", datetime(2025, 3, 3, h, 0), 110.0 if 8 <= h < 16 else 20.0)
        for h in range(24)
    ]
    rows = run(readings(rows_in), d, d, "day")
    assert row(rows, "air.o3.max8h", d)["value"] == pytest.approx(110.0)
    month = run(readings(rows_in), date(2025, 3, 1), date(2025, 3, 31), "month")
    assert row(month, "air.o3.who_days_above_aqg", date(2025, 3, 1))["value"] == 1
    assert row(month, "air.o3.who_days_above_it2", date(2025, 3, 1))["value"] == 0


def test_max_8h_window_needs_6_hours_and_stays_in_the_day() -> None:
    hourly = pl.LazyFrame(
        {"city": ["X"] * 24, "quantity": ["o3"] * 24,
         "hour_idx": [24 * 20000 + h for h in range(24)],
         "value": [300.0 if h in (0, 23) else 10.0 for h in range(24)]},
    )  # fmt: skip
    d = air.daily_stats(hourly).collect()
    # windows 00-07 (300 + 7x10)/8 = 46.25 and 16-23 the same; no window wraps midnight
    assert d["max8h"].item() == pytest.approx(46.25)


def test_aqi_days_per_category_match_scalar_engine() -> None:
    days = [(5.0, 20.0, 50.0), (20.0, 60.0, 90.0), (40.0, 100.0, 130.0), (70.0, 200.0, 200.0),
            (150.0, 400.0, 60.0), (300.0, 500.0, 40.0), (12.0, 30.0, 170.0)]  # fmt: skip
    rows_in: list = []
    for i, (pm25, pm10, o3) in enumerate(days):
        d = date(2025, 3, 1 + i)
        rows_in += day_hours("THBKK", "pm2_5", d, range(24), pm25)
        rows_in += day_hours("THBKK", "pm10", d, range(24), pm10)
        rows_in += day_hours("THBKK", "o3", d, range(24), o3)
    df = readings(rows_in)
    daily_rows = run(df, date(2025, 3, 1), date(2025, 3, 31), "day")
    month_rows = run(df, date(2025, 3, 1), date(2025, 3, 31), "month")
    for sid, std in STANDARDS.items():
        counts = {c.name: 0 for c in std.categories}
        for i, (pm25, pm10, o3) in enumerate(days):
            o3_avgs = [a for a in std.averagings("o3") if a != "nowcast"]
            expected = overall_index(
                sid,
                {"pm2_5": (pm25, "24h", None), "pm10": (pm10, "24h", None),
                 "o3": [(o3, a, None) for a in o3_avgs]},
            )  # fmt: skip
            d = date(2025, 3, 1 + i)
            got = row(daily_rows, f"air.aqi.{sid}", d)["value"]
            assert got == expected.index, (sid, d)
            level = row(daily_rows, f"air.aqi.{sid}.level", d)["value"]
            assert std.categories[int(level) - 1].name == expected.category
            counts[expected.category] += 1
        for cat in std.categories:
            r = row(
                month_rows, f"air.aqi.{sid}.days.{air.category_slug(cat.name)}", date(2025, 3, 1)
            )
            assert r["value"] == counts[cat.name], (sid, cat.name)
        share = row(month_rows, f"air.aqi.{sid}.share_good", date(2025, 3, 1))
        assert share["value"] == pytest.approx(100 * counts[std.categories[0].name] / len(days))
        assert share["n_obs"] == len(days)
