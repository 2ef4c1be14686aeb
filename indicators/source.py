"""Where readings come from, and local time: the one place both sources meet.

Owns: the normalised input frame every job reads (`INPUT_SCHEMA`: city, site, device,
quantity, value, observed_at UTC, flags), the two sources - PostgreSQL through
`storage.arrow.read_readings` (COPY ... TO STDOUT into Arrow, never row-by-row) and the Parquet
archive through `pl.scan_parquet(..., hive_partitioning=True)` - and the local-time columns
(`hour_idx`, `day`, `hod`) derived per city from its IANA zone. Everything after this module
is the same lazy code for both sources.
May import: polars, pyarrow, `storage`, `gateway.schema`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from gateway.schema import QualityFlag, load_cities

INPUT_SCHEMA: dict[str, pl.DataType] = {
    "city": pl.String(),
    "site": pl.String(),
    "device": pl.String(),
    "quantity": pl.String(),
    "value": pl.Float64(),
    "observed_at": pl.Datetime("us", "UTC"),
    "flags": pl.Int32(),
}
OUT_OF_RANGE = int(QualityFlag.OUT_OF_RANGE)

# (start_utc, end_utc, cities or None, quantities) -> LazyFrame in INPUT_SCHEMA
Source = Callable[[datetime, datetime, Sequence[str] | None, Sequence[str]], pl.LazyFrame]


def normalise(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Select and cast the input columns (extra columns such as hive `date` are dropped)."""
    return lf.select([pl.col(name).cast(dtype) for name, dtype in INPUT_SCHEMA.items()])


def utc_window(first: date, last: date) -> tuple[datetime, datetime]:
    """A UTC window surely containing local days [first, last] in any zone (UTC-12..+14),
    plus one day before so cumulative meters have the reading preceding the first day."""
    start = datetime.combine(first - timedelta(days=2), time(), UTC)
    end = datetime.combine(last + timedelta(days=2), time(), UTC)
    return start, end


def database_source(conninfo: str) -> Source:
    """Readings from PostgreSQL via storage.arrow.read_readings (COPY to Arrow)."""

    def load(
        start: datetime, end: datetime, cities: Sequence[str] | None, quantities: Sequence[str]
    ) -> pl.LazyFrame:
        from storage.arrow import read_readings

        table = read_readings(conninfo, start, end, cities=cities, quantities=list(quantities))
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return normalise(frame.lazy())

    return load


def parquet_source(root: str | Path) -> Source:
    """Readings from the Hive-partitioned archive `city=XXX/date=YYYY-MM-DD/*.parquet`.

    The files are listed here, not by a glob in the scan: only the requested cities'
    directories, and only the `date=` directories inside the window (the same partition
    pruning the scan would do), so a batch of cities reads just its own files. The row
    filters (window, cities, quantities) stay in the plan; `compute` collects it with
    `SCAN_OPTIMIZATIONS`, which keeps them out of the Parquet reader: on the archive's many
    small files the reader's per-file prefiltering costs more than filtering the rows after.
    """
    root = Path(root)

    def load(
        start: datetime, end: datetime, cities: Sequence[str] | None, quantities: Sequence[str]
    ) -> pl.LazyFrame:
        files = archive_files(root, start, end, cities)
        if not files:
            return pl.LazyFrame(schema=INPUT_SCHEMA)
        lf = pl.scan_parquet(files, hive_partitioning=True)
        pred = pl.col("observed_at").is_between(start, end, closed="left")
        if cities is not None:
            pred = pred & pl.col("city").is_in(list(cities))
        pred = pred & pl.col("quantity").is_in(list(quantities))
        return normalise(lf.filter(pred))

    return load


def archive_files(
    root: Path, start: datetime, end: datetime, cities: Sequence[str] | None
) -> list[str]:
    """The archive's Parquet files that can hold readings of `cities` in [start, end).

    A `date=YYYY-MM-DD` directory (the UTC day) outside [start - 1 day, end] is pruned; files
    not under a `date=` directory are always kept. Sorted, so the row order is stable.
    """
    tops = [root] if cities is None else [root / f"city={c}" for c in cities]
    first, last = start.date() - timedelta(days=1), end.date()
    out: list[str] = []

    def walk(path: str) -> None:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_dir():
                    key, sep, value = entry.name.partition("=")
                    if sep and key == "date":
                        try:
                            day = date.fromisoformat(value)
                        except ValueError:
                            day = None
                        if day is not None and not first <= day <= last:
                            continue
                    walk(entry.path)
                elif entry.name.endswith(".parquet"):
                    out.append(entry.path)

    for top in tops:
        if top.is_dir():
            walk(str(top))
    return sorted(out)


def frame_source(frame: pl.DataFrame | pl.LazyFrame) -> Source:
    """Readings from an in-memory frame (tests, notebooks)."""
    lazy = frame.lazy()

    def load(
        start: datetime, end: datetime, cities: Sequence[str] | None, quantities: Sequence[str]
    ) -> pl.LazyFrame:
        lf = normalise(lazy).filter(
            pl.col("observed_at").is_between(start, end, closed="left")
            & pl.col("quantity").is_in(list(quantities))
        )
        return lf if cities is None else lf.filter(pl.col("city").is_in(list(cities)))

    return load


