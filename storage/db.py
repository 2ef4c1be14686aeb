"""Connecting to the database with one clear error line instead of a traceback."""

from __future__ import annotations

import os

import psycopg
from psycopg import conninfo as pg_conninfo

from kota_cli.errors import ConfigError, KotaError

URL_SETTING = "KOTA_DATABASE_URL"
MIN_SERVER_VERSION = 150000


def database_url(option: str | None = None) -> str:
    """The database URL: the command-line option, else $KOTA_DATABASE_URL."""
    url = option or os.environ.get(URL_SETTING, "").strip()
    if not url:
        raise ConfigError(
            f"{URL_SETTING}: not set; give --database-url or set it, "
            "e.g. postgresql://kota@127.0.0.1:5432/kota"
        )
    return url


def _where(conninfo: str) -> str:
    try:
        params = pg_conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "the server"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    return f"{host}:{port}" if not host.startswith("/") else f"{host} port {port}"


def _reason(err: Exception) -> str:
    """The useful part of libpq's multi-line message, lower-cased, one line."""
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    reason = first.rsplit("failed: ", 1)[-1].strip()
    return reason[:1].lower() + reason[1:] if reason else reason


def connect(
    conninfo: str,
    *,
    setting: str = URL_SETTING,
    autocommit: bool = False,
    connect_timeout: int = 10,
) -> psycopg.Connection:
    """psycopg.connect, raising KotaError with one line naming the setting on failure."""
    try:
        pg_conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as err:
        raise ConfigError(f"{setting}: invalid database URL: {_reason(err)}") from None
    try:
        conn = psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as err:
        raise KotaError(
            f"{setting}: could not connect to {_where(conninfo)}: {_reason(err)}"
        ) from None
    except psycopg.ProgrammingError as err:
        raise ConfigError(f"{setting}: invalid database URL: {_reason(err)}") from None
    if conn.info.server_version < MIN_SERVER_VERSION:
        version = conn.info.server_version
        conn.close()
        raise KotaError(
            f"{setting}: PostgreSQL {version // 10000} is too old; Kota needs PostgreSQL 15 or newer"
        )
    return conn
