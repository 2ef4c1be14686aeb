"""`kota db status`: what is applied, which backend, partitions and row counts."""

from __future__ import annotations

import os
from typing import Any

from storage.db import connect
from storage.migrate import (
    BACKEND_SETTING,
    applied_migrations,
    choose_backend,
    discover,
    pending,
    recorded_backend,
    timescale_available,
)
from storage.partitions import list_partitions
from storage.rollups import pending_marks

# Small tables are counted exactly; readings and rollups use planner estimates (reltuples)
# because an exact count(*) of a year of readings takes minutes.
EXACT_TABLES = (
    "cities",
    "sites",
    "devices",
    "device_quantities",
    "calibrations",
    "device_credentials",
    "agent_status",
    "reader_cities",
    "schema_migrations",
)
EXACT_BELOW = 1_000_000  # estimated tables smaller than this are counted exactly too
ESTIMATED_TABLES = (
    "readings",
    "readings_hourly",
    "readings_daily",
    "dead_letters",
    "indicator_values",
)


def _estimate(conn: Any, table: str) -> int | None:
    row = conn.execute(
        """
        SELECT sum(greatest(c.reltuples, 0))::bigint
          FROM pg_class c
         WHERE c.oid = to_regclass(%s)
            OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s))
        """,
        [table, table],
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def status(conninfo: str) -> dict[str, Any]:
    """A JSON-able description of the database."""
    with connect(conninfo, autocommit=True) as conn:
        applied = applied_migrations(conn)
        recorded = recorded_backend(applied)
        available = timescale_available(conn)
        backend = choose_backend(recorded, available, os.environ.get(BACKEND_SETTING))
        plan = discover(backend)
        todo = pending(plan, applied)
        info: dict[str, Any] = {
            "server_version": conn.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
            "database": conn.info.dbname,
            "backend": backend,
            "backend_recorded": recorded is not None,
            "timescaledb_available": available,
            "applied": [
                {
                    "version": v,
                    "name": r["name"],
                    "branch": r["branch"],
                    "applied_at": r["applied_at"].isoformat(),
                }
                for v, r in sorted(applied.items())
            ],
            "pending": [m.label for m in todo],
            "rows_exact": {},
            "rows_estimated": {},
        }
        for table in EXACT_TABLES:
            if conn.execute("SELECT to_regclass(%s)", [table]).fetchone() != (None,):
                info["rows_exact"][table] = conn.execute(
                    f"SELECT count(*) FROM {table}"
                ).fetchone()[0]  # type: ignore[index]
        for table in ESTIMATED_TABLES:
            if conn.execute("SELECT to_regclass(%s)", [table]).fetchone() != (None,):
                estimate = _estimate(conn, table)
                if estimate is None or estimate < EXACT_BELOW:
                    info["rows_exact"][table] = conn.execute(
                        f"SELECT count(*) FROM {table}"
                    ).fetchone()[0]  # type: ignore[index]
                else:
                    info["rows_estimated"][table] = estimate
        if conn.execute("SELECT to_regclass('readings')").fetchone() != (None,):
            parts = list_partitions(conn)
            days = [name for name, _ in parts if name != "readings_default"]
            info["partitions"] = {
                "count": len(days),
                "first": days[0].removeprefix("readings_p") if days else None,
                "last": days[-1].removeprefix("readings_p") if days else None,
                "default_rows": conn.execute("SELECT count(*) FROM readings_default").fetchone()[0]  # type: ignore[index]
                if any(name == "readings_default" for name, _ in parts)
                else None,
            }
            info["rollup_marks_pending"] = pending_marks(conn)
        if backend == "timescale" and recorded:
            info["timescaledb"] = _timescale_info(conn)
        return info


def _timescale_info(conn: Any) -> dict[str, Any]:
    version = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    chunks = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE is_compressed) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings'"
    ).fetchone()
    jobs = conn.execute(
        "SELECT proc_name, hypertable_name, schedule_interval::text FROM timescaledb_information.jobs "
        "WHERE hypertable_name IN ('readings', 'readings_hourly', 'readings_daily') OR proc_name LIKE 'policy_%' "
        "ORDER BY job_id"
    ).fetchall()
    return {
        "version": version[0] if version else None,
        "chunks": chunks[0] if chunks else None,
        "compressed_chunks": chunks[1] if chunks else None,
        "jobs": [{"proc": p, "relation": h, "every": s} for p, h, s in jobs],
    }


def format_status(info: dict[str, Any]) -> str:
    """Human-readable lines for `kota db status`."""
    lines = [
        f"database   {info['database']} (PostgreSQL {info['server_version']})",
        f"backend    {info['backend']}"
        + ("" if info["backend_recorded"] else " (not migrated yet; would be chosen)")
        + f"; timescaledb {'available' if info['timescaledb_available'] else 'not available'}",
        f"migrations {len(info['applied'])} applied, {len(info['pending'])} pending",
    ]
    lines += [f"  applied  {m['version']:04d} {m['name']} ({m['branch']})" for m in info["applied"]]
    lines += [f"  pending  {label}" for label in info["pending"]]
    if "partitions" in info and info["backend"] == "plain":
        p = info["partitions"]
        lines.append(
            f"partitions {p['count']} daily ({p['first']} .. {p['last']}), "
            f"{p['default_rows']} rows in readings_default"
        )
        lines.append(f"rollups    {info['rollup_marks_pending']} change marks waiting for refresh")
    if "timescaledb" in info:
        t = info["timescaledb"]
        lines.append(
            f"timescaledb {t['version']}: {t['chunks']} chunks ({t['compressed_chunks']} compressed), "
            f"{len(t['jobs'])} policies"
        )
    lines.append("rows")
    for table, n in info["rows_exact"].items():
        lines.append(f"  {table:<20} {n:>12}")
    for table, n in info["rows_estimated"].items():
        lines.append(f"  {table:<20} {'~' + str(n) if n is not None else '?':>12}")
    return "\n".join(lines)
