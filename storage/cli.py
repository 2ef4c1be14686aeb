"""`kota db ...`: migrations, status, partitions, rollups, readers and the Parquet archive.

Every command reads the database URL from --database-url or $KOTA_DATABASE_URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from kota_cli.errors import KotaError

F = TypeVar("F", bound=Callable[..., Any])


def _url_option(func: F) -> F:
    return click.option(
        "--database-url",
        "database_url",
        metavar="URL",
        default=None,
        help="PostgreSQL URL (default: $KOTA_DATABASE_URL).",
    )(func)


def _url(option: str | None) -> str:
    from storage.db import database_url

    return database_url(option)


def _connect(option: str | None, autocommit: bool = False) -> Any:
    from storage.db import connect

    return connect(_url(option), autocommit=autocommit)


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"expected a date YYYY-MM-DD, got {value!r}", param_hint=name
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def group() -> None:
    """Database migrations, status, partitions, rollups, readers and Parquet archive.

    \b
    Settings: KOTA_DATABASE_URL (or --database-url), KOTA_DB_BACKEND (auto|plain|timescale),
    KOTA_RETENTION_DAYS (raw readings kept, default 730, 0 = forever). See docs/storage.md.
    """


@group.command()
@_url_option
def migrate(database_url: str | None) -> None:
    """Create or upgrade the schema (safe to run on every start).

    \b
    Example: KOTA_DATABASE_URL=postgresql://kota@127.0.0.1/kota kota db migrate
    """
    from storage.migrate import migrate as run

    applied = run(_url(database_url))
    if applied:
        for label in applied:
            click.echo(f"applied {label}")
    else:
        click.echo("schema is up to date")


@group.command()
@_url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(database_url: str | None, as_json: bool) -> None:
    """Show backend, applied/pending migrations, partitions and row counts.

    \b
    Example: kota db status --json
    """
    from storage.status import format_status
    from storage.status import status as get

    info = get(_url(database_url))
    click.echo(json.dumps(info, indent=2, default=str) if as_json else format_status(info))


@group.command("ensure-partitions")
@_url_option
@click.option("--from", "start", metavar="DATE", help="First day (default: 7 days ago).")
@click.option("--to", "end", metavar="DATE", help="Last day, included (default: in 14 days).")
@click.option(
    "--retention-days",
    type=int,
    default=None,
    help="Also drop day partitions older than this (default $KOTA_RETENTION_DAYS or 730; 0 = never).",
)
def ensure_partitions_cmd(
    database_url: str | None, start: str | None, end: str | None, retention_days: int | None
) -> None:
    """Create daily readings partitions ahead and drop expired ones (plain backend).

    Run it daily (cron / systemd timer). On TimescaleDB it does nothing: chunks and the
    retention policy are automatic.

    \b
    Example: kota db ensure-partitions --from 2023-01-01 --to 2023-12-31 --retention-days 0
    """
    from storage.migrate import retention_days as default_retention
    from storage.partitions import drop_expired_partitions, ensure_partitions

    now = datetime.now(UTC)
    first = (
        datetime.combine(_day(start, "--from"), datetime.min.time(), UTC)
        if start
        else now - timedelta(days=7)
    )
    last = (
        datetime.combine(_day(end, "--to"), datetime.min.time(), UTC)
        if end
        else now + timedelta(days=14)
    )
    keep = default_retention() if retention_days is None else retention_days
    if keep < 0:
        raise click.BadParameter("must be 0 or positive", param_hint="--retention-days")
    with _connect(database_url) as conn:
        created = ensure_partitions(conn, first, last)
        dropped = drop_expired_partitions(conn, keep)
    click.echo(
        f"created {created} partitions, dropped {dropped} expired (retention {keep or 'forever'} days)"
    )


@group.command("refresh-rollups")
@_url_option
@click.option("--since", metavar="DATE", help="Also recompute every bucket from this day on.")
def refresh_rollups_cmd(database_url: str | None, since: str | None) -> None:
    """Bring readings_hourly / readings_daily up to date.

    Plain backend: recomputes the buckets touched since the last refresh (run it every
    minute or let the ingest writer call it). TimescaleDB: the refresh policies do this;
    --since re-materialises the continuous aggregates from that day (for old backfills).

    \b
    Example: kota db refresh-rollups --since 2024-01-01
    """
    from storage.rollups import refresh_rollups

    since_ts = datetime.combine(_day(since, "--since"), datetime.min.time(), UTC) if since else None
    with _connect(database_url, autocommit=True) as conn:
        n = refresh_rollups(conn, since=since_ts)
    click.echo(f"refreshed {n} buckets")


@group.command("create-reader")
@_url_option
@click.argument("name")
@click.option(
    "--city", "cities", multiple=True, metavar="LOCODE", help="A city it may read (repeat)."
)
@click.option("--all-cities", is_flag=True, help="Read every city (like kota_reader_all).")
@click.option("--login", is_flag=True, help="Let the role log in (else grant it to login users).")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the role's password (first line).",
)
def create_reader_cmd(
    database_url: str | None,
    name: str,
    cities: tuple[str, ...],
    all_cities: bool,
    login: bool,
    password_file: Path | None,
) -> None:
    """Create or update a city-scoped read-only role.

    \b
    Example: kota db create-reader reader_thbkk --city THBKK --login --password-file pw.txt
    """
    from storage.roles import create_reader

    password = password_file.read_text("utf-8").splitlines()[0] if password_file else None
    with _connect(database_url) as conn:
        seen = create_reader(
            conn, name, cities, all_cities=all_cities, login=login, password=password
        )
    click.echo(f"{name}: reads {'every city' if seen == ['*'] else ', '.join(seen)}")


@group.command("export-parquet")
@_url_option
@click.option("--from", "start", required=True, metavar="DATE", help="First UTC day.")
@click.option("--to", "end", required=True, metavar="DATE", help="Last UTC day, included.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Archive directory (city=XXXXX/date=YYYY-MM-DD/part-0.parquet).",
)
@click.option("--city", "cities", multiple=True, metavar="LOCODE", help="Only these cities.")
def export_parquet_cmd(
    database_url: str | None, start: str, end: str, out_dir: Path, cities: tuple[str, ...]
) -> None:
    """Archive readings as Hive-partitioned, zstd Parquet, streaming one day at a time.

    \b
    Example: kota db export-parquet --from 2024-01-01 --to 2024-01-31 --out archive/
    """
    from storage.archive import export_parquet

    first, last = _day(start, "--from"), _day(end, "--to")
    if last < first:
        raise KotaError(f"--to {last} is before --from {first}")
    result = export_parquet(
        _url(database_url), first, last + timedelta(days=1), out_dir, cities=list(cities) or None
    )
    click.echo(f"wrote {result.rows} readings in {len(result.files)} files under {out_dir}")
