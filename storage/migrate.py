"""Versioned SQL migrations: `storage/migrations/NNNN_name.sql`, applied once, in order.

Layout: files directly in `migrations/` are shared; `migrations/plain/` and
`migrations/timescale/` hold the backend-specific versions of the same numbers. The backend is
chosen once per database (TimescaleDB when the extension is available, else plain
PostgreSQL; `KOTA_DB_BACKEND=plain|timescale` forces it) and recorded in `schema_migrations`,
so a database never mixes branches.

`migrate()` is safe to run on every start: concurrent runs are serialised with a session
advisory lock, applied files are recorded with a SHA-256 checksum, and a file changed after it
was applied is an error naming it. Each migration runs in its own transaction.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from gateway.schema import load_cities
from kota_cli.errors import ConfigError, KotaError
from storage.db import connect

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
BACKENDS = ("plain", "timescale")
BACKEND_SETTING = "KOTA_DB_BACKEND"
RETENTION_SETTING = "KOTA_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 730
# pg_advisory_lock key of `kota db migrate` ("kotamigr")
LOCK_KEY = 0x6B6F74616D696772
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file of the chosen plan."""

    version: int
    name: str  # e.g. "0002_readings"
    branch: str  # "shared", "plain" or "timescale"
    path: Path
    sql: str
    checksum: str

    @property
    def label(self) -> str:
        """How the file is named in messages: relative to storage/migrations."""
        return f"{self.name}.sql" if self.branch == "shared" else f"{self.branch}/{self.name}.sql"


def _checksum(text: str) -> str:
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def discover(backend: str, migrations_dir: Path | None = None) -> list[Migration]:
    """The ordered migrations for `backend`: shared files plus that backend's branch."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    root = migrations_dir or MIGRATIONS_DIR
    found: dict[int, Migration] = {}
    for branch, folder in (("shared", root), (backend, root / backend)):
        for path in sorted(folder.glob("*.sql")):
            match = _FILE.match(path.name)
            if not match:
                raise KotaError(f"migration {path}: name must look like 0001_name.sql")
            text = path.read_text("utf-8")
            migration = Migration(
                int(match.group(1)), path.stem, branch, path, text, _checksum(text)
            )
            if migration.version in found:
                raise KotaError(
                    f"migrations {found[migration.version].label} and {migration.label} "
                    f"share version {migration.version:04d}"
                )
            found[migration.version] = migration
    return [found[v] for v in sorted(found)]


def choose_backend(recorded: str | None, timescale_available: bool, override: str | None) -> str:
    """Which migration branch a database uses.

    `recorded` (the branch already applied) wins: switching a live database between plain
    partitions and a hypertable is a data migration, not something to do on start.
    """
    wanted = (override or "auto").strip().lower()
    if wanted not in ("auto", *BACKENDS):
        raise ConfigError(f"{BACKEND_SETTING}: expected auto, plain or timescale, got {override!r}")
    if recorded:
        if wanted not in ("auto", recorded):
            raise KotaError(
                f"{BACKEND_SETTING}={wanted}, but this database was migrated for the "
                f"{recorded} backend; converting it is a manual data migration (docs/storage.md)"
            )
        return recorded
    if wanted == "timescale" and not timescale_available:
        raise KotaError(
            f"{BACKEND_SETTING}=timescale, but the server has no timescaledb extension "
            "(pg_available_extensions); install it or use plain"
        )
    if wanted == "plain":
        return "plain"
    return "timescale" if timescale_available else "plain"


def retention_days() -> int:
    """Days of raw readings to keep ($KOTA_RETENTION_DAYS, default 730; 0 = forever)."""
    raw = os.environ.get(RETENTION_SETTING, "").strip()
    if not raw:
        return DEFAULT_RETENTION_DAYS
    try:
        days = int(raw)
    except ValueError:
        raise ConfigError(
            f"{RETENTION_SETTING}: expected a whole number of days, got {raw!r}"
        ) from None
    if days < 0:
        raise ConfigError(f"{RETENTION_SETTING}: must be 0 (keep forever) or positive, got {days}")
    return days


def timescale_available(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    """Rows of schema_migrations by version ({} when the table does not exist yet)."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return {}
    rows = conn.execute(
        "SELECT version, name, branch, backend, checksum, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    keys = ("version", "name", "branch", "backend", "checksum", "applied_at")
    return {row[0]: dict(zip(keys, row, strict=True)) for row in rows}


def recorded_backend(applied: dict[int, dict[str, Any]]) -> str | None:
    backends = {row["backend"] for row in applied.values()}
    if len(backends) > 1:
        raise KotaError(f"schema_migrations mixes backends {sorted(backends)}; fix by hand")
    return backends.pop() if backends else None


def database_backend(conn: psycopg.Connection[Any]) -> str | None:
    """The backend a migrated database uses, or None if it was never migrated."""
    return recorded_backend(applied_migrations(conn))


def verify(plan: list[Migration], applied: dict[int, dict[str, Any]]) -> None:
    """Applied files must be unchanged, and the database must not be ahead of this code."""
    by_version = {m.version: m for m in plan}
    for version, row in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise KotaError(
                f"database has migration {row['name']} (version {version:04d}) that this Kota "
                "does not know; it was migrated by a newer version"
            )
        if migration.name != row["name"]:
            raise KotaError(
                f"migration {migration.label}: version {version:04d} was applied as "
                f"{row['name']}; never rename or renumber applied migrations"
            )
        if migration.checksum != row["checksum"]:
            raise KotaError(
                f"migration {migration.label} was changed after it was applied "
                f"(checksum {row['checksum'][:12]} in the database, {migration.checksum[:12]} "
                "on disk); restore it and put the change in a new migration"
            )


def pending(plan: list[Migration], applied: dict[int, dict[str, Any]]) -> list[Migration]:
    return [m for m in plan if m.version not in applied]


_CREATE_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    branch      text NOT NULL,
    backend     text NOT NULL CHECK (backend IN ('plain', 'timescale')),
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL DEFAULT 0
)
"""

_UPSERT_CITY = b"""
INSERT INTO cities (locode, name, country, timezone, latitude, longitude, population,
                    population_year, population_source, joined)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (locode) DO UPDATE SET
    name = EXCLUDED.name, country = EXCLUDED.country, timezone = EXCLUDED.timezone,
    latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
    population = EXCLUDED.population, population_year = EXCLUDED.population_year,
    population_source = EXCLUDED.population_source, joined = EXCLUDED.joined
