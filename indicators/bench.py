"""Indicator benchmark: a year of hourly readings as a Parquet archive, the full annual job
timed from `scan_parquet` in a child process (wall time and peak RSS), and the same core
aggregation (daily means per city and quantity with completeness) done by SQL in PostgreSQL.

    from indicators.bench import run_indicators_bench
    print(run_indicators_bench())          # ~32 M rows: 31 cities x 20 devices x 6 x 8760 h

Owns: the synthetic archive generator (numpy/polars, vectorised, the archive's own layout
`city=XXX/date=YYYY-MM-DD/part-0.parquet`), the child-process job runner and the SQL
comparison. The lead wires it as `kota bench indicators`.
May import: numpy, polars, psycopg, `storage`, `gateway.schema`, `kota_cli.servers`.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from gateway.schema import load_cities

YEAR = 2025
# Quantities in the order they are added: the six AQI pollutants first, then other domains.
BENCH_QUANTITIES: tuple[tuple[str, float], ...] = (
    ("pm2_5", 25.0), ("pm10", 45.0), ("no2", 30.0), ("so2", 8.0), ("co", 0.9), ("o3", 60.0),
    ("vehicle_speed", 40.0), ("vehicle_count", 120.0), ("voltage", 230.0), ("water_flow", 0.4),
)  # fmt: skip
TARGET_SECONDS = 20.0
TARGET_RSS_MB = 3072.0


def generate_archive(
    root: Path, cities: list[str], devices_per_city: int, quantities: int, days: int, seed: int = 1
) -> dict[str, Any]:
    """Write hourly readings for `days` days from 1 January as Hive-partitioned Parquet."""
    rng = np.random.default_rng(seed)
    qs = BENCH_QUANTITIES[:quantities]
    hours = days * 24
    t0 = int(datetime(YEAR, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
    hour_us = np.arange(hours, dtype=np.int64) * 3_600_000_000
    diurnal = 1.0 + 0.4 * np.sin(2 * np.pi * (np.arange(hours) % 24 - 8) / 24.0)
    seasonal = 1.0 + 0.3 * np.cos(2 * np.pi * np.arange(hours) / (24 * 365.0))
    rows = files = 0
    for city in cities:
        n = devices_per_city * len(qs) * hours
        dev_idx = np.repeat(np.arange(devices_per_city), len(qs) * hours)
        q_idx = np.tile(np.repeat(np.arange(len(qs)), hours), devices_per_city)
        h_idx = np.tile(np.arange(hours), devices_per_city * len(qs))
        base = np.array([b for _, b in qs])[q_idx]
        noise = rng.lognormal(0.0, 0.25, n)
        value = base * diurnal[h_idx] * seasonal[h_idx] * noise
        minute = (dev_idx * 7 % 60).astype(np.int64) * 60_000_000  # devices report at :00-:59
        observed = t0 + hour_us[h_idx] + minute
        c = city.lower()
        frame = pl.DataFrame(
            {
                "city": pl.Series([city]).new_from_index(0, n),
                "site": pl.Series([f"{c}-site-{i // 4}" for i in range(devices_per_city)])[dev_idx],
                "device": pl.Series([f"{c}-dev-{i:03d}" for i in range(devices_per_city)])[dev_idx],
                "quantity": pl.Series([q for q, _ in qs])[q_idx],
                "value": np.round(value, 2),
                "observed_at": pl.Series(observed).cast(pl.Datetime("us", "UTC")),
                "flags": np.where(rng.random(n) < 1e-4, 1, 0).astype(np.int16),
            }
        ).with_columns(date=pl.col("observed_at").dt.date())
        for (day,), part in frame.partition_by("date", as_dict=True).items():
            out = root / f"city={city}" / f"date={day.isoformat()}"
            out.mkdir(parents=True, exist_ok=True)
            part.drop("date").write_parquet(out / "part-0.parquet", compression="zstd")
            files += 1
        rows += n
    return {"rows": rows, "files": files}


def _child(root: str, out_dir: str, year: int) -> None:
    """Entry point of the timed child: the full annual M&E job from scan_parquet."""
    from indicators import me, source
    from indicators.periods import Span

    started = time.perf_counter()
    result = me.run(
        source.parquet_source(root), Span(date(year, 1, 1), date(year, 12, 31)), "year",
        source_label=f"parquet:{root}",
    )  # fmt: skip
    me.write_output(result, Path(out_dir), "parquet", f"indicators_{year}_year")
    seconds = time.perf_counter() - started
    hwm_kb = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm_kb = int(line.split()[1])
    print(
        json.dumps({"seconds": seconds, "rows_out": result.table.height, "vmhwm_mb": hwm_kb / 1024})
    )


def run_job_in_child(root: Path, out_dir: Path, year: int = YEAR) -> dict[str, Any]:
    code = f"from indicators.bench import _child; _child({str(root)!r}, {str(out_dir)!r}, {year})"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - wall
    if proc.returncode != 0:
        raise RuntimeError(f"indicator job failed: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["process_seconds"] = wall  # including interpreter start and imports
    out["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB; max over children waited so far
    # CPU seconds of the child (user + system): on a busy shared machine wall time depends on
    # the other load, CPU time much less; cpu / cores is the wall time on an idle machine.
    out["cpu_seconds"] = (usage.ru_utime - before.ru_utime) + (usage.ru_stime - before.ru_stime)
    return out


SQL_DAILY = """
WITH device_hour AS (
    SELECT r.city, r.device, r.quantity,
           date_trunc('hour', r.observed_at AT TIME ZONE c.timezone) AS local_hour,
           avg(r.value) AS v
    FROM readings r JOIN cities c ON c.locode = r.city
    WHERE r.observed_at >= %(start)s AND r.observed_at < %(end)s
      AND r.quantity = ANY(%(quantities)s) AND (r.flags & 1) = 0
    GROUP BY 1, 2, 3, 4
), city_hour AS (
    SELECT city, quantity, local_hour, avg(v) AS v FROM device_hour GROUP BY 1, 2, 3
)
SELECT city, quantity, local_hour::date AS day, count(*) AS n_hours,
       CASE WHEN count(*) >= 18 THEN avg(v) END AS mean, count(*) / 24.0 AS completeness
