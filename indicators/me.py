"""M&E output: one long table of city indicators with baseline, target, progress, change and
rank; written to CSV / Parquet / XLSX with metadata and upserted into `indicator_values`.

Owns: running the three jobs on one source (`compute`), the targets file (`targets.toml`),
the M&E columns (`assemble`), the exports (`write_output`) and the idempotent upsert
(`upsert_values`). Columns, in order: `COLUMNS`. Definitions (docs/indicators.md):
- baseline = the indicator's annual value in the baseline year (targets.toml, --baseline-year);
- target = per-city override or default from targets.toml, for the listed period types;
- progress_pct = 100 x (value - baseline) / (target - baseline) when the baseline is on the
  wrong side of the target (share of the baseline-to-target gap closed: 0 = still at the
  baseline, 100 = target reached, > 100 beyond it, < 0 worse); otherwise (no baseline, or the
  baseline already met the target) 100 x target / value (lower is better) or
  100 x value / target (higher is better), so 100 = exactly at target; null for direction
  "none";
- change_pct = 100 x (value - previous) / |previous| against the previous period of the same type;
- rank among the cities of the run, 1 = best in the catalogue direction (ties share the
  smaller rank; null for direction "none" or a null value).
May import: polars, pyarrow, psycopg, xlsxwriter, `storage`, `gateway.schema`.
"""

from __future__ import annotations

import io
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from indicators import air, traffic, utilities
from indicators.catalogue import Indicator, as_rows, load_catalogue, upsert_definitions
from indicators.frames import LONG_SCHEMA
from indicators.periods import Span, period_end, period_start, previous_start
from indicators.source import (
    SCAN_OPTIMIZATIONS,
    Source,
    coded,
    split_flagged,
    timezones,
    utc_window,
    with_local_time,
)

COLUMNS: tuple[str, ...] = (
    "city", "indicator", "period_type", "period_start", "period_end", "value", "unit", "n_obs",
    "completeness", "baseline", "target", "progress_pct", "change_pct", "rank",
    "method_version", "computed_at",
)  # fmt: skip
ALL_QUANTITIES = (*air.QUANTITIES, *traffic.QUANTITIES, *utilities.QUANTITIES)
FORMATS = ("csv", "parquet", "xlsx")
BATCH_CITIES = 4  # cities per batch in compute(): bounds memory to one batch's readings

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    default: float | None
    cities: dict[str, float]
    period_types: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Targets:
    baseline_year: int | None
    targets: dict[str, Target] = field(default_factory=dict)


def parse_targets(text: str, catalogue: dict[str, Indicator] | None = None) -> Targets:
    cat = catalogue if catalogue is not None else load_catalogue()
    data = tomllib.loads(text)
    out: dict[str, Target] = {}
    for ind, row in data.get("targets", {}).items():
        if ind not in cat:
            raise ValueError(f"targets.toml: unknown indicator {ind!r}")
        out[ind] = Target(
            default=None if row.get("default") is None else float(row["default"]),
            cities={k: float(v) for k, v in row.get("cities", {}).items()},
            period_types=tuple(row.get("period_types", ["year"])),
            source=str(row.get("source", "")),
        )
    year = data.get("baseline_year")
    return Targets(None if year is None else int(year), out)


@cache
def load_targets(path: Path | None = None) -> Targets:
    if path is not None:
        return parse_targets(path.read_text("utf-8"))
    return parse_targets((HERE / "targets.toml").read_text("utf-8"))


# --------------------------------------------------------------------------- computing


@dataclass
class Computed:
    """Long rows (LONG_SCHEMA) of one source and span, plus what the metadata reports."""

    rows: pl.DataFrame
    coverage: pl.DataFrame  # city, quantity, readings, devices, first, last, excluded
    meter_events: pl.DataFrame  # city, quantity, event, n


