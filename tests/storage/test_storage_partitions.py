"""Daily partitions of readings: created ahead, on demand, idempotent; DEFAULT catches the rest."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from storage.migrate import migrate
from storage.partitions import (
    drop_expired_partitions,
    ensure_partitions,
    forget_cache,
    list_partitions,
)

INSERT = (
    "INSERT INTO readings (device, quantity, observed_at, city, site, value, raw_value, flags, source) "
    "VALUES (%s, 'pm2_5', %s, 'THBKK', 'site-1', %s, %s, 0, 'test') ON CONFLICT DO NOTHING"
)


def _part(day: datetime) -> str:
    return f"readings_p{day:%Y%m%d}"


def _where(conn: psycopg.Connection, device: str) -> list[str]:
    rows = conn.execute(
        "SELECT tableoid::regclass::text FROM readings WHERE device = %s", [device]
    ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def db(pg_url: str) -> str:
    forget_cache()
    migrate(pg_url)
    return pg_url


def test_partitions_are_created_ahead(db: str) -> None:
    today = datetime.now(UTC)
    with psycopg.connect(db) as conn:
        names = [name for name, _ in list_partitions(conn)]
    assert names[-1] == "readings_default"
    expected = [_part(today + timedelta(days=d)) for d in range(-7, 15)]
    assert names[:-1] == expected


def test_old_and_future_readings_land_and_ensure_is_idempotent(db: str) -> None:
    now = datetime.now(UTC).replace(microsecond=123456)
    old = now - timedelta(days=40)
    future = now + timedelta(days=10)
    far = now + timedelta(days=100)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(INSERT, ["old", old, 1.0, 1.0])
        conn.execute(INSERT, ["future", future, 2.0, 2.0])
        conn.execute(INSERT, ["far", far, 3.0, None])
        assert _where(conn, "old") == ["readings_default"]
        assert _where(conn, "future") == [_part(future)]
        assert _where(conn, "far") == ["readings_default"]

        # on demand (as the writer does for a late batch): rows move out of DEFAULT
        assert ensure_partitions(conn, old, old + timedelta(minutes=5)) == 1
        assert _where(conn, "old") == [_part(old)]
        assert ensure_partitions(conn, old, old) == 0  # cached: no round trip
        forget_cache()
        assert ensure_partitions(conn, old, old) == 0  # checked in the catalog
        assert ensure_partitions(conn, far - timedelta(days=1), far) == 2
        assert _where(conn, "far") == [_part(far)]
        assert conn.execute("SELECT count(*) FROM readings_default").fetchone() == (0,)
        # nothing lost or duplicated on the way
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (3,)
        got = conn.execute("SELECT observed_at FROM readings WHERE device = 'old'").fetchone()
        assert got == (old,)
        # the moved partition behaves like the others: the primary key holds there
        conn.execute(INSERT, ["old", old, 9.0, 9.0])
        assert conn.execute("SELECT value FROM readings WHERE device = 'old'").fetchall() == [
            (1.0,)
        ]


def test_ensure_inside_a_caller_transaction(db: str) -> None:
    day = datetime(2021, 6, 1, 12, tzinfo=UTC)
    with psycopg.connect(db) as conn:
        with conn.transaction():
            assert ensure_partitions(conn, day, day) == 1
            conn.execute(INSERT, ["tx", day, 1.0, 1.0])
        assert _where(conn, "tx") == [_part(day)]
        # a rolled-back creation is not remembered as existing
        day2 = datetime(2021, 7, 1, tzinfo=UTC)
        with pytest.raises(RuntimeError), conn.transaction():
            assert ensure_partitions(conn, day2, day2) == 1
            raise RuntimeError("batch failed")
        assert ensure_partitions(conn, day2, day2) == 1


def test_concurrent_ensure_creates_each_partition_once(db: str) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=29)
    created: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(db) as conn:
                created.append(ensure_partitions(conn, start, end))
        except BaseException as err:  # pragma: no cover
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(created) == 30


def test_naive_datetimes_are_refused(db: str) -> None:
    with psycopg.connect(db) as conn, pytest.raises(ValueError, match="naive"):
        ensure_partitions(conn, datetime(2024, 1, 1), datetime(2024, 1, 2))


def test_expired_partitions_are_dropped_and_rollups_kept(db: str) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=40)
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_partitions(conn, old, old)
        conn.execute(INSERT, ["old", old, 1.0, 1.0])
        conn.execute(INSERT, ["older", now - timedelta(days=400), 1.0, 1.0])  # in DEFAULT
        conn.execute(INSERT, ["recent", now - timedelta(days=2), 1.0, 1.0])
        conn.execute("SELECT kota_refresh_rollups()")
        assert drop_expired_partitions(conn, 0) == 0
        assert drop_expired_partitions(conn, 30) == 1
        assert _part(old) not in [n for n, _ in list_partitions(conn)]
        assert [r[0] for r in conn.execute("SELECT device FROM readings ORDER BY 1")] == ["recent"]
        assert conn.execute("SELECT count(*) FROM readings_hourly").fetchone() == (3,)
        assert drop_expired_partitions(conn, 30) == 0
