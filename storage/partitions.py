"""Day partitions of `readings` (plain PostgreSQL backend).

`ensure_partitions(conn, start, end)` is what the ingest writer calls before writing a batch
whose readings span [start, end]: it remembers, per database, the days it has confirmed, so
the common case (today's partition exists) costs no round trip at all. A reading whose day
has no partition is never rejected: it lands in `readings_default` and is moved into its own
partition when that partition is created. On TimescaleDB it returns 0 (chunks are automatic).
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

AHEAD_DAYS = 14
BEHIND_DAYS = 7

_lock = threading.Lock()
_known_days: dict[tuple[str, str, str], set[date]] = {}
_not_partitioned: set[tuple[str, str, str]] = set()


def _db_key(conn: psycopg.Connection[Any]) -> tuple[str, str, str]:
    info = conn.info
    return (str(info.host), str(info.port), str(info.dbname))


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: pass timezone-aware UTC datetimes")
    return ts.astimezone(UTC)


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = _utc(start).date(), _utc(end).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def forget_cache() -> None:
    """Drop what this process believes exists (tests, or after dropping partitions)."""
    with _lock:
        _known_days.clear()
        _not_partitioned.clear()


def ensure_partitions(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> int:
    """Create the missing day partitions for [start, end]; returns how many were created.

    Runs in the caller's transaction when one is open (as a savepoint), else in its own.
    Creating a partition takes a brief lock; call it before, not inside, a long batch
    transaction when you can.
    """
    if end < start:
        start, end = end, start
    key = _db_key(conn)
    days = _days(start, end)
    with _lock:
        if key in _not_partitioned:
            return 0
        known = _known_days.setdefault(key, set())
        if all(day in known for day in days):
            return 0
    with conn.transaction():
        row = conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass('readings')"
        ).fetchone()
        if row is None or row[0] != "p":
            with _lock:
                if row is not None:  # a hypertable / plain table: nothing to manage
                    _not_partitioned.add(key)
            return 0
        created_row = conn.execute(
            "SELECT kota_ensure_partitions(%s, %s)", [_utc(start), _utc(end)]
        ).fetchone()
    created = int(created_row[0]) if created_row else 0
    # Only trust what is committed: inside an outer transaction that may still roll back,
    # re-check next time (cheap: one catalog lookup per day).
    if conn.info.transaction_status == TransactionStatus.IDLE:
        with _lock:
            _known_days.setdefault(key, set()).update(days)
    return created


def ensure_window(conn: psycopg.Connection[Any], now: datetime | None = None) -> int:
    """Partitions for [now - 7 days, now + 14 days], as `kota db migrate` creates them."""
    now = now or datetime.now(UTC)
    return ensure_partitions(
        conn, now - timedelta(days=BEHIND_DAYS), now + timedelta(days=AHEAD_DAYS)
    )


def drop_expired_partitions(conn: psycopg.Connection[Any], keep_days: int) -> int:
    """Drop day partitions entirely older than `keep_days` (0 = keep all); returns the count."""
    if keep_days <= 0:
        return 0
    with conn.transaction():
        row = conn.execute(
            "SELECT kota_drop_expired_partitions(make_interval(days => %s))", [keep_days]
        ).fetchone()
    forget_cache()
    return int(row[0]) if row else 0


def list_partitions(conn: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    """(name, estimated rows) of each partition of readings, oldest first, DEFAULT last."""
    rows = conn.execute(
        """
        SELECT c.relname, greatest(c.reltuples, 0)::bigint
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass('readings')
         ORDER BY c.relname = 'readings_default', c.relname
        """
    ).fetchall()
    return [(str(name), int(n)) for name, n in rows]
