"""Traffic job: vehicles per day, peak-hour speed, Travel Time Index and congestion, lazily.

Owns the traffic methods (docs/indicators.md, "Traffic"), all in LOCAL time:
- vehicles per day: sum of `vehicle_count` over every lane counter (device) of a site, and of
  every site of the city; a city day is valid when the mean over its sites of (local hours
  with counts / 24) is >= 18/24; month/year = mean of valid days (>= 75 % of days valid);
- peak mean speed per site: mean of `vehicle_speed` readings on weekdays (Mon-Fri) inside the
  peak windows (default 07:00-09:00 and 16:00-19:00, start included, end excluded);
- free-flow speed per site: 85th percentile (linear interpolation) of night-time speeds
  (22:00-05:00) in the same period - the 85th percentile, not the mean, because a night mean
  is pulled down by slow vehicles in light traffic and the 85th percentile is the usual
  free-flow / design-speed statistic;
- TTI per site = free-flow speed / peak mean speed (not clipped at 1);
- city TTI and peak speed = means over sites weighted by the site's peak vehicle volume
  (sites without counts in the peak are left out); congestion % = (TTI - 1) x 100.
May import: polars, this package's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from indicators.frames import MIN_HOURS_PER_DAY, MIN_SHARE, dmean, dsum, long_rows, with_period

QUANTITIES = ("vehicle_count", "vehicle_speed")
METHOD = "traffic-1.0"


@dataclass(frozen=True)
class TrafficConfig:
    peaks: tuple[tuple[int, int], ...] = ((7, 9), (16, 19))  # local [start, end) hours
    night: tuple[int, int] = (22, 5)  # local hours [22:00, 05:00)
    weekdays: tuple[int, ...] = (1, 2, 3, 4, 5)  # ISO weekday, 1 = Monday
    free_flow_quantile: float = 0.85


def _in_hours(start: int, end: int) -> pl.Expr:
    hod = pl.col("hod")
    if start <= end:
        return (hod >= start) & (hod < end)
    return (hod >= start) | (hod < end)


def is_peak(cfg: TrafficConfig) -> pl.Expr:
    in_window = pl.any_horizontal([_in_hours(a, b) for a, b in cfg.peaks])
    return in_window & pl.col("day").dt.weekday().is_in(list(cfg.weekdays))


def site_frame(readings: pl.LazyFrame, period_type: str, cfg: TrafficConfig) -> pl.LazyFrame:
    """Per site and period: peak_speed, n_peak, peak_volume, free_flow, n_night, tti."""
    r = with_period(readings.filter(pl.col("quantity").is_in(QUANTITIES)), period_type)
    keys = ["city", "site", "period_start", "period_end"]
    speed = r.filter(pl.col("quantity") == "vehicle_speed")
    count = r.filter(pl.col("quantity") == "vehicle_count")
    peak = (
        speed.filter(is_peak(cfg))
        .group_by(keys)
        .agg(peak_speed=dmean(pl.col("value")), n_peak=pl.len())
    )
    volume = count.filter(is_peak(cfg)).group_by(keys).agg(peak_volume=dsum(pl.col("value")))
    night = (
        speed.filter(_in_hours(*cfg.night))
        .group_by(keys)
        .agg(free_flow=pl.col("value").quantile(cfg.free_flow_quantile, "linear"), n_night=pl.len())
    )
    sites = speed.select(keys).unique()
    return (
        sites.join(peak, on=keys, how="left")
        .join(volume, on=keys, how="left")
        .join(night, on=keys, how="left")
        .with_columns(tti=pl.col("free_flow") / pl.col("peak_speed"))
    )


def daily_counts(readings: pl.LazyFrame) -> pl.LazyFrame:
    """Per city and local day: vehicles (sum over sites), n_sites, site_hours, completeness."""
    site_day = (
        readings.filter(pl.col("quantity") == "vehicle_count")
        .group_by("city", "site", "day")
        .agg(vehicles=dsum(pl.col("value")), hours=pl.col("hod").n_unique())
    )
    return site_day.group_by("city", "day").agg(
        vehicles=dsum(pl.col("vehicles")),
        n_sites=pl.len(),
        site_hours=pl.col("hours").sum().cast(pl.Int64),
        completeness=pl.col("hours").mean() / 24.0,
    )


def run(readings: pl.LazyFrame, period_type: str, cfg: TrafficConfig | None = None) -> pl.LazyFrame:
    """Long rows (traffic.*) from local-time readings."""
    cfg = cfg or TrafficConfig()
    daily = daily_counts(readings).with_columns(
        valid=pl.col("completeness") >= MIN_HOURS_PER_DAY / 24.0
    )
    if period_type == "day":
        vehicles = long_rows(
            with_period(daily, "day").with_columns(
                value=pl.when(pl.col("valid")).then(pl.col("vehicles")),
                n_obs=pl.col("site_hours"),
            ),
            "traffic.vehicles_per_day",
            "day",
        )
    else:
        per = (
            with_period(daily, period_type)
            .group_by("city", "period_start", "period_end", "period_days")
            .agg(
                n_valid=pl.col("valid").sum(),
                mean=dmean(pl.col("vehicles").filter(pl.col("valid"))),
            )
        )
        share = pl.col("n_valid") / pl.col("period_days")
        vehicles = long_rows(
            per.with_columns(
                value=pl.when(share >= MIN_SHARE).then(pl.col("mean")),
                n_obs=pl.col("n_valid"),
                completeness=share,
            ),
            "traffic.vehicles_per_day",
            period_type,
        )
    sites = site_frame(readings, period_type, cfg)
    used = pl.col("tti").is_not_null() & (pl.col("peak_volume") > 0)
    w = pl.col("peak_volume")
    city = (
        sites.group_by("city", "period_start", "period_end")
        .agg(
            tti=dsum((pl.col("tti") * w).filter(used)) / dsum(w.filter(used)),
            speed=dsum((pl.col("peak_speed") * w).filter(used)) / dsum(w.filter(used)),
            n_used=used.sum().cast(pl.Int64),
            n_sites=pl.len(),
        )
        .filter(pl.col("n_used") > 0)
        .with_columns(completeness=pl.col("n_used") / pl.col("n_sites"), n_obs=pl.col("n_used"))
    )
    return pl.concat(
        [
            vehicles,
            long_rows(
                city.with_columns(value=pl.col("speed")), "traffic.peak_speed_kmh", period_type
            ),
            long_rows(city.with_columns(value=pl.col("tti")), "traffic.tti", period_type),
            long_rows(
                city.with_columns(value=(pl.col("tti") - 1.0) * 100.0),
                "traffic.congestion_pct",
                period_type,
            ),
        ]
    )
