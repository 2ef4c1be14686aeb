"""Roles and city-scoped readers.

Group roles (NOLOGIN, created by migration 0004): kota_ingest, kota_reader,
kota_reader_all, kota_indicators. A city-scoped reader is a role granted kota_reader and
mapped to its cities in `reader_cities`; row-level security (plain backend) or the
`kota_scoped` views (TimescaleDB) limit it to those cities' rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from gateway.schema.cities import LOCODE
from kota_cli.errors import KotaError

GROUP_ROLES = ("kota_ingest", "kota_reader", "kota_reader_all", "kota_indicators")
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def create_reader(
    conn: psycopg.Connection[Any],
    name: str,
    cities: Iterable[str],
    *,
    all_cities: bool = False,
    login: bool = False,
    password: str | None = None,
) -> list[str]:
    """Create (or update) a city-scoped reader role; returns the cities it now sees.

    Idempotent: an existing role keeps its attributes (LOGIN is added when asked) and its
    mapping is replaced by `cities` ('*' with all_cities).
    """
    if not _ROLE_NAME.match(name) or name in GROUP_ROLES:
        raise KotaError(
            f"reader role name {name!r}: use lower-case letters, digits and _ (not a kota group role)"
        )
    wanted = sorted({c.strip().upper() for c in cities if c.strip()})
    for city in wanted:
        if not LOCODE.match(city):
            raise KotaError(f"city {city!r} is not a UN/LOCODE (e.g. THBKK)")
    if all_cities:
        wanted = ["*"]
    if not wanted:
        raise KotaError("a reader needs at least one --city (or --all-cities)")
    role = sql.Identifier(name)
    with conn.transaction():
        if wanted != ["*"]:
            known = {
                r[0]
                for r in conn.execute("SELECT locode FROM cities WHERE locode = ANY(%s)", [wanted])
            }
            unknown = [c for c in wanted if c not in known]
            if unknown:
                raise KotaError(f"unknown cities {', '.join(unknown)} (see `kota cities`)")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
        if login:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(role))
        if password is not None:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password)))
        conn.execute(sql.SQL("GRANT kota_reader TO {}").format(role))
        conn.execute("DELETE FROM reader_cities WHERE role_name = %s", [name])
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO reader_cities (role_name, city) VALUES (%s, %s)",
                [(name, c) for c in wanted],
            )
        # TimescaleDB: scoped readers read through the kota_scoped views of the same names.
        if conn.execute("SELECT to_regnamespace('kota_scoped')").fetchone() != (None,):
            dbname = sql.Identifier(conn.info.dbname)
            conn.execute(
                sql.SQL(
                    "ALTER ROLE {} IN DATABASE {} SET search_path = kota_scoped, public"
                ).format(role, dbname)
            )
    return wanted


def reader_cities(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """role -> cities of every mapped reader."""
    out: dict[str, list[str]] = {}
    for role, city in conn.execute("SELECT role_name, city FROM reader_cities ORDER BY 1, 2"):
        out.setdefault(str(role), []).append(str(city))
    return out
