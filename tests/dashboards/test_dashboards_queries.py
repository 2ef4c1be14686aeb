"""Every panel query, expanded the way Grafana expands it, runs on a real database.

The database is filled by the pipeline's own code (tests/simdata.py) and the indicator job,
then each SQL panel must return rows with exactly the columns the panel expects.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from simdata import Filled, fill

from dashboards.macros import QueryContext, Variable, expand
from dashboards.panels import BOARDS, VARIABLES

SQL_PANELS = [(b.uid, p) for b in BOARDS for p in b.panels if p.source == "postgres"]
# Panels fed by the indicator job; filled by `indicators` when that job has run.
INDICATOR_PANELS = {
    "aqi_calendar",
    "latest_indicators",
    "pm25_ranking",
    "water_per_capita",
    "electricity_per_capita",
    "tti",
}


@pytest.fixture(scope="module")
def filled(pg_server) -> tuple[str, Filled]:
    url = pg_server.create_database("dashboards_queries")
    data = fill(url, cities=("THBKK", "VNHAN"), days=3, step_s=900)
    run_indicators(url, data)
    return url, data


def run_indicators(url: str, data: Filled) -> None:
    from indicators import me, source
    from indicators.periods import Span, period_end, period_start

    src = source.database_source(url)
    for period_type in ("day", "month", "year"):
        first = period_start(data.start.date(), period_type)
        last = period_end(period_start(data.end.date(), period_type), period_type)
        result = me.run(src, Span(first, last), period_type, list(data.cities))
        me.upsert_values(url, result.table)


def context(data: Filled) -> QueryContext:
    cities = Variable(tuple(data.cities), multi=True, include_all=True)
    return QueryContext(
        time_from=data.start - timedelta(days=1),
        time_to=data.end + timedelta(hours=1),
        interval="1h",
        timescaledb=True,
        variables={
            "country": Variable(("TH", "VN"), multi=True, include_all=True),
            "city": cities,
            "city_one": Variable(("THBKK",)),
            "standard": Variable(("us_epa",)),
            "focal_area": Variable(
                tuple(VARIABLES["focal_area"][1].split(",")), multi=True, include_all=True
            ),
        },
    )


@pytest.mark.parametrize(
    ("board", "panel"), SQL_PANELS, ids=[f"{b}:{p.key}" for b, p in SQL_PANELS]
)
def test_panel_query_returns_expected_columns(filled, board, panel) -> None:
    url, data = filled
    sql = expand(panel.query, context(data))
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        columns = tuple(d.name for d in cur.description or ())
        rows = cur.fetchall()
    assert columns == panel.columns
    assert rows, f"{board}:{panel.key} returned no rows:\n{sql}"


@pytest.mark.parametrize("name", [n for n, v in VARIABLES.items() if v[4] == "query"])
def test_variable_queries_run(filled, name) -> None:
    url, data = filled
    sql = expand(VARIABLES[name][1], context(data))
    with psycopg.connect(url) as conn:
        rows = conn.execute(sql).fetchall()
    assert rows


def test_time_group_matches_timescaledb_buckets(filled) -> None:
    """The plain-PostgreSQL time_bucket() gives TimescaleDB's buckets (origin Monday 2000-01-03)."""
    url, _ = filled
    with psycopg.connect(url) as conn:
        week = conn.execute(
            "SELECT time_bucket('7 days', TIMESTAMPTZ '2026-11-22 12:00+00')"
        ).fetchone()[0]
        hour = conn.execute(
            "SELECT time_bucket('3600s', TIMESTAMPTZ '2026-11-22 12:34:56+00')"
        ).fetchone()[0]
    assert week.isoformat() == "2026-11-16T00:00:00+00:00"  # a Monday, like TimescaleDB
    assert hour.isoformat() == "2026-11-22T12:00:00+00:00"
