"""Air quality job: hourly -> daily -> monthly/annual means, WHO 2021 exceedance days and the
daily AQI in six standards, as lazy polars.

Owns the air methods (docs/indicators.md, "Air"):
- city hourly mean = mean over devices of each device's mean in that local hour;
- daily statistics per pollutant from the city hourly means of one LOCAL day: `mean24`,
  `max1h` (largest hourly mean), `max8h` (largest mean of 8 consecutive hours starting
  00:00-16:00, each window needing 6 of 8 hours); all three are null (MISSING) unless the day
  has >= 18 of 24 hourly values, and `n_hours` is kept for the completeness column;
- monthly/annual mean of valid daily values, valid when >= 75 % of the period's days are;
- WHO days: valid days whose statistic (mean24; O3 max8h) is strictly above the threshold in
  catalogue.toml;
- daily AQI per standard: max of `sub_index_expr` over every table of the standard except
  NowCast (24h tables read mean24, 8h tables max8h, 1h tables max1h); level = 1-based
  category ordinal (1 = best); month/year days per category and share in the best category.
Readings flagged OUT_OF_RANGE are excluded before any of this (counts in the run metadata).
May import: polars, `indicators.aqi`, this package's frames/catalogue.
"""

from __future__ import annotations

import re

import polars as pl

from gateway.schema import load_cities
from indicators.aqi import KOTA_UNIT, STANDARDS
from indicators.aqi.polars_expr import sub_index_expr
from indicators.catalogue import Indicator, load_catalogue
from indicators.frames import (
    FIXED_SCALE,
    MIN_HOURS_PER_DAY,
    MIN_SHARE,
    dmean,
    empty_long,
    fixed,
    index_of,
    long_rows,
    with_period,
)

POLLUTANTS: tuple[str, ...] = ("pm2_5", "pm10", "no2", "so2", "co", "o3")
QUANTITIES = POLLUTANTS
WINDOW_8H = 8
MIN_HOURS_8H = 6
LAST_8H_START = 16  # windows inside the local day: 00-07 ... 16-23
DEVICE_BITS = 32  # a Categorical's physical code is a UInt32
STAT_FOR_AVERAGING = {"24h": "mean24", "8h": "max8h", "1h": "max1h"}
DAY_STAT = {p: ("max8h" if p == "o3" else "mean24") for p in POLLUTANTS}
METHOD = "air-1.0"


