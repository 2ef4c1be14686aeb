"""Keeping `readings_hourly` and `readings_daily` current.

Plain PostgreSQL: triggers on `readings` log the (device, quantity, hour) keys each statement
changes; `refresh_rollups()` recomputes only those hours from `readings` and their days from
`readings_hourly` (see storage/migrations/plain/0003_rollups.sql and docs/storage.md).
TimescaleDB: continuous aggregates with refresh policies and real-time aggregation do this,
so `refresh_rollups()` returns 0 unless asked to re-materialise from `since`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from kota_cli.errors import KotaError


def _is_cagg(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass('readings_hourly')"
    ).fetchone()
    if row is None:
        raise KotaError("table readings_hourly does not exist: run `kota db migrate` first")
    return bool(row[0] == "v")


def refresh_rollups(conn: psycopg.Connection[Any], *, since: datetime | None = None) -> int:
    """Recompute the rollup buckets touched since the last refresh; returns how many.

    With `since`, also recompute every bucket from that time on (after a bulk load or a
    manual correction). Runs in the caller's transaction if one is open, else in its own;
    concurrent refreshes are serialised by an advisory lock.
    """
    if since is not None and since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    if _is_cagg(conn):
        if since is None:
            return 0
        if not conn.autocommit:
            raise KotaError(
                "refresh_rollups(since=...) on TimescaleDB needs an autocommit connection: "
                "refresh_continuous_aggregate cannot run inside a transaction"
            )
        for view in ("readings_hourly", "readings_daily"):
            conn.execute(
                "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, NULL)",
                [view, since],
            )
        return 0
    with conn.transaction():
        row = conn.execute("SELECT kota_refresh_rollups(%s)", [since]).fetchone()
    return int(row[0]) if row else 0


def pending_marks(conn: psycopg.Connection[Any]) -> int:
    """How many change marks wait for the next refresh (0 on TimescaleDB)."""
    if conn.execute("SELECT to_regclass('kota_rollup_dirty')").fetchone() == (None,):
        return 0
    row = conn.execute("SELECT count(*) FROM kota_rollup_dirty").fetchone()
    return int(row[0]) if row else 0
