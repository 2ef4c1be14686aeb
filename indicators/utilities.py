"""Water and energy job: consumption from cumulative meter registers, per-capita estimates and
supply interruptions, lazily.

Owns the utility methods (docs/indicators.md, "Water and energy"):
- interval consumption = difference of consecutive readings of one meter register
  (`water_volume` m³, `active_energy_import` kWh), attributed to the local day of the later
  reading. A DROP is a ROLLOVER when the previous value lies in the top `rollover_margin`
  (1 %) of its register, whose modulus is the next power of ten above it (99999.9 -> 100000;
  override per quantity with `MeterConfig.modulus`): consumption = new + modulus - previous.
  Any other drop is a RESET (meter replaced or cleared): consumption = new value (counted from
  0). Both are counted in the run metadata.
- per-capita (a SAMPLE-BASED ESTIMATE: the meters are a sample of households): consumption
  rate per metered household = sum of increments / sum of metered interval time, divided by
  the city's household size (households.toml). Water: L/person/day; electricity:
  kWh/person/year (annualised with 365 days). Completeness = metered time / (meters x period).
- interruptions, per meter, each reading held until the next one (at most `max_hold_s`,
  1 h): electricity off when voltage < 50 V; water interrupted when flow is 0 during a local
  hour-of-day in which that meter's flow is normally > 0 (flow > 0 in at least half of its
  readings at that hour in the same local month). City value = mean minutes per meter.
May import: polars, the standard library, this package's frames.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import polars as pl

from indicators.frames import dsum, long_rows, with_period

CUMULATIVE = ("water_volume", "active_energy_import")
QUANTITIES = (*CUMULATIVE, "water_flow", "voltage")
METHOD = "utilities-1.0"
SECONDS_PER_DAY = 86_400.0

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class MeterConfig:
    rollover_margin: float = 0.01
    modulus: dict[str, float] = field(default_factory=dict)
    voltage_off_v: float = 50.0
    flow_zero: float = 1e-9
    normal_flow_share: float = 0.5
    max_hold_s: float = 3600.0
    days_per_year: float = 365.0


@dataclass(frozen=True)
class Households:
    default: float
    default_source: str
    sizes: dict[str, tuple[float, str]]

    def size(self, city: str) -> float:
        return self.sizes.get(city, (self.default, self.default_source))[0]

    def source(self, city: str) -> str:
        return self.sizes.get(city, (self.default, self.default_source))[1]


def parse_households(text: str) -> Households:
    data = tomllib.loads(text)
    sizes = {
        city: (float(row["household_size"]), str(row.get("source", "")))
        for city, row in data.get("cities", {}).items()
    }
    for city, (size, _) in sizes.items():
        if size <= 0:
            raise ValueError(f"households.toml: {city}: household_size must be > 0")
    return Households(float(data.get("default", 4.0)), str(data.get("default_source", "")), sizes)


@cache
def load_households(path: Path | None = None) -> Households:
    if path is not None:
        return parse_households(path.read_text("utf-8"))
    return parse_households((HERE / "households.toml").read_text("utf-8"))


def intervals(readings: pl.LazyFrame, cfg: MeterConfig | None = None) -> pl.LazyFrame:
    """One row per consecutive pair of register readings of a meter, with `consumption`,
    `dt_s` and `event` (increase | rollover | reset). Needs local-time columns."""
    cfg = cfg or MeterConfig()
    by = ["device", "quantity"]
    r = (
        readings.filter(pl.col("quantity").is_in(CUMULATIVE))
        .sort("device", "quantity", "observed_at")
        .with_columns(
            prev=pl.col("value").shift(1).over(by),
            prev_t=pl.col("observed_at").shift(1).over(by),
        )
        .filter(pl.col("prev").is_not_null())
    )
    auto = pl.lit(10.0).pow(pl.col("prev").clip(lower_bound=1e-12).log10().floor() + 1)
    modulus: pl.Expr = auto
    for q, m in cfg.modulus.items():
        modulus = pl.when(pl.col("quantity") == q).then(pl.lit(float(m))).otherwise(modulus)
    drop = pl.col("value") < pl.col("prev")
    rollover = drop & (pl.col("prev") >= pl.col("modulus") * (1.0 - cfg.rollover_margin))
    return (
        r.with_columns(modulus=modulus)
        .with_columns(
            event=pl.when(~drop)
            .then(pl.lit("increase"))
            .when(rollover)
            .then(pl.lit("rollover"))
            .otherwise(pl.lit("reset")),
            dt_us=(pl.col("observed_at") - pl.col("prev_t")).dt.total_microseconds(),
        )
        .with_columns(
            dt_s=pl.col("dt_us") / 1e6,
            consumption=pl.when(pl.col("event") == "increase")
            .then(pl.col("value") - pl.col("prev"))
            .when(pl.col("event") == "rollover")
            .then(pl.col("value") + pl.col("modulus") - pl.col("prev"))
            .otherwise(pl.col("value")),
        )
    )


def _held(readings: pl.LazyFrame, quantity: str, cfg: MeterConfig) -> pl.LazyFrame:
    """Readings of `quantity` with `hold_us`: microseconds until the next reading, capped."""
    return (
        readings.filter(pl.col("quantity") == quantity)
        .sort("device", "observed_at")
        .with_columns(next_t=pl.col("observed_at").shift(-1).over("device"))
        .with_columns(
            hold_us=(pl.col("next_t") - pl.col("observed_at"))
            .dt.total_microseconds()
            .clip(upper_bound=int(cfg.max_hold_s * 1e6))
            .fill_null(0)
        )
    )


def run(
    readings: pl.LazyFrame,
    period_type: str,
    cfg: MeterConfig | None = None,
    households: Households | None = None,
) -> pl.LazyFrame:
    """Long rows (water.*, energy.*) from local-time readings."""
    cfg = cfg or MeterConfig()
    hh = households or load_households()
    keys = ["city", "period_start", "period_end", "period_days"]
    iv = with_period(intervals(readings, cfg), period_type)
    per = iv.group_by(["quantity", *keys]).agg(
        consumption=dsum(pl.col("consumption")),
        metered_s=pl.col("dt_us").sum() / 1e6,
        n_meters=pl.col("device").n_unique(),
        n_intervals=pl.len(),
    )
    size = pl.col("city").replace_strict(
        {c: s for c, (s, _) in hh.sizes.items()}, default=hh.default, return_dtype=pl.Float64
    )
    rate = pl.col("consumption") / pl.col("metered_s")  # per metered household per second
    coverage = (
        pl.col("metered_s") / (pl.col("n_meters") * pl.col("period_days") * SECONDS_PER_DAY)
    ).clip(upper_bound=1.0)
    per = per.filter(pl.col("metered_s") > 0).with_columns(
        completeness=coverage, n_obs=pl.col("n_intervals")
    )
    water = long_rows(
        per.filter(pl.col("quantity") == "water_volume").with_columns(
            value=rate * SECONDS_PER_DAY * 1000.0 / size
        ),
        "water.domestic_lpcd",
        period_type,
    )
    energy = long_rows(
        per.filter(pl.col("quantity") == "active_energy_import").with_columns(
            value=rate * SECONDS_PER_DAY * cfg.days_per_year / size
        ),
        "energy.electricity_kwh_per_capita",
        period_type,
    )
    volts = with_period(_held(readings, "voltage", cfg), period_type).with_columns(
        off=pl.col("value") < cfg.voltage_off_v
    )
    flow = _held(readings, "water_flow", cfg).with_columns(
        month=pl.col("day").dt.truncate("1mo"), flowing=pl.col("value") > cfg.flow_zero
    )
    flow = flow.with_columns(
        normal=pl.col("flowing").mean().over("device", "month", "hod") >= cfg.normal_flow_share
    ).with_columns(off=pl.col("normal") & ~pl.col("flowing"))
    flow = with_period(flow, period_type)
    out = [water, energy]
    for frame, ind in (
        (flow, "water.interruption_minutes"),
        (volts, "energy.interruption_minutes"),
    ):
        agg = frame.group_by(keys).agg(
            minutes=pl.col("hold_us").filter(pl.col("off")).sum() / 60e6,
            held_s=pl.col("hold_us").sum() / 1e6,
            n_meters=pl.col("device").n_unique(),
        )
        out.append(
            long_rows(
                agg.with_columns(
                    value=pl.col("minutes") / pl.col("n_meters"),
                    n_obs=pl.col("n_meters"),
                    completeness=(
                        pl.col("held_s")
                        / (pl.col("n_meters") * pl.col("period_days") * SECONDS_PER_DAY)
                    ).clip(upper_bound=1.0),
                ),
                ind,
                period_type,
            )
        )
    return pl.concat(out)


def meter_events(readings: pl.LazyFrame, cfg: MeterConfig | None = None) -> pl.LazyFrame:
    """Counts of rollovers and resets per city and quantity (for the run metadata)."""
    return (
        intervals(readings, cfg)
        .filter(pl.col("event") != "increase")
        .group_by("city", "quantity", "event")
        .agg(n=pl.len())
    )