def compute(
    source: Source,
    span: Span,
    period_type: str,
    cities: Sequence[str] | None = None,
    *,
    traffic_cfg: traffic.TrafficConfig | None = None,
    meter_cfg: utilities.MeterConfig | None = None,
    households: utilities.Households | None = None,
    batch_cities: int = BATCH_CITIES,
) -> Computed:
    """Run the air, traffic and utility jobs for every `period_type` period within `span`.

    Reads whole local months around the span (the water normal-flow profile is monthly) plus
    margins for time zones, converts to local time per city, drops OUT_OF_RANGE readings.
    Every indicator is per city, so cities are processed in batches of `batch_cities`: the
    memory used is that of one batch's readings, whatever the number of cities.
    """
    load_first = span.first.replace(day=1)
    load_last = period_end(period_start(span.last, "month"), "month")
    start, end = utc_window(load_first, load_last)
    all_cities = sorted(timezones(cities)) if cities is not None else sorted(timezones())
    parts = []
    for i in range(0, len(all_cities), max(1, batch_cities)):
        batch = all_cities[i : i + max(1, batch_cities)]
        parts.append(
            _compute_batch(
                source, span, period_type, batch, start, end, traffic_cfg, meter_cfg, households
            )
        )
    # The air statistics per city and day are small: their long rows (AQI, WHO days, means)
    # are derived once for every batch together.
    daily = pl.concat([p[0] for p in parts])
    rows = pl.concat([air.from_daily(daily, period_type), *[p[1] for p in parts]])
    rows = rows.filter(pl.col("period_start").is_between(span.first, span.last)).select(
        [pl.col(c).cast(t) for c, t in LONG_SCHEMA.items()]
    )
    cov = pl.concat([p[2] for p in parts])
    ev = pl.concat([p[3] for p in parts])
    return Computed(
        rows.sort("city", "indicator", "period_start"),
        cov.sort("city", "quantity"),
        ev.sort("city", "quantity", "event"),
    )


