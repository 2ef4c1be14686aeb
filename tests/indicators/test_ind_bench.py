"""Benchmark smoke test: tiny sizes, the JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

from indicators.bench import run_indicators_bench


def test_bench_smoke(pg_url: str, tmp_path: Path) -> None:
    result = run_indicators_bench(
        cities=2, devices_per_city=2, quantities=6, days=3, workdir=tmp_path, database_url=pg_url
    )
    json.dumps(result)  # JSON-printable
    assert result["input"]["rows"] == 2 * 2 * 6 * 3 * 24
    assert result["input"]["files"] > 0
    job = result["job"]
    assert job["seconds"] > 0 and job["peak_rss_mb"] > 0 and job["rows_out"] > 0
    assert isinstance(job["within_target"], bool)
    sql = result["sql"]
    assert sql["rows_loaded"] > 0 and sql["sql_daily_s"] >= 0
    assert sql["daily_rows_sql"] == sql["daily_rows_polars"]
    assert sql["n_hours_equal"] and sql["max_abs_diff_daily_mean"] < 1e-5
