"""Parquet archive (streaming, Hive layout) and the Arrow read path."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from gateway.schema import QUANTITIES, READING_COLUMNS
from storage.archive import export_parquet
from storage.arrow import READING_SCHEMA, read_readings
from storage.cli import group
from storage.migrate import migrate
from storage.partitions import ensure_partitions, forget_cache

DAY0 = date(2024, 3, 1)
START = datetime(2024, 3, 1, tzinfo=UTC)
DEVICES = [("THBKK", "bkk-s", "bkk-1"), ("THBKK", "bkk-s", "bkk-2"), ("SGSIN", "sin-s", "sin-1")]


@pytest.fixture
def db(pg_url: str) -> str:
    forget_cache()
    migrate(pg_url)
    rng = random.Random(7)
    rows = []
    for city, site, device in DEVICES:
        for quantity in ("pm2_5", "temperature"):
            for minute in range(0, 3 * 24 * 60, 7):  # three days, every 7 minutes
                observed = START + timedelta(minutes=minute, microseconds=rng.randrange(1_000_000))
                value = round(rng.uniform(0, 100), 4)
                raw = None if rng.random() < 0.05 else value - 1
                rows.append(
                    (
                        device,
                        quantity,
                        observed,
                        city,
                        site,
                        value,
                        raw,
                        observed,
                        rng.choice([0, 16, 128]),
                        'pms "5003", v2',
                    )
                )
    with psycopg.connect(pg_url) as conn:
        ensure_partitions(conn, START, START + timedelta(days=2))
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY readings (device, quantity, observed_at, city, site, value, raw_value, received_at, flags, source) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
    return pg_url


def _db_rows(url: str, where: str = "TRUE") -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT city, site, device, quantity, value, raw_value, observed_at, received_at, flags, source "
            f"FROM readings WHERE {where} ORDER BY device, quantity, observed_at"
        ).fetchall()


def _arrow_rows(table: pa.Table) -> list[tuple]:
    names = [c for c in READING_COLUMNS if c != "unit"]
    table = table.select(names).sort_by(
        [("device", "ascending"), ("quantity", "ascending"), ("observed_at", "ascending")]
    )
    return [tuple(r[c] for c in names) for r in table.to_pylist()]


def test_export_round_trips_in_bounded_chunks(db: str, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    result = export_parquet(db, DAY0, DAY0 + timedelta(days=3), out, batch_rows=500)
    assert result.chunks == 3  # one COPY per day, never the whole range at once
    assert result.batches >= 3 * 3 and result.max_batch_rows <= 500  # ~1240 rows a day
    expected = _db_rows(db)
    assert result.rows == len(expected)
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert names == [
        f"city={c}/date={d}/part-0.parquet"
        for c in ("SGSIN", "THBKK")
        for d in ("2024-03-01", "2024-03-02", "2024-03-03")
    ]
    assert not list(out.rglob("*.tmp"))

    dataset = ds.dataset(out, format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert _arrow_rows(table) == expected
    assert table.schema.field("observed_at").type == pa.timestamp("us", tz="UTC")
    units = dict(
        zip(table.column("quantity").to_pylist(), table.column("unit").to_pylist(), strict=True)
    )
    assert units == {
        "pm2_5": QUANTITIES["pm2_5"].ucum,
        "temperature": QUANTITIES["temperature"].ucum,
    }

    one = pq.ParquetFile(out / "city=THBKK/date=2024-03-02/part-0.parquet")
    assert one.schema_arrow.names == list(READING_COLUMNS)
    assert one.metadata.num_row_groups > 1  # flushed as it streamed
    assert one.metadata.row_group(0).column(0).compression == "ZSTD"
    # filter pushdown on the Hive keys
    bkk_day = dataset.to_table(
        filter=(ds.field("city") == "THBKK") & (ds.field("date") == "2024-03-02")
    )
    assert bkk_day.num_rows == one.metadata.num_rows

    again = export_parquet(db, DAY0, DAY0 + timedelta(days=3), out)  # re-export replaces
    assert again.rows == result.rows and again.chunks == 3 and again.batches == 3
    assert ds.dataset(out, format="parquet", partitioning="hive").count_rows() == len(expected)


def test_export_cli_and_empty_days(db: str, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        group,
        [
            "export-parquet",
            "--from",
            "2024-03-02",
            "--to",
            "2024-03-05",
            "--out",
            str(out),
            "--city",
            "SGSIN",
        ],
        env={"KOTA_DATABASE_URL": db},
    )
    assert result.exit_code == 0, result.output
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert files == [
        "city=SGSIN/date=2024-03-02/part-0.parquet",
        "city=SGSIN/date=2024-03-03/part-0.parquet",
    ]
    assert "wrote" in result.output and "2 files" in result.output
    bad = CliRunner().invoke(
        group,
        [
            "export-parquet",
            "--from",
            "2024-03-05",
            "--to",
            "2024-03-01",
            "--out",
            str(out),
            "--database-url",
            db,
        ],
    )
    assert bad.exit_code != 0


def test_read_readings_filters_and_types(db: str) -> None:
    table = read_readings(db, START, START + timedelta(days=3))
    assert table.schema == READING_SCHEMA
    assert table.column_names == list(READING_COLUMNS)
    assert _arrow_rows(table) == _db_rows(db)
    assert table.column("raw_value").null_count > 0
    assert set(table.column("source").to_pylist()) == {'pms "5003", v2'}

    part = read_readings(
        db,
        DAY0 + timedelta(days=1),
        DAY0 + timedelta(days=2),
        cities=["THBKK"],
        quantities=["pm2_5"],
    )
    where = "city = 'THBKK' AND quantity = 'pm2_5' AND observed_at >= '2024-03-02+00' AND observed_at < '2024-03-03+00'"
    assert _arrow_rows(part) == _db_rows(db, where)

    empty = read_readings(db, date(2030, 1, 1), date(2030, 1, 2))
    assert empty.num_rows == 0 and empty.schema == READING_SCHEMA
    with pytest.raises(ValueError, match="naive"):
        read_readings(db, datetime(2024, 3, 1), datetime(2024, 3, 2))