FROM city_hour GROUP BY 1, 2, 3
"""


def sql_comparison(url: str, root: Path, cities: list[str], year: int = YEAR) -> dict[str, Any]:
    """Load the cities' readings into PostgreSQL, time SQL vs polars daily means on them."""
    import psycopg

    from indicators import air, source
    from storage.migrate import migrate

    migrate(url)
    frame = (
        pl.scan_parquet(root / "**" / "*.parquet", hive_partitioning=True)
        .filter(pl.col("city").is_in(cities))
        .select("device", "quantity", "observed_at", "city", "site", "value", "flags")
        .collect()
    )
    buf = io.BytesIO()
    frame.write_csv(buf, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.f+00:00")
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY readings (device, quantity, observed_at, city, site, value, flags) "
            "FROM STDIN (FORMAT csv)"
        ) as copy:
            view = buf.getbuffer()
            for i in range(0, len(view), 1 << 22):
                copy.write(view[i : i + (1 << 22)])
        conn.commit()
        cur.execute("ANALYZE readings")
        conn.commit()
    load_s = time.perf_counter() - started
    start = datetime(year, 1, 1, tzinfo=UTC) - timedelta(days=1)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) + timedelta(days=1)
    qs = list(air.POLLUTANTS)
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        sql_rows = conn.execute(
            SQL_DAILY, {"start": start, "end": end, "quantities": qs}
        ).fetchall()
    sql_s = time.perf_counter() - started
    started = time.perf_counter()
    src = source.parquet_source(root)
    lf = source.with_local_time(src(start, end, cities, qs), source.timezones(cities), start, end)
    used, _ = source.split_flagged(lf)
    daily = air.daily(used).collect()
    polars_s = time.perf_counter() - started
    sql_df = pl.DataFrame(
        sql_rows, orient="row",
        schema={"city": pl.String, "quantity": pl.String, "day": pl.Date, "n_hours": pl.Int64,
                "sql_mean": pl.Float64, "completeness": pl.Float64},
    )  # fmt: skip
    both = sql_df.join(daily, on=["city", "quantity", "day"], how="full", coalesce=True)
    diff = both.select((pl.col("sql_mean") - pl.col("mean24")).abs().max()).item()
    return {
        "rows_loaded": frame.height,
        "cities": cities,
        "load_s": round(load_s, 2),
        "sql_daily_s": round(sql_s, 2),
        "polars_daily_same_rows_s": round(polars_s, 2),
        "daily_rows_sql": len(sql_rows),
        "daily_rows_polars": daily.height,
        "max_abs_diff_daily_mean": diff,
        "n_hours_equal": both.filter(pl.col("n_hours") != pl.col("n_hours_right")).height == 0,
    }