def zone_offsets(zone: str, start: datetime, end: datetime) -> list[int]:
    """Distinct UTC offsets (seconds) of `zone` over [start, end], sampled hourly."""
    hours = pl.datetime_range(start, end, "1h", time_zone="UTC", eager=True)
    local = hours.dt.convert_time_zone(zone).dt.replace_time_zone(None)
    offsets = (local - hours.dt.replace_time_zone(None)).dt.total_seconds().unique()
    return sorted(int(v) for v in offsets.to_list())


def timezones(cities: Sequence[str] | None = None) -> dict[str, str]:
    """IANA zone per city from the registry (gateway/schema/cities.csv)."""
    registry = load_cities()
    chosen = registry if cities is None else {c: registry[c] for c in cities if c in registry}
    return {c: city.timezone for c, city in chosen.items()}


# How `compute` collects a batch's read. Predicates stay where they are written: the archive's
# partitions are pruned by `archive_files`, and filtering the decoded rows is cheaper than the
# Parquet reader's per-file prefiltering on many small files (docs/indicators.md, Benchmark).
SCAN_OPTIMIZATIONS = pl.QueryOptFlags(predicate_pushdown=False)


def city_enum() -> pl.Enum:
    """The registry's cities (sorted) as an Enum: the physical code is the sorted index."""
    return pl.Enum(sorted(load_cities()))


def coded(lf: pl.LazyFrame, quantities: Sequence[str]) -> pl.LazyFrame:
    """INPUT_SCHEMA with dictionary-coded text columns, for the batch jobs.

    city -> `city_enum()` (cities outside the registry become null: they have no zone and
    `with_local_time` drops them), quantity -> Enum of `quantities` (others become null and
    are dropped here), device -> Categorical. Every filter, group-by, join and window of the
    jobs on these columns then works on integer codes instead of strings; the jobs cast back
    to String wherever a value leaves them, so results are the same as on String columns.
    `site` stays String: only the traffic job reads it, on its own (few) rows.
    """
    return lf.with_columns(
        pl.col("city").cast(city_enum(), strict=False),
        pl.col("quantity").cast(pl.Enum(list(dict.fromkeys(quantities))), strict=False),
        pl.col("device").cast(pl.Categorical),
    ).filter(pl.col("quantity").is_not_null())


def with_local_time(
    lf: pl.LazyFrame, zones: dict[str, str], start: datetime, end: datetime
) -> pl.LazyFrame:
    """Add local `hour_idx` (hours since the local epoch), `day` (local date), `hod` (0-23).

    Cities whose zone keeps one UTC offset over the window (every ASEAN zone) get a constant
    offset looked up per row - cheap on tens of millions of rows (a gather by code when `city`
    is an Enum, see `coded`); zones that change offset inside the window (DST) are converted
    with `dt.convert_time_zone`. Rows of cities not in the registry get no local time and are
    dropped.
    """
    fixed: dict[str, int] = {}
    changing: dict[str, list[str]] = {}
    for city, zone in zones.items():
        offsets = zone_offsets(zone, start, end)
        if len(offsets) == 1:
            fixed[city] = offsets[0]
        else:
            changing.setdefault(zone, []).append(city)
    obs = pl.col("observed_at")
    dtype = lf.collect_schema().get("city")
    if isinstance(dtype, pl.Enum):
        table = pl.Series([fixed.get(c) for c in dtype.categories], dtype=pl.Int64)
        offset = pl.lit(table).gather(pl.col("city").to_physical())
    else:
        offset = pl.col("city").replace_strict(fixed, default=None, return_dtype=pl.Int64)
    for zone, cities in changing.items():
        if isinstance(dtype, pl.Enum):
            cities = [c for c in cities if c in set(dtype.categories)]
        local = obs.dt.convert_time_zone(zone).dt.replace_time_zone(None)
        exact = (local - obs.dt.replace_time_zone(None)).dt.total_seconds()
        offset = pl.when(pl.col("city").is_in(cities)).then(exact).otherwise(offset)
    local_s = obs.dt.epoch("s") + offset
    return (
        lf.with_columns(hour_idx=local_s // 3600)
        .filter(pl.col("hour_idx").is_not_null())
        .with_columns(
            day=(pl.col("hour_idx") // 24).cast(pl.Int32).cast(pl.Date),
            hod=(pl.col("hour_idx") % 24).cast(pl.Int8),
        )
    )


def split_flagged(lf: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(readings used, counts of OUT_OF_RANGE readings excluded per city/quantity)."""
    bad = (pl.col("flags") & OUT_OF_RANGE) != 0
    excluded = lf.filter(bad).group_by("city", "quantity").agg(excluded=pl.len())
    return lf.filter(~bad), excluded