def category_slug(name: str) -> str:
    """'Unhealthy for Sensitive Groups' -> 'unhealthy_for_sensitive_groups'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def mean_indicator(pollutant: str) -> str:
    return "air.o3.max8h" if pollutant == "o3" else f"air.{pollutant}.mean"


def hourly_means(readings: pl.LazyFrame) -> pl.LazyFrame:
    """City hourly means from local-time readings: city, quantity, hour_idx, value, n_devices.

    The device-hour group-by sees every reading (tens of millions of rows), so its key is one
    Int64 (polars' fastest group-by) packing the city and quantity codes from fixed lists
    (cities of the registry, POLLUTANTS), the device's categorical code and the local hour;
    the sums are fixed-point Int64 (frames.dsum). The city-hour group-by then keys on the same
    Int64 without the device bits. Readings without a local hour are ignored. The hour takes
    `hour_bits` bits (23 with the registry's 31 cities: hours within ~478 years of 1970);
    outside that range the strict cast fails instead of mixing groups.
    """
    cities = sorted(load_cities())
    schema = readings.collect_schema()
    hour_bits = 63 - DEVICE_BITS - max(1, (len(cities) * len(POLLUTANTS) - 1).bit_length())
    half = 2 ** (hour_bits - 1)
    shifted = pl.col("hour_idx") + half  # in [0, 2^hour_bits) for |hour_idx| < half
    checked = pl.when(shifted < 2 * half).then(shifted).otherwise(-1).cast(pl.UInt32)
    group = pl.col("_c") * len(POLLUTANTS) + pl.col("_q")
    device_hour = (
        readings.select(
            _c=index_of(schema, "city", cities, pl.Int64()),
            _q=index_of(schema, "quantity", POLLUTANTS, pl.Int64()),
            _d=pl.col("device").cast(pl.Categorical).to_physical().cast(pl.Int64),
            hour_idx=pl.col("hour_idx"),
            _f=fixed(pl.col("value")),
        )
        .drop_nulls(["_c", "_q", "_f", "hour_idx"])
        .group_by(_k=(group * 2**DEVICE_BITS + pl.col("_d")) * 2**hour_bits + checked)
        .agg(_s=pl.col("_f").sum(), _n=pl.len())
        .with_columns(_f=fixed(pl.col("_s") / FIXED_SCALE / pl.col("_n")))
    )
    high = 2 ** (DEVICE_BITS + hour_bits)
    city_hour = device_hour.group_by(
        _k=(pl.col("_k") // high) * 2**hour_bits + pl.col("_k") % 2**hour_bits
    ).agg(_s=pl.col("_f").sum(), n_devices=pl.len())
    g = pl.col("_k") // 2**hour_bits
    return city_hour.select(
        city=(g // len(POLLUTANTS)).replace_strict(dict(enumerate(cities)), return_dtype=pl.String),
        quantity=(g % len(POLLUTANTS)).replace_strict(
            dict(enumerate(POLLUTANTS)), return_dtype=pl.String
        ),
        hour_idx=pl.col("_k") % 2**hour_bits - half,
        value=pl.col("_s") / FIXED_SCALE / pl.col("n_devices"),
        n_devices=pl.col("n_devices"),
    )


def daily_stats(hourly: pl.LazyFrame) -> pl.LazyFrame:
    """Per city, quantity, local day: n_hours, mean24, max1h, max8h (null unless valid).

    `hourly` is read more than once: pass a collected frame (`daily` does).
    """
    h = hourly.with_columns(
        day=(pl.col("hour_idx") // 24).cast(pl.Int32).cast(pl.Date),
        hod=(pl.col("hour_idx") % 24).cast(pl.Int32),
    )
    base = h.group_by("city", "quantity", "day").agg(
        n_hours=pl.len(), mean24=dmean(pl.col("value")), max1h=pl.col("value").max()
    )
    windows = _max8h(h)
    valid = pl.col("n_hours") >= MIN_HOURS_PER_DAY
    return (
        base.join(windows, on=["city", "quantity", "day"], how="left")
        .with_columns(
            [pl.when(valid).then(pl.col(c)).alias(c) for c in ("mean24", "max1h", "max8h")]
        )
        .with_columns(pl.col("n_hours").cast(pl.Int64))
    )


def _max8h(h: pl.LazyFrame) -> pl.LazyFrame:
    """city, quantity, day, max8h: the largest mean of the 8-hour windows starting at
    00:00-16:00 of the local day, each needing MIN_HOURS_8H rows.

    On a dense grid (24 slots per city, quantity and day, in hour order) the window ending at
    hour t (t = 7..23) is the 8 slots t-7..t of the same day, so its fixed-point sum and counts
    are sums of 8 shifted columns: exact Int64 sums, no exploded rows, no string keys.
    """
    keys = ["city", "quantity", "day"]
    ids = (
        h.filter(pl.col("day").is_not_null())
        .with_columns(_g=pl.struct(keys).rank("dense").cast(pl.Int64) - 1)
        .select(*keys, "_g", slot=pl.col("_g") * 24 + pl.col("hod"), _f=fixed(pl.col("value")),
                _v=pl.col("value").is_not_null())
    )  # fmt: skip
    slots = ids.group_by("slot").agg(
        _s=pl.col("_f").sum(), _c=pl.col("_v").sum().cast(pl.Int64), _n=pl.len().cast(pl.Int64)
    )
    days = ids.group_by("_g").agg(pl.col(keys).first())
    hours = pl.LazyFrame({"hod": pl.int_range(0, 24, dtype=pl.Int64, eager=True)})
    grid = (
        days.select("_g")
        .join(hours, how="cross")
        .with_columns(slot=pl.col("_g") * 24 + pl.col("hod"))
        .join(slots, on="slot", how="left")
        .sort("slot")
        .with_columns(pl.col("_s", "_c", "_n").fill_null(0))
    )
    total = {c: pl.sum_horizontal([pl.col(c).shift(k) for k in range(WINDOW_8H)]) for c in
             ("_s", "_c", "_n")}  # fmt: skip
    window = (
        grid.with_columns(**total)
        .filter((pl.col("hod") >= WINDOW_8H - 1) & (pl.col("_n") >= MIN_HOURS_8H))
        .group_by("_g")
        .agg(max8h=pl.when(pl.col("_c") > 0).then(pl.col("_s") / FIXED_SCALE / pl.col("_c")).max())
    )
    return window.join(days, on="_g").select(*keys, "max8h")


def daily_wide(daily: pl.LazyFrame) -> pl.LazyFrame:
    """One row per city and day with `<pollutant>_<stat>` columns (AQI input)."""
    cols = [
        pl.col(stat).filter(pl.col("quantity") == p).first().alias(f"{p}_{stat}")
        for p in POLLUTANTS
        for stat in ("mean24", "max1h", "max8h")
    ]
    return daily.group_by("city", "day").agg(cols)


def aqi_daily(wide: pl.LazyFrame, standards: tuple[str, ...] | None = None) -> pl.LazyFrame:
    """city, day, standard, aqi (Int64), level (1 = best), category, n_sub, completeness."""
    frames = []
    for sid in standards or tuple(STANDARDS):
        std = STANDARDS[sid]
        subs = []
        pollutants = []
        for table in std.tables:
            stat = STAT_FOR_AVERAGING.get(table.averaging)
            if stat is None:  # NowCast: hourly reporting only
                continue
            col = pl.col(f"{table.pollutant}_{stat}")
            subs.append(
                sub_index_expr(
                    sid, table.pollutant, table.averaging, col, KOTA_UNIT[table.pollutant]
                )
            )
            if table.pollutant not in pollutants:
                pollutants.append(table.pollutant)
        index = pl.max_horizontal(subs)
        level: pl.Expr = pl.lit(None, dtype=pl.Int64)
        for pos, cat in reversed(list(enumerate(std.categories, start=1))):
            inside = pl.col("aqi") >= cat.i_lo
            if cat.i_hi is not None:
                inside = inside & (pl.col("aqi") <= cat.i_hi)
            level = pl.when(inside).then(pl.lit(pos, dtype=pl.Int64)).otherwise(level)
        valid_pollutants = pl.sum_horizontal(
            [
                pl.any_horizontal(
                    [pl.col(f"{p}_{s}").is_not_null() for s in ("mean24", "max1h", "max8h")]
                ).cast(pl.Int64)
                for p in pollutants
            ]
        )
        frames.append(
            wide.select(
                "city",
                "day",
                pl.lit(sid).alias("standard"),
                index.alias("aqi"),
                n_sub=pl.sum_horizontal([s.is_not_null().cast(pl.Int64) for s in subs]),
                completeness=valid_pollutants / len(pollutants),
            ).with_columns(level=level)
        )
    return pl.concat(frames, how="vertical")


def _who_table(catalogue: dict[str, Indicator]) -> pl.LazyFrame:
    rows = [
        (i.id, i.pollutant, i.statistic, float(i.threshold))
        for i in catalogue.values()
        if i.threshold is not None and i.pollutant
    ]
    return pl.LazyFrame(
        rows, schema={"indicator": pl.String, "quantity": pl.String, "statistic": pl.String,
                      "threshold": pl.Float64}, orient="row",
    )  # fmt: skip


def indicators(
    daily: pl.LazyFrame,
    aqi: pl.LazyFrame,
    period_type: str,
    catalogue: dict[str, Indicator] | None = None,
) -> pl.LazyFrame:
    """The air rows of the long table for `period_type` (day, month or year)."""
    cat = catalogue if catalogue is not None else load_catalogue()
    stat = pl.lit(None, dtype=pl.Float64)
    for p in POLLUTANTS:
        stat = pl.when(pl.col("quantity") == p).then(pl.col(DAY_STAT[p])).otherwise(stat)
    d = daily.filter(pl.col("quantity").is_in(POLLUTANTS)).with_columns(stat=stat)
    name = pl.concat_str(pl.lit("air."), pl.col("quantity"), pl.lit(".")) + pl.when(
        pl.col("quantity") == "o3"
    ).then(pl.lit("max8h")).otherwise(pl.lit("mean"))
    if period_type == "day":
        means = long_rows(
            with_period(d, "day").with_columns(
                value=pl.col("stat"),
                n_obs=pl.col("n_hours"),
                completeness=pl.col("n_hours") / 24.0,
            ),
            name,
            "day",
        )
        a = with_period(aqi, "day")
        index_rows = long_rows(
            a.with_columns(value=pl.col("aqi").cast(pl.Float64), n_obs=pl.col("n_sub")),
            pl.concat_str(pl.lit("air.aqi."), pl.col("standard")),
            "day",
        )
        level_rows = long_rows(
            a.with_columns(value=pl.col("level").cast(pl.Float64), n_obs=pl.col("n_sub")),
            pl.concat_str(pl.lit("air.aqi."), pl.col("standard"), pl.lit(".level")),
            "day",
        )
        return pl.concat([means, index_rows, level_rows])
    if period_type not in ("month", "year"):
        raise ValueError(f"unknown period type {period_type!r}")
    keys = ["city", "quantity", "period_start", "period_end", "period_days"]
    dp = with_period(d, period_type)
    agg = dp.group_by(keys).agg(
        n_valid=pl.col("stat").is_not_null().sum(), mean=dmean(pl.col("stat"))
    )
    share = pl.col("n_valid") / pl.col("period_days")
    means = long_rows(
        agg.with_columns(
            value=pl.when(share >= MIN_SHARE).then(pl.col("mean")),
            n_obs=pl.col("n_valid"),
            completeness=share,
        ),
        name,
        period_type,
    )
    who = (
        dp.join(_who_table(cat), on="quantity", how="inner")
        .group_by(["indicator", *keys])
        .agg(
            n_valid=pl.col("stat").is_not_null().sum(),
            above=(pl.col("stat") > pl.col("threshold")).sum(),
        )
    )
    who_rows = long_rows(
        who.with_columns(
            value=pl.col("above").cast(pl.Float64),
            n_obs=pl.col("n_valid"),
            completeness=pl.col("n_valid") / pl.col("period_days"),
        ),
        pl.col("indicator"),
        period_type,
    )
    return pl.concat([means, who_rows, _aqi_period_rows(aqi, period_type)])


def _aqi_period_rows(aqi: pl.LazyFrame, period_type: str) -> pl.LazyFrame:
    a = with_period(aqi, period_type)
    keys = ["city", "standard", "period_start", "period_end", "period_days"]
    frames = []
    for sid, std in STANDARDS.items():
        per = (
            a.filter(pl.col("standard") == sid)
            .group_by(keys)
            .agg(
                n_days=pl.col("aqi").is_not_null().sum(),
                **{
                    f"c{pos}": (pl.col("level") == pos).sum()
                    for pos in range(1, len(std.categories) + 1)
                },
            )
        )
        completeness = pl.col("n_days") / pl.col("period_days")
        for pos, cat in enumerate(std.categories, start=1):
            frames.append(
                long_rows(
                    per.with_columns(
                        value=pl.col(f"c{pos}").cast(pl.Float64),
                        n_obs=pl.col("n_days"),
                        completeness=completeness,
                    ),
                    f"air.aqi.{sid}.days.{category_slug(cat.name)}",
                    period_type,
                )
            )
        frames.append(
            long_rows(
                per.with_columns(
                    value=pl.when(pl.col("n_days") > 0).then(
                        100.0 * pl.col("c1") / pl.col("n_days")
                    ),
                    n_obs=pl.col("n_days"),
                    completeness=completeness,
                ),
                f"air.aqi.{sid}.share_good",
                period_type,
            )
        )
    return pl.concat(frames) if frames else empty_long()


def daily(readings: pl.LazyFrame) -> pl.LazyFrame:
    """The heavy part: local-time readings (without OUT_OF_RANGE) -> daily statistics.

    The city hourly means (one row per city, pollutant and hour) are collected here: the
    daily statistics read them several times, and a lazy input would be recomputed each time.
    """
    air = readings.filter(pl.col("quantity").is_in(POLLUTANTS))
    return daily_stats(hourly_means(air).collect().lazy())


def from_daily(daily_frame: pl.DataFrame, period_type: str) -> pl.DataFrame:
    """Long rows from the (small, collected) daily statistics.

    The AQI frame is collected once before it is used twice: a lazy plan that repeats the
    six standards' breakpoint chains costs more to optimise than to run.
    """
    aqi = aqi_daily(daily_wide(daily_frame.lazy())).collect()
    return indicators(daily_frame.lazy(), aqi.lazy(), period_type).collect()


def run(readings: pl.LazyFrame, period_type: str) -> pl.DataFrame:
    """Long rows from local-time readings (already without OUT_OF_RANGE)."""
    return from_daily(daily(readings).collect(), period_type)