def run_indicators_bench(
    cities: int = 31,
    devices_per_city: int = 20,
    quantities: int = 6,
    days: int = 365,
    workdir: str | Path | None = None,
    *,
    database_url: str | None = None,
    sql_max_rows: int = 3_200_000,
) -> dict[str, Any]:
    """Generate, time the annual job (child process) and compare with SQL; returns a dict
    (also JSON-printable). `sql_max_rows` bounds how many rows are loaded into PostgreSQL."""
    if not 1 <= quantities <= len(BENCH_QUANTITIES):
        raise ValueError(f"quantities must be 1..{len(BENCH_QUANTITIES)}")
    registry = sorted(load_cities())
    chosen = registry[: max(1, min(cities, len(registry)))]
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="kota-ind-bench-")
        workdir = tmp.name
    work = Path(workdir)
    root = work / "archive"
    try:
        started = time.perf_counter()
        gen = generate_archive(root, chosen, devices_per_city, quantities, days)
        gen_s = time.perf_counter() - started
        job = run_job_in_child(root, work / "out")
        per_city = gen["rows"] // len(chosen)
        sql_cities = chosen[: max(1, min(len(chosen), sql_max_rows // max(per_city, 1)))]
        if database_url:
            sql = sql_comparison(database_url, root, sql_cities)
        else:
            from kota_cli.servers import PostgresServer, temp_dir

            server = PostgresServer(temp_dir("kota-ind-bench-pg-"), fsync=False)
            server.start()
            try:
                sql = sql_comparison(server.create_database("bench"), root, sql_cities)
            finally:
                server.destroy()
        result = {
            "benchmark": "indicators",
            "machine": {"cpus": os.cpu_count()},
            "input": {"cities": len(chosen), "devices_per_city": devices_per_city,
                      "quantities": [q for q, _ in BENCH_QUANTITIES[:quantities]], "days": days,
                      "rows": gen["rows"], "files": gen["files"],
                      "generate_s": round(gen_s, 2)},
            "job": {"seconds": round(job["seconds"], 2),
                    "process_seconds": round(job["process_seconds"], 2),
                    "cpu_seconds": round(job["cpu_seconds"], 2),
                    "load_average_1m": round(os.getloadavg()[0], 2),
                    "peak_rss_mb": round(job["peak_rss_mb"], 1),
                    "vmhwm_mb": round(job["vmhwm_mb"], 1), "rows_out": job["rows_out"],
                    "target_seconds": TARGET_SECONDS, "target_rss_mb": TARGET_RSS_MB,
                    "within_target": job["seconds"] < TARGET_SECONDS
                    and job["peak_rss_mb"] < TARGET_RSS_MB},
            "sql": sql,
        }  # fmt: skip
        return result
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    print(json.dumps(run_indicators_bench(), indent=2, default=str))
