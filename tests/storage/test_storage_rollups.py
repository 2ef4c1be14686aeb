"""Incremental rollups equal a from-scratch GROUP BY, whatever order readings arrive in."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from storage.migrate import migrate
from storage.partitions import ensure_partitions, forget_cache
from storage.rollups import pending_marks, refresh_rollups

INSERT = (
    "INSERT INTO readings (device, quantity, observed_at, city, site, value, raw_value, "
    "received_at, flags, source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'test') "
    "ON CONFLICT DO NOTHING"
)
DEVICES = {
    "bkk-1": ("THBKK", "bkk-site"),
    "bkk-2": ("THBKK", "bkk-site"),
    "sin-1": ("SGSIN", "sin-site"),
}
QUANTITIES = ("pm2_5", "temperature")

SCRATCH_HOURLY = """
    SELECT device, quantity, date_trunc('hour', observed_at, 'UTC') AS bucket, max(city), max(site),
           count(*), avg(value), min(value), max(value)
      FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
SCRATCH_DAILY = SCRATCH_HOURLY.replace("'hour'", "'day'")
ROLLUP = "SELECT device, quantity, bucket, city, site, n, mean, min, max FROM {} ORDER BY 1, 2, 3"


def _stream(rng: random.Random, now: datetime, n: int) -> list[tuple]:
    """Readings over the last 3 days plus some 40 days old; then duplicates, shuffled."""
    rows = []
    for _ in range(n):
        device = rng.choice(list(DEVICES))
        city, site = DEVICES[device]
        if rng.random() < 0.1:
            observed = now - timedelta(days=40, seconds=rng.randrange(86400 * 2))
        else:
            observed = now - timedelta(seconds=rng.randrange(86400 * 3))
        observed = observed.replace(microsecond=rng.randrange(1_000_000))
        value = round(rng.uniform(-10, 300), 3)
        rows.append((device, rng.choice(QUANTITIES), observed, city, site, value, value, now, 0))
    duplicates = [
        (*row[:5], row[5] + 1000.0, row[6], row[7], row[8])  # same key, different value
        for row in rng.sample(rows, n // 5)
    ]
    stream = rows + duplicates + rng.sample(rows, n // 10)
    rng.shuffle(stream)
    return stream


def _assert_rollups_match(conn: psycopg.Connection) -> None:
    for table, scratch in (("readings_hourly", SCRATCH_HOURLY), ("readings_daily", SCRATCH_DAILY)):
        expected = conn.execute(scratch).fetchall()
        got = conn.execute(ROLLUP.format(table)).fetchall()
        assert len(got) == len(expected), table
        for g, e in zip(got, expected, strict=True):
            assert g[:6] == e[:6], (table, g, e)
            assert g[7:] == e[7:], (table, g, e)
            assert math.isclose(g[6], e[6], rel_tol=1e-12, abs_tol=1e-9), (table, g, e)


@pytest.fixture
def db(pg_url: str) -> str:
    forget_cache()
    migrate(pg_url)
    return pg_url


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_rollups_equal_group_by_with_late_out_of_order_duplicates(
    db: str, seed: int
) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    stream = _stream(rng, now, 1500)
    first_seen: dict[tuple, float] = {}
    for row in stream:
        first_seen.setdefault((row[0], row[1], row[2]), row[5])
    with psycopg.connect(db) as conn:
        position = 0
        while position < len(stream):
            size = rng.randrange(1, 200)
            batch = stream[position : position + size]
            position += size
            with conn.transaction():
                if rng.random() < 0.5:  # the writer sometimes asks for partitions first
                    ensure_partitions(conn, min(r[2] for r in batch), max(r[2] for r in batch))
                with conn.cursor() as cur:
                    cur.executemany(INSERT, batch)
            if rng.random() < 0.4:
                refresh_rollups(conn)
        refresh_rollups(conn)
        # exactly one row per key; the first delivery wins (idempotent writes)
        stored = {
            (d, q, t): v
            for d, q, t, v in conn.execute(
                "SELECT device, quantity, observed_at, value FROM readings"
            )
        }
        assert stored == first_seen
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (len(first_seen),)
        _assert_rollups_match(conn)
        assert pending_marks(conn) == 0
        assert refresh_rollups(conn) == 0


def test_corrections_and_deletes_roll_up(db: str) -> None:
    t = datetime(2024, 5, 1, 10, 15, tzinfo=UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_partitions(conn, t, t)
        for i, value in enumerate([1.0, 2.0, 3.0]):
            conn.execute(
                INSERT,
                ["bkk-1", "pm2_5", t + timedelta(minutes=i), "THBKK", "s", value, value, t, 0],
            )
        conn.execute(
            INSERT, ["bkk-1", "pm2_5", t + timedelta(hours=1), "THBKK", "s", 10.0, 10.0, t, 0]
        )
        assert refresh_rollups(conn) == 3  # two hours + one day
        assert conn.execute("SELECT n, mean FROM readings_daily").fetchone() == (4, 4.0)
        conn.execute("UPDATE readings SET value = 30.0 WHERE value = 3.0")
        conn.execute("DELETE FROM readings WHERE value = 10.0")
        assert refresh_rollups(conn) == 3
        assert conn.execute("SELECT n, mean, min, max FROM readings_hourly").fetchall() == [
            (3, 11.0, 1.0, 30.0)
        ]
        assert conn.execute("SELECT n, mean FROM readings_daily").fetchone() == (3, 11.0)
        _assert_rollups_match(conn)


def test_uncommitted_writes_are_picked_up_by_a_later_refresh(db: str) -> None:
    t = datetime.now(UTC).replace(minute=5)
    with psycopg.connect(db) as writer, psycopg.connect(db, autocommit=True) as refresher:
        writer.execute(
            INSERT, ["bkk-1", "pm2_5", t, "THBKK", "s", 5.0, 5.0, t, 0]
        )  # open transaction
        assert refresh_rollups(refresher) == 0
        writer.commit()
        assert refresh_rollups(refresher) == 2
        _assert_rollups_match(refresher)


def test_rebuild_since(db: str) -> None:
    t = datetime(2024, 5, 1, tzinfo=UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_partitions(conn, t, t + timedelta(days=1))
        for h in range(30):
            conn.execute(
                INSERT, ["sin-1", "pm2_5", t + timedelta(hours=h), "SGSIN", "s", h, h, t, 0]
            )
        refresh_rollups(conn)
        conn.execute("DELETE FROM readings_hourly; DELETE FROM readings_daily")
        conn.execute(
            "INSERT INTO readings_hourly VALUES ('ghost', 'pm2_5', %s, 'SGSIN', 's', 1, 1, 1, 1)",
            [t],
        )
        assert (
            refresh_rollups(conn, since=t) == 30 + 1 + 3
        )  # 30 hours + the ghost hour; 2 days + its day
        _assert_rollups_match(conn)
        with pytest.raises(ValueError):
            refresh_rollups(conn, since=datetime(2024, 5, 1))