WHERE (cities.name, cities.country, cities.timezone, cities.latitude, cities.longitude,
       cities.population, cities.population_year, cities.population_source, cities.joined)
      IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.country, EXCLUDED.timezone, EXCLUDED.latitude, EXCLUDED.longitude,
       EXCLUDED.population, EXCLUDED.population_year, EXCLUDED.population_source, EXCLUDED.joined)
"""


def upsert_cities(conn: psycopg.Connection[Any]) -> int:
    """Load gateway/schema/cities.csv into `cities` (insert or update; never deletes)."""
    rows = [
        (
            c.locode,
            c.name,
            c.country,
            c.timezone,
            c.latitude,
            c.longitude,
            c.population,
            c.population_year,
            c.population_source,
            c.joined,
        )
        for c in load_cities().values()
    ]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPSERT_CITY, rows)
    return len(rows)


def migrate(conninfo: str, *, migrations_dir: Path | None = None) -> list[str]:
    """Apply the pending migrations; returns their labels (empty when up to date).

    Also, every run: creates the day partitions for [now - 7 d, now + 14 d] (plain backend)
    and upserts the city registry. Raises KotaError naming the problem.
    """
    with connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        try:
            return _migrate_locked(conn, migrations_dir)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def _migrate_locked(conn: psycopg.Connection[Any], migrations_dir: Path | None) -> list[str]:
    conn.execute(_CREATE_TABLE)
    applied = applied_migrations(conn)
    backend = choose_backend(
        recorded_backend(applied), timescale_available(conn), os.environ.get(BACKEND_SETTING)
    )
    plan = discover(backend, migrations_dir)
    verify(plan, applied)
    conn.execute("SELECT set_config('kota.retention_days', %s, false)", [str(retention_days())])
    done: list[str] = []
    for migration in pending(plan, applied):
        started = time.monotonic()
        try:
            with conn.transaction():
                conn.execute(migration.sql.encode("utf-8"))
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, branch, backend, checksum, duration_ms)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        migration.version,
                        migration.name,
                        migration.branch,
                        backend,
                        migration.checksum,
                        int((time.monotonic() - started) * 1000),
                    ],
                )
        except psycopg.Error as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise KotaError(f"migration {migration.label} failed: {first}") from None
        done.append(migration.label)
    with conn.transaction():
        conn.execute(
            "SELECT kota_ensure_partitions(now() - interval '7 days', now() + interval '14 days')"
        )
    upsert_cities(conn)
    return done
