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


# ---------------------------------------------------------------- direct-COPY fast path
KEYED = "SELECT device, quantity, observed_at, value, received_at FROM readings ORDER BY 1, 2, 3"


def seconds_batch(start: int, stop: int, **extra: object) -> pl.DataFrame:
    return frame(
        [
            {"observed_at": NOW + timedelta(seconds=i), "received_at": NOW, **extra}
            for i in range(start, stop)
        ]
    )


def test_new_batch_takes_the_fast_path(db: str) -> None:
    with ReadingWriter(db) as writer:
        result = writer.write(seconds_batch(0, 100), [])
        assert (result.inserted, result.duplicates) == (100, 0)
        assert writer.path_counts == {"direct": 1, "fallback": 0, "staging": 0}
    assert count(db) == 100


def test_redelivered_batch_falls_back_and_inserts_nothing(db: str) -> None:
    registry = CollectorRegistry()
    batch = seconds_batch(0, 200)
    with ReadingWriter(db, metrics=IngestMetrics(registry), holdoff=False) as writer:
        assert writer.write(batch, []).inserted == 200
        with psycopg.connect(db) as conn:
            stored = conn.execute(KEYED).fetchall()
        # redelivery with different values: the fast path's COPY trips the primary key, the
        # savepoint is rolled back and the staging path collapses every row
        again = writer.write(batch.with_columns(pl.col("value") + 1000), [])
        assert (again.inserted, again.duplicates, again.dead_letters) == (0, 200, 0)
        assert writer.path_counts == {"direct": 1, "fallback": 1, "staging": 0}
        # the transaction survived the failed COPY: dead letters of the same batch commit
        dead = [DeadLetter(NOW, "invalid_json", "x")]
        third = writer.write(batch, dead)
        assert (third.inserted, third.duplicates, third.dead_letters) == (0, 200, 1)
    with psycopg.connect(db) as conn:
        assert conn.execute(KEYED).fetchall() == stored  # first stored row wins
    assert count(db, "SELECT count(*) FROM dead_letters") == 1
    assert registry.get_sample_value("kota_ingest_readings_written_total") == 200
    assert registry.get_sample_value("kota_ingest_duplicates_total") == 400
    assert registry.get_sample_value("kota_ingest_db_errors_total") == 0


def test_partially_overlapping_batch(db: str) -> None:
    with ReadingWriter(db, holdoff=False) as writer:
        assert writer.write(seconds_batch(0, 100), []).inserted == 100
        # rows 50..99 are a replay, 100..149 are new; the conflict is in the middle of the COPY
        result = writer.write(seconds_batch(50, 150, value=2.0), [])
        assert (result.inserted, result.duplicates) == (50, 50)
        assert writer.path_counts == {"direct": 1, "fallback": 1, "staging": 0}
    assert count(db) == 150
    assert count(db, "SELECT count(*) FROM readings WHERE value = 1.0") == 100  # first kept
    assert count(db, "SELECT count(*) FROM readings WHERE value = 2.0") == 50  # only new keys


def test_within_batch_duplicates_take_the_fast_path(db: str) -> None:
    later = NOW + timedelta(seconds=5)
    batch = frame(
        [
            {"observed_at": NOW, "received_at": later, "value": 1.0},
            {"observed_at": NOW, "received_at": NOW, "value": 2.0},  # earliest received wins
            {"observed_at": NOW, "received_at": NOW, "value": 3.0},  # tie: first occurrence wins
            {"observed_at": NOW, "received_at": NOW, "device": "d2", "value": 4.0},
            {"observed_at": NOW, "received_at": NOW, "device": "d2", "value": 5.0},
            {"observed_at": later, "received_at": NOW, "value": 6.0},
        ]
    )
    with ReadingWriter(db) as writer:
        result = writer.write(batch, [])
        assert (result.inserted, result.duplicates) == (3, 3)
        assert writer.path_counts == {"direct": 1, "fallback": 0, "staging": 0}
    with psycopg.connect(db) as conn:
        values = conn.execute("SELECT value FROM readings ORDER BY device, observed_at").fetchall()
    assert values == [(2.0,), (6.0,), (4.0,)]
    # the staging path (before the fast path existed) keeps the same rows
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("TRUNCATE readings")
    with ReadingWriter(db, fast_path=False) as writer:
        assert writer.write(batch, []).inserted == 3
        assert writer.path_counts == {"direct": 0, "fallback": 0, "staging": 1}
    with psycopg.connect(db) as conn:
        assert (
            conn.execute("SELECT value FROM readings ORDER BY device, observed_at").fetchall()
            == values
        )


