"""ReadingWriter against a real PostgreSQL (storage migrations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from gateway.schema import DeadLetter
from ingest.bench import synthetic_readings
from ingest.metrics import IngestMetrics
from ingest.writer import ReadingWriter
from storage.migrate import migrate


@pytest.fixture
def db(pg_url: str) -> str:
    migrate(pg_url)
    return pg_url


def frame(rows: list[dict]) -> pl.DataFrame:
    base = {
        "city": "THBKK",
        "site": "s1",
        "device": "d1",
        "quantity": "pm25",
        "value": 1.0,
        "unit": "ug/m3",
        "raw_value": 1.0,
        "flags": 0,
        "source": "test",
    }
    full = [{**base, **r} for r in rows]
    return pl.DataFrame(full).with_columns(
        pl.col("observed_at").cast(pl.Datetime("us", "UTC")),
        pl.col("received_at").cast(pl.Datetime("us", "UTC")),
        pl.col("flags").cast(pl.Int16),
    )


def count(url: str, sql: str = "SELECT count(*) FROM readings") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])


NOW = datetime.now(UTC).replace(microsecond=250_001)


def test_duplicates_within_and_across_batches_collapse(db: str) -> None:
    registry = CollectorRegistry()
    writer = ReadingWriter(db, metrics=IngestMetrics(registry))
    batch = frame(
        [
            {"observed_at": NOW, "received_at": NOW, "value": 1.0},
            {"observed_at": NOW, "received_at": NOW, "value": 1.0},  # duplicate inside the batch
            {"observed_at": NOW, "received_at": NOW, "device": "d2"},
        ]
    )
    first = writer.write(batch, [])
    assert (first.inserted, first.duplicates) == (2, 1)
    again = writer.write(batch, [])  # redelivery of the whole batch
    assert (again.inserted, again.duplicates) == (0, 3)
    assert count(db) == 2
    assert registry.get_sample_value("kota_ingest_readings_written_total") == 2
    assert registry.get_sample_value("kota_ingest_duplicates_total") == 4
    assert registry.get_sample_value("kota_ingest_batch_size_count") == 2
    assert registry.get_sample_value("kota_ingest_lag_seconds_count") == 6
    writer.close()


def test_late_and_out_of_order_rows_are_accepted(db: str) -> None:
    writer = ReadingWriter(db)
    times = [
        NOW,
        NOW - timedelta(days=3),
        NOW - timedelta(days=400),
        NOW - timedelta(minutes=5),
        NOW + timedelta(seconds=1),
    ]
    result = writer.write(frame([{"observed_at": t, "received_at": NOW} for t in times]), [])
    assert result.inserted == 5
    late = writer.write(frame([{"observed_at": NOW - timedelta(days=30), "received_at": NOW}]), [])
    assert late.inserted == 1
    assert count(db) == 6
    writer.close()


def test_dead_letters_are_stored(db: str) -> None:
    registry = CollectorRegistry()
    writer = ReadingWriter(db, metrics=IngestMetrics(registry))
    dead = [
        DeadLetter(
            NOW, "invalid_json", "not JSON", topic="kota/v1/THBKK/s1/d1/up", payload=b"\x00{"
        ),
        DeadLetter(NOW, "unknown_device", "no such device", device="zz", row={"t": NOW, "v": 1.5}),
    ]
    result = writer.write(frame([{"observed_at": NOW, "received_at": NOW}]), dead)
    assert (result.inserted, result.dead_letters) == (1, 2)
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            'SELECT reason, payload, "row" FROM dead_letters ORDER BY id'
        ).fetchall()
    assert rows[0][0] == "invalid_json" and bytes(rows[0][1]) == b"\x00{"
    assert rows[1][2]["v"] == 1.5
    assert (
        registry.get_sample_value("kota_ingest_dead_letters_total", {"reason": "invalid_json"}) == 1
    )
    # rows the table would refuse become dead letters instead of failing the batch forever
    bad = frame([{"observed_at": NOW, "received_at": NOW, "city": "bangkok"}])
    assert writer.write(bad, []).dead_letters == 1
    assert count(db, "SELECT count(*) FROM dead_letters WHERE reason = 'invalid_row'") == 1
    writer.close()


def test_one_transaction_failure_leaves_nothing(db: str) -> None:
    writer = ReadingWriter(db)
    with psycopg.connect(db, autocommit=True) as conn:  # make the dead-letter insert fail
        conn.execute("ALTER TABLE dead_letters ADD CONSTRAINT no_boom CHECK (reason <> 'boom')")
    batch = frame(
        [{"observed_at": NOW + timedelta(seconds=i), "received_at": NOW} for i in range(50)]
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        writer.write(batch, [DeadLetter(NOW, "ok", "fine"), DeadLetter(NOW, "boom", "fails")])
    assert count(db) == 0
    assert count(db, "SELECT count(*) FROM dead_letters") == 0
    # the writer recovers on the same connection: staging table is empty (ON COMMIT DELETE ROWS)
    assert writer.write(batch, [DeadLetter(NOW, "ok", "fine")]).inserted == 50
    assert count(db) == 50
    writer.close()


@pytest.mark.parametrize("method", ["rows", "csv"])
def test_copy_methods_store_identical_rows(db: str, method: str) -> None:
    sample = synthetic_readings(3000).with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(None)
        .otherwise(pl.col("raw_value"))
        .alias("raw_value"),
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(pl.lit('é漢,"q"'))
        .otherwise(pl.col("source"))
        .alias("source"),
        pl.when(pl.int_range(pl.len()) % 11 == 0)
        .then(pl.lit(""))
        .otherwise(pl.col("site"))
        .alias("site"),
    )
    sql = (
        "SELECT device, quantity, observed_at, city, site, value, raw_value, received_at, flags, "
        "source FROM readings ORDER BY 1, 2, 3"
    )
    with ReadingWriter(db, copy_method="binary") as writer:
        assert writer.write(sample, []).inserted == 3000
    with psycopg.connect(db) as conn:
        expected = conn.execute(sql).fetchall()
        conn.execute("TRUNCATE readings")
        conn.commit()
    with ReadingWriter(db, copy_method=method) as writer:  # type: ignore[arg-type]
        assert writer.write(sample, []).inserted == 3000
    with psycopg.connect(db) as conn:
        assert conn.execute(sql).fetchall() == expected
