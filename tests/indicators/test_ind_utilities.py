"""Meters: rollovers and resets, per-capita estimates, interruption minutes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from indicators import me, source, utilities
from indicators.periods import Span

T0 = datetime(2025, 3, 10, 0, 0, tzinfo=UTC)  # 07:00 in Bangkok


def series(quantity: str, values: list[float], step_s: int = 3600, device: str = "m1",
           city: str = "THCNX", start: datetime = T0) -> pl.DataFrame:  # fmt: skip
    n = len(values)
    return pl.DataFrame(
        {"city": [city] * n, "site": ["s1"] * n, "device": [device] * n, "quantity": [quantity] * n,
         "value": values, "observed_at": [start + timedelta(seconds=step_s * i) for i in range(n)],
         "flags": [0] * n},
        schema=source.INPUT_SCHEMA,
    )  # fmt: skip


def local(df: pl.DataFrame) -> pl.LazyFrame:
    return source.with_local_time(
        df.lazy(), {"THCNX": "Asia/Bangkok"}, datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 4, 1, tzinfo=UTC),
    )  # fmt: skip


REGISTER = [99999.0, 99999.5, 99999.9, 0.3, 1.0, 0.2, 0.5]


def test_rollover_and_reset_give_exact_consumption() -> None:
    iv = utilities.intervals(local(series("water_volume", REGISTER))).collect()
    assert iv["event"].to_list() == [
        "increase",
        "increase",
        "rollover",
        "increase",
        "reset",
        "increase",
    ]
    assert iv["consumption"].to_list() == pytest.approx([0.5, 0.4, 0.4, 0.7, 0.2, 0.3])
    assert iv["consumption"].sum() == pytest.approx(2.5)
    # a register that wraps at 99999.9 itself (as firmware_sim's meters do)
    cfg = utilities.MeterConfig(modulus={"water_volume": 99999.9})
    iv2 = utilities.intervals(local(series("water_volume", REGISTER)), cfg).collect()
    assert iv2["consumption"].to_list()[2] == pytest.approx(0.3)


def test_drop_far_from_the_top_is_a_reset() -> None:
    # 5000 -> 10: not in the top 1 % of a 10000 register, so a reset counted from 0
    iv = utilities.intervals(
        local(series("active_energy_import", [4990.0, 5000.0, 10.0, 12.0]))
    ).collect()
    assert iv["event"].to_list() == ["increase", "reset", "increase"]
    assert iv["consumption"].to_list() == pytest.approx([10.0, 10.0, 2.0])


def test_per_capita_is_per_metered_household_over_household_size() -> None:
    df = series("water_volume", REGISTER)  # 2.5 m3 in 6 metered hours
    hh = utilities.Households(4.0, "test default", {})
    rows = me.compute(source.frame_source(df), Span(date(2025, 3, 10), date(2025, 3, 10)), "day",
                      ["THCNX"], households=hh).rows  # fmt: skip
    r = rows.filter(pl.col("indicator") == "water.domestic_lpcd").row(0, named=True)
    # 2.5 m3 / 6 h = 10 m3 per household-day = 10000 L / 4 persons
    assert r["value"] == pytest.approx(2500.0)
    assert r["n_obs"] == 6 and r["completeness"] == pytest.approx(6 / 24)
    e = series("active_energy_import", [100.0, 101.0, 102.0], device="e1")  # 1 kWh per hour
    rows = me.compute(source.frame_source(e), Span(date(2025, 3, 10), date(2025, 3, 10)), "day",
                      ["THCNX"], households=hh).rows  # fmt: skip
    r = rows.filter(pl.col("indicator") == "energy.electricity_kwh_per_capita").row(0, named=True)
    assert r["value"] == pytest.approx(24 * 365 / 4.0)


def test_household_size_table() -> None:
    hh = utilities.load_households()
    assert hh.size("THBKK") > 0 and hh.source("THBKK")
    assert hh.size("KHBBM") == hh.default == 4.0


def test_energy_interruption_minutes() -> None:
    volts = [230.0, 231.0, 0.0, 0.0, 10.0, 229.0, 230.0]  # every 10 min: 3 readings off = 30 min
    df = pl.concat([series("voltage", volts, 600, "e1"), series("voltage", [230.0] * 7, 600, "e2")])
    rows = me.compute(source.frame_source(df), Span(date(2025, 3, 10), date(2025, 3, 10)), "day",
                      ["THCNX"]).rows  # fmt: skip
    r = rows.filter(pl.col("indicator") == "energy.interruption_minutes").row(0, named=True)
    assert r["value"] == pytest.approx(30.0 / 2)  # mean over the two meters
    assert r["n_obs"] == 2


def test_water_interruption_only_in_normally_flowing_hours() -> None:
    start = datetime(2025, 3, 2, 17, 0, tzinfo=UTC)  # 00:00 local on 3 March
    values = []
    for day in range(7):
        for h in range(24):
            flowing = 6 <= h <= 22
            if day == 3 and h in (10, 11):
                flowing = False  # supply cut: 2 hours
            values.append(0.5 if flowing else 0.0)
    df = series("water_flow", values, 3600, "w1", start=start)
    rows = me.compute(source.frame_source(df), Span(date(2025, 3, 1), date(2025, 3, 31)), "month",
                      ["THCNX"]).rows  # fmt: skip
    r = rows.filter(pl.col("indicator") == "water.interruption_minutes").row(0, named=True)
    assert r["value"] == pytest.approx(120.0)