def test_holdoff_after_a_conflict(db: str) -> None:
    with ReadingWriter(db) as writer:
        writer.write(seconds_batch(0, 10), [])  # direct
        writer.write(seconds_batch(0, 10), [])  # conflict: fallback
        writer.write(seconds_batch(5, 15), [])  # right after a conflict: staging, conflicts
        writer.write(seconds_batch(15, 25), [])  # still staging, conflict-free: holdoff ends
        writer.write(seconds_batch(25, 35), [])  # direct again
        assert writer.path_counts == {"direct": 2, "fallback": 1, "staging": 2}
    assert count(db) == 35


def test_fast_path_disabled_under_row_level_security(db: str) -> None:
    """A kota_ingest member may not COPY FROM into readings (RLS): it INSERTs instead."""
    sep = "&" if "?" in db else "?"
    as_ingest = f"{db}{sep}options=-c%20role%3Dkota_ingest"
    with psycopg.connect(as_ingest) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("kota_ingest",)
    with ReadingWriter(as_ingest) as writer:
        assert writer.write(seconds_batch(0, 100), []).inserted == 100
        assert not writer.fast_path
        again = writer.write(seconds_batch(50, 150), [])
        assert (again.inserted, again.duplicates) == (50, 50)
        assert writer.path_counts == {"direct": 0, "fallback": 1, "staging": 1}
    assert count(db) == 150


def test_rollups_after_fast_path_batches_equal_a_group_by(db: str) -> None:
    from storage.rollups import pending_marks, refresh_rollups

    scratch_hourly = """
        SELECT device, quantity, date_trunc('hour', observed_at, 'UTC'), max(city), max(site),
               count(*), avg(value), min(value), max(value)
          FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    """
    scratch_daily = scratch_hourly.replace("'hour'", "'day'")
    rollup = (
        "SELECT device, quantity, bucket, city, site, n, mean, min, max FROM {} ORDER BY 1, 2, 3"
    )
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    # 10 devices x 4 quantities every 10 s: 6000 readings span 25 minutes across an hour edge
    sample = synthetic_readings(6000, start=hour - timedelta(minutes=10), devices=10)
    batches = [sample.slice(i, 1000) for i in range(0, 6000, 1000)]
    # a late batch 40 days back (its day partition is created on demand)
    late = synthetic_readings(500, start=hour - timedelta(days=40), devices=10)
    with ReadingWriter(db) as writer, psycopg.connect(db, autocommit=True) as conn:
        for part in batches[:3]:
            writer.write(part, [])
        writer.write(late, [])
        assert writer.path_counts["direct"] == 4
        assert pending_marks(conn) > 0  # the statement trigger fired for the COPY
        refresh_rollups(conn)
        for part in batches[3:]:
            writer.write(part, [])
        writer.write(batches[4], [])  # a redelivery: fallback
        assert writer.path_counts == {"direct": 7, "fallback": 1, "staging": 0}
        refresh_rollups(conn)
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (6500,)
        for table, scratch in (
            ("readings_hourly", scratch_hourly),
            ("readings_daily", scratch_daily),
        ):
            got = conn.execute(rollup.format(table)).fetchall()
            want = conn.execute(scratch).fetchall()
            assert len(got) == len(want) > 0
            for g, w in zip(got, want, strict=True):
                assert g[:6] == w[:6]
                assert g[6:] == pytest.approx(w[6:], rel=1e-12)
