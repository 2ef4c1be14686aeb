"""End to end on a real PostgreSQL: the same indicators from the database and from the Parquet
archive of the same data; `kota indicators run` files and idempotent upserts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import polars as pl
import psycopg
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from firmware_sim.backfill import generate
from indicators import me, source
from indicators.cli import group
from indicators.periods import Span
from storage.archive import export_parquet
from storage.migrate import migrate

CITIES = ("THBKK", "PHMNL")
START, END = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 5, tzinfo=UTC)
SPAN = Span(date(2025, 3, 2), date(2025, 3, 4))


@cache
def sim_rows() -> pl.DataFrame:
    """Four days of simulated air, traffic, water and energy devices in two cities (15 min)."""
    rows = []
    for city in CITIES:
        c = city.lower()
        kinds = {f"{c}-air-1": "air", f"{c}-air-2": "air", f"{c}-tl-1": "traffic_lane:1",
                 f"{c}-tl-2": "traffic_lane:2", f"{c}-w-1": "water", f"{c}-e-1": "energy_1p"}  # fmt: skip
        for t, dev, values in generate(city, kinds, START, END, 900, 7):
            site = f"{c}-traffic" if "-tl-" in dev else f"{c}-main"
            for q, v in values.items():
                rows.append((city, site, dev, q, float(v), round(t * 1e6), 0))
    df = pl.DataFrame(
        rows, orient="row",
        schema={"city": pl.String, "site": pl.String, "device": pl.String, "quantity": pl.String,
                "value": pl.Float64, "observed_at": pl.Int64, "flags": pl.Int32},
    ).with_columns(pl.col("observed_at").cast(pl.Datetime("us", "UTC")))  # fmt: skip
    # a few implausible readings, flagged OUT_OF_RANGE: must not move any statistic
    bad = (
        df.filter((pl.col("quantity") == "pm2_5") & (pl.col("device") == "thbkk-air-1"))
        .head(5)
        .with_columns(value=pl.lit(5000.0), flags=pl.lit(1), device=pl.lit("thbkk-air-9"))
    )
    return pl.concat([df, bad])


def fill(url: str) -> None:
    migrate(url)
    df = sim_rows()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY readings (device, quantity, observed_at, city, site, value, raw_value, flags, source)"
            " FROM STDIN"
        ) as copy:
            for r in df.iter_rows(named=True):
                copy.write_row((r["device"], r["quantity"], r["observed_at"], r["city"], r["site"],
                                r["value"], r["value"], r["flags"], "sim"))  # fmt: skip
        conn.commit()


def drop_stamp(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop("computed_at").sort("city", "indicator", "period_type", "period_start")


def test_database_and_parquet_give_identical_tables(pg_url: str, tmp_path: Path) -> None:
    fill(pg_url)
    export_parquet(pg_url, date(2025, 2, 27), date(2025, 3, 7), tmp_path / "archive")
    for ptype, span in (("day", SPAN), ("month", Span(date(2025, 3, 1), date(2025, 3, 31)))):
        db = me.run(source.database_source(pg_url), span, ptype, list(CITIES), baseline_year=2025)
        pq = me.run(source.parquet_source(tmp_path / "archive"), span, ptype, list(CITIES),
                    baseline_year=2025)  # fmt: skip
        assert db.table.height > 0
        # bit-identical: every sum is order-independent (indicators.frames.dsum)
        assert_frame_equal(drop_stamp(db.table), drop_stamp(pq.table), check_exact=True)
        assert db.metadata["coverage"] == pq.metadata["coverage"]
    days = drop_stamp(db.table) if ptype == "month" else None
    assert days is not None
    # every domain produced values, and the flagged readings were counted, not used
    daily = me.run(source.database_source(pg_url), SPAN, "day", list(CITIES)).table
    produced = set(daily["indicator"].unique().to_list())
    for ind in ("air.pm2_5.mean", "air.aqi.th_pcd.level", "traffic.tti", "water.domestic_lpcd",
                "energy.electricity_kwh_per_capita", "energy.interruption_minutes"):  # fmt: skip
        assert ind in produced
    full = daily.filter(pl.col("indicator") == "air.pm2_5.mean")
    assert full["value"].max() < 1000 and full["completeness"].min() == 1.0


def test_cli_run_writes_files_and_upserts_idempotently(pg_url: str, tmp_path: Path) -> None:
    fill(pg_url)
    runner = CliRunner()
    args = ["run", "--from", "2025-03-02", "--to", "2025-03-04", "--period-type", "day",
            "--cities", "THBKK,PHMNL", "--database-url", pg_url, "--baseline-year", "2025"]  # fmt: skip
    outputs = {}
    for fmt in ("csv", "parquet", "xlsx"):
        result = runner.invoke(group, [*args, "--format", fmt, "--out", str(tmp_path / fmt)])
        assert result.exit_code == 0, result.output
        outputs[fmt] = sorted(p.name for p in (tmp_path / fmt).iterdir())
    stem = "indicators_2025-03-02_2025-03-04_day"
    assert outputs["csv"] == [f"{stem}.csv", f"{stem}.meta.json"]
    assert outputs["parquet"] == [f"{stem}.meta.json", f"{stem}.parquet"]
    assert outputs["xlsx"] == [f"{stem}.xlsx"]
    meta = json.loads((tmp_path / "csv" / f"{stem}.meta.json").read_text())
    assert {"methods", "coverage", "targets", "households", "rules"} <= set(meta)
    table = pl.read_parquet(tmp_path / "parquet" / f"{stem}.parquet")
    assert tuple(table.columns) == me.COLUMNS
    csv = pl.read_csv(tmp_path / "csv" / f"{stem}.csv")
    assert csv.height == table.height
    from zipfile import ZipFile

    with ZipFile(tmp_path / "xlsx" / f"{stem}.xlsx") as z:
        workbook = z.read("xl/workbook.xml").decode()
    assert 'name="indicators"' in workbook and 'name="metadata"' in workbook

    def snapshot() -> list[tuple]:
        with psycopg.connect(pg_url) as conn:
            return conn.execute(
                "SELECT city, indicator, period_type, period_start, value, n_obs, completeness,"
                " rank, computed_at FROM indicator_values ORDER BY 1, 2, 3, 4"
            ).fetchall()

    first = snapshot()
    assert len(first) == table.height
    result = runner.invoke(group, [*args, "--format", "csv", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    second = snapshot()
    assert [r[:-1] for r in second] == [r[:-1] for r in first]  # same rows and values
    assert all(b[-1] >= a[-1] for a, b in zip(first, second, strict=True))  # new computed_at
    with psycopg.connect(pg_url) as conn:
        n_def, focal = conn.execute(
            "SELECT count(*), count(DISTINCT focal_area) FROM indicator_definitions"
        ).fetchone()
    assert n_def >= 80 and focal >= 3


def test_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kota_cli.errors import KotaError

    monkeypatch.delenv("KOTA_DATABASE_URL", raising=False)
    runner = CliRunner()
    for args, msg in ((["run", "--period", "2025-13"], "period"),
                      (["run", "--period", "2025"], "KOTA_DATABASE_URL"),
                      (["run", "--period", "2025", "--cities", "XXXXX", "--no-db"], "unknown city")):  # fmt: skip
        result = runner.invoke(group, args)
        assert isinstance(result.exception, KotaError), result.output
        assert msg in str(result.exception) and "\n" not in str(result.exception)
    result = runner.invoke(group, ["list", "--json"])
    assert result.exit_code == 0
    assert any(r["indicator"] == "traffic.tti" for r in json.loads(result.output))