def _compute_batch(
    source: Source,
    span: Span,
    period_type: str,
    cities: list[str],
    start: datetime,
    end: datetime,
    traffic_cfg: traffic.TrafficConfig | None,
    meter_cfg: utilities.MeterConfig | None,
    households: utilities.Households | None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(air daily statistics, traffic and utility rows, coverage, meter events) of a batch."""
    zones = timezones(cities)
    # One read of the batch (lazy scan or Arrow table), materialised once: every job and the
    # coverage counts below then run on it in memory instead of re-scanning the source. The
    # text columns are dictionary-coded (source.coded) so the jobs filter and group on codes.
    read = coded(source(start, end, cities, ALL_QUANTITIES), ALL_QUANTITIES)
    raw = with_local_time(read, zones, start, end).collect(optimizations=SCAN_OPTIMIZATIONS)
    local = raw.lazy()
    used, excluded = split_flagged(local)
    other = pl.concat(
        [
            traffic.run(used, period_type, traffic_cfg),
            utilities.run(used, period_type, meter_cfg, households),
        ]
    )
    in_span = local.filter(pl.col("day").is_between(span.first, span.last))
    coverage = in_span.group_by("city", "quantity").agg(
        readings=pl.len(),
        devices=pl.col("device").n_unique(),
        first=pl.col("observed_at").min(),
        last=pl.col("observed_at").max(),
    )
    events = utilities.meter_events(used, meter_cfg).with_columns(pl.col("n").cast(pl.Int64))
    excl = excluded.with_columns(pl.col("excluded").cast(pl.Int64))
    daily, rows, cov, ev, ex = pl.collect_all([air.daily(used), other, coverage, events, excl])
    del raw
    text = pl.col("city", "quantity").cast(pl.String)
    cov = cov.join(ex, on=["city", "quantity"], how="left").with_columns(
        pl.col("excluded").fill_null(0), pl.col("readings").cast(pl.Int64),
        pl.col("devices").cast(pl.Int64), text,
    )  # fmt: skip
    return daily, rows, cov, ev.with_columns(text)


# --------------------------------------------------------------------------- M&E columns


def _catalogue_frame(cat: dict[str, Indicator]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "indicator": [i.id for i in cat.values()],
            "unit": [i.unit for i in cat.values()],
            "direction": [i.direction for i in cat.values()],
            "method_version": [i.method_version for i in cat.values()],
        }
    )


def _target_frame(targets: Targets, cities: Sequence[str]) -> pl.DataFrame:
    rows: list[tuple[str, str, str, float]] = []
    for ind, t in targets.targets.items():
        for city in cities:
            value = t.cities.get(city, t.default)
            if value is None:
                continue
            rows.extend((city, ind, pt, value) for pt in t.period_types)
    return pl.DataFrame(
        rows,
        schema={"city": pl.String, "indicator": pl.String, "period_type": pl.String,
                "target": pl.Float64},
        orient="row",
    )  # fmt: skip


def assemble(
    rows: pl.DataFrame,
    previous: pl.DataFrame,
    baseline: pl.DataFrame,
    targets: Targets,
    computed_at: datetime,
    catalogue: dict[str, Indicator] | None = None,
) -> pl.DataFrame:
    """The M&E long table (COLUMNS) from job rows, previous-period rows and baseline rows.

    `previous` holds the rows of the periods just before (only their value is used);
    `baseline` the annual rows of the baseline year.
    """
    cat = catalogue if catalogue is not None else load_catalogue()
    unknown = set(rows["indicator"].unique().to_list()) - set(cat)
    if unknown:
        raise ValueError(f"indicators missing from catalogue.toml: {sorted(unknown)}")
    ptype = pl.col("period_type")
    prev_start = (
        pl.when(ptype == "day")
        .then(pl.col("period_start").dt.offset_by("-1d"))
        .when(ptype == "month")
        .then(pl.col("period_start").dt.offset_by("-1mo"))
        .otherwise(pl.col("period_start").dt.offset_by("-1y"))
    )
    prev = pl.concat([previous, rows]).select(
        "city", "indicator", "period_type", prev_start=pl.col("period_start"),
        previous=pl.col("value"),
    ).unique(["city", "indicator", "period_type", "prev_start"], keep="last")  # fmt: skip
    base = baseline.select("city", "indicator", baseline=pl.col("value"))
    cities = sorted(rows["city"].unique().to_list())
    df = (
        rows.with_columns(prev_start=prev_start)
        .join(prev, on=["city", "indicator", "period_type", "prev_start"], how="left")
        .join(base, on=["city", "indicator"], how="left")
        .join(_target_frame(targets, cities), on=["city", "indicator", "period_type"], how="left")
        .join(_catalogue_frame(cat), on="indicator", how="left")
    )
    v, b, t, d = pl.col("value"), pl.col("baseline"), pl.col("target"), pl.col("direction")
    gap = 100.0 * (v - b) / (t - b)
    # a gap to close: the baseline is on the wrong side of the target
    has_gap = (
        b.is_not_null()
        & t.is_not_null()
        & (((d == "lower") & (b > t)) | ((d == "higher") & (b < t)))
    )
    ratio = pl.when(d == "lower").then(100.0 * t / v).when(d == "higher").then(100.0 * v / t)
    progress = (
        pl.when(d == "none")
        .then(None)
        .when(has_gap)
        .then(gap)
        .when(t.is_not_null() & v.is_not_null() & (v != 0))
        .then(ratio)
    )
    group = ["indicator", "period_type", "period_start"]
    rank = (
        pl.when(d == "lower")
        .then(v.rank("min").over(group))
        .when(d == "higher")
        .then(v.rank("min", descending=True).over(group))
    )
    p = pl.col("previous")
    return (
        df.with_columns(
            progress_pct=progress,
            change_pct=pl.when(p.is_not_null() & (p != 0)).then(100.0 * (v - p) / p.abs()),
            rank=rank.cast(pl.Int32),
            computed_at=pl.lit(computed_at).cast(pl.Datetime("us", "UTC")),
        )
        .select(COLUMNS)
        .sort("city", "indicator", "period_type", "period_start")
    )


@dataclass
class RunResult:
    table: pl.DataFrame
    metadata: dict[str, Any]


def run(
    source: Source,
    span: Span,
    period_type: str,
    cities: Sequence[str] | None = None,
    *,
    source_label: str = "",
    baseline_year: int | None = None,
    targets: Targets | None = None,
    computed_at: datetime | None = None,
    households: utilities.Households | None = None,
) -> RunResult:
    """Compute the M&E table for every `period_type` period in `span` (plus what it needs:
    the previous period for change_pct and the baseline year for baseline/progress)."""
    tg = targets or load_targets()
    hh = households or utilities.load_households()
    byear = baseline_year if baseline_year is not None else tg.baseline_year
    prev_first = previous_start(period_start(span.first, period_type), period_type)
    main = compute(source, Span(prev_first, span.last), period_type, cities, households=hh)
    current = main.rows.filter(pl.col("period_start") >= span.first)
    previous = main.rows.filter(pl.col("period_start") < span.first)
    baseline = pl.DataFrame(schema=LONG_SCHEMA)
    if byear is not None:
        if (
            period_type == "year"
            and Span(prev_first, span.last).first.year <= byear <= span.last.year
        ):
            baseline = main.rows.filter(pl.col("period_start") == date(byear, 1, 1))
        else:
            bspan = Span(date(byear, 1, 1), date(byear, 12, 31))
            baseline = compute(source, bspan, "year", cities, households=hh).rows
    stamp = computed_at or datetime.now(UTC).replace(microsecond=0)
    table = assemble(current, previous, baseline, tg, stamp)
    meta = metadata(table, span, period_type, cities, source_label, byear, tg, hh, main.coverage,
                    main.meter_events, stamp)  # fmt: skip
    return RunResult(table, meta)


# --------------------------------------------------------------------------- metadata & output

RULES = {
    "local_day": "Every day, month and year is a LOCAL calendar period of the city's IANA zone "
    "(gateway/schema/cities.csv); observed_at (UTC) is converted per city before bucketing.",
    "flags": "Readings flagged OUT_OF_RANGE (bit 1) are excluded from every statistic; "
    "coverage[].excluded counts them.",
    "completeness": "A daily air value needs >= 18 of 24 local hourly city means; monthly and "
    "annual means need >= 75 % of the period's days valid; otherwise value is null and "
    "completeness says how much there was. Counts (days above, days per category) are "
    "reported with their completeness whatever it is.",
    "per_capita": "Sample-based estimate: consumption per metered household / household size "
    "(indicators/households.toml), not city total / population.",
    "meters": "Cumulative registers: a drop from the top 1 % of a power-of-ten register is a "
    "rollover (new + modulus - previous), any other drop a reset (new value counted from 0).",
    "progress_pct": "100 x (value - baseline) / (target - baseline) when the baseline is on the "
    "wrong side of the target; otherwise 100 x target / value (lower is better) or "
    "100 x value / target (higher is better); null when the direction is none.",
    "rank": "Among the cities of this run, 1 = best in the indicator's direction.",
}


def metadata(
    table: pl.DataFrame,
    span: Span,
    period_type: str,
    cities: Sequence[str] | None,
    source_label: str,
    baseline_year: int | None,
    targets: Targets,
    households: utilities.Households,
    coverage: pl.DataFrame,
    meter_events: pl.DataFrame,
    computed_at: datetime,
) -> dict[str, Any]:
    """The sidecar: run parameters, methods (catalogue rows), sources, coverage per city."""
    present = set(table["indicator"].unique().to_list())
    city_ids = sorted(table["city"].unique().to_list())
    from gateway.schema import load_cities

    registry = load_cities()
    return {
        "kota_indicators": "1",
        "computed_at": computed_at.isoformat(),
        "source": source_label,
        "period": {"first": span.first.isoformat(), "last": span.last.isoformat(),
                   "period_type": period_type},
        "cities_requested": list(cities) if cities is not None else "all",
        "rows": table.height,
        "baseline_year": baseline_year,
        "rules": RULES,
        "methods": [r for r in as_rows() if r["indicator"] in present],
        "method_versions": {"air": air.METHOD, "traffic": traffic.METHOD,
                            "utilities": utilities.METHOD},
        "targets": {k: {"default": t.default, "cities": t.cities, "period_types": list(t.period_types),
                        "source": t.source} for k, t in targets.targets.items()},
        "households": {c: {"household_size": households.size(c), "source": households.source(c)}
                       for c in city_ids},
        "cities": {c: {"name": registry[c].name, "timezone": registry[c].timezone}
                   for c in city_ids if c in registry},
        "coverage": _jsonable(coverage),
        "meter_events": _jsonable(meter_events.sort("city", "quantity", "event")),
    }  # fmt: skip


def _jsonable(df: pl.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.to_dicts():
        out.append(
            {k: (v.isoformat() if isinstance(v, datetime | date) else v) for k, v in row.items()}
        )
    return out


def write_output(result: RunResult, out_dir: Path, fmt: str, stem: str) -> list[Path]:
    """Write the table (and its metadata) as csv|parquet (+ .meta.json) or xlsx (2 sheets)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.{fmt}"
    meta_text = json.dumps(result.metadata, indent=2, ensure_ascii=False, default=str)
    if fmt == "csv":
        result.table.write_csv(path)
    elif fmt == "parquet":
        result.table.write_parquet(path)
    else:
        _write_xlsx(result, path)
        return [path]
    meta = out_dir / f"{stem}.meta.json"
    meta.write_text(meta_text + "\n", "utf-8")
    return [path, meta]


def _write_xlsx(result: RunResult, path: Path) -> None:
    import xlsxwriter

    table = result.table.with_columns(pl.col("computed_at").dt.replace_time_zone(None))
    meta = result.metadata
    with xlsxwriter.Workbook(str(path)) as wb:
        table.write_excel(workbook=wb, worksheet="indicators", autofit=True)
        ws = wb.add_worksheet("metadata")
        bold = wb.add_format({"bold": True})
        r = 0
        for key in ("computed_at", "source", "rows", "baseline_year"):
            ws.write(r, 0, key, bold)
            ws.write(r, 1, str(meta[key]))
            r += 1
        ws.write(r, 0, "period", bold)
        ws.write(r, 1, json.dumps(meta["period"]))
        r += 2
        for section, key in (("Rules", "rules"),):
            ws.write(r, 0, section, bold)
            r += 1
            for k, v in meta[key].items():
                ws.write(r, 0, k)
                ws.write(r, 1, v)
                r += 1
        r += 1

        def block(title: str, rows: list[dict[str, Any]]) -> None:
            nonlocal r
            ws.write(r, 0, title, bold)
            r += 1
            if not rows:
                ws.write(r, 0, "(none)")
                r += 2
                return
            cols = list(rows[0])
            for c, name in enumerate(cols):
                ws.write(r, c, name, bold)
            r += 1
            for row in rows:
                for c, name in enumerate(cols):
                    v = row[name]
                    ws.write(
                        r, c, v if isinstance(v, int | float | str) or v is None else json.dumps(v)
                    )
                r += 1
            r += 1

        block("Methods (catalogue)", meta["methods"])
        block("Sources: targets", [{"indicator": k, **v} for k, v in meta["targets"].items()])
        block("Sources: household sizes", [{"city": k, **v} for k, v in meta["households"].items()])
        block("Data coverage per city", meta["coverage"])
        block("Meter rollovers and resets", meta["meter_events"])


# --------------------------------------------------------------------------- database

_STAGE = """
CREATE TEMP TABLE indicator_values_stage (LIKE indicator_values INCLUDING DEFAULTS) ON COMMIT DROP
"""
_MERGE = f"""
INSERT INTO indicator_values ({", ".join(COLUMNS)})
SELECT {", ".join(COLUMNS)} FROM indicator_values_stage
ON CONFLICT (city, indicator, period_type, period_start) DO UPDATE SET
{", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[4:])}
"""


def upsert_values(conninfo: str, table: pl.DataFrame) -> int:
    """Upsert the M&E table into indicator_values (one transaction; idempotent by key) and
    the catalogue into indicator_definitions. Returns rows written."""
    from storage.db import connect

    buf = io.BytesIO()
    table.select(COLUMNS).write_csv(buf, datetime_format="%Y-%m-%dT%H:%M:%S%.f+00:00")
    with connect(conninfo) as conn, conn.transaction():
        upsert_definitions(conn)
        conn.execute(_STAGE)
        with conn.cursor() as cur:
            copy_sql = f"COPY indicator_values_stage ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv, HEADER true)"
            with cur.copy(copy_sql) as copy:
                copy.write(buf.getvalue())
            cur.execute(_MERGE)
            n = cur.rowcount
    return n
