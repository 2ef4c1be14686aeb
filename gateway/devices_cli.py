"""`kota devices`: provision devices, their sites, declared quantities and calibrations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.devices import (
    DeviceSpec,
    DeviceSpecError,
    list_devices,
    load_devices_csv,
    parse_calibration,
    parse_quantities,
    parse_time,
    retire_device,
    upsert_devices,
    validate_spec,
)
from kota_cli.errors import KotaError

F = TypeVar("F", bound=Callable[..., Any])


def database_option(func: F) -> F:
    """--database-url, defaulting to $KOTA_DATABASE_URL."""
    return click.option(
        "--database-url",
        envvar="KOTA_DATABASE_URL",
        metavar="URL",
        help="PostgreSQL URL (default: $KOTA_DATABASE_URL).",
    )(func)


def require_url(url: str | None) -> str:
    if not url:
        raise KotaError("no database: set KOTA_DATABASE_URL or pass --database-url")
    return url


def _db_call(func: Callable[..., Any], *args: Any) -> Any:
    """Run a registry DB operation; database and input errors become one line."""
    import psycopg

    try:
        return func(*args)
    except DeviceSpecError as err:
        raise KotaError(str(err)) from None
    except psycopg.errors.UndefinedTable:
        raise KotaError("the registry tables do not exist: run `kota db migrate` first") from None
    except psycopg.errors.ForeignKeyViolation as err:
        raise KotaError(f"unknown city or site: {str(err).splitlines()[0]}") from None
    except psycopg.Error as err:
        raise KotaError(f"database error: {str(err).strip().splitlines()[0]}") from None


@click.group()
def group() -> None:
    """Provision devices, sites and calibrations in the registry.

    \b
    Example:
      kota devices import devices.csv
      kota devices list --city THBKK
    """


@group.command(name="import")
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_option
@click.option("--dry-run", is_flag=True, help="Validate only; write nothing.")
def import_(csv_path: Path, database_url: str | None, dry_run: bool) -> None:
    """Upsert devices from a CSV file.

    Columns: device_id, city, site_id, model, driver (required); site_name, latitude,
    longitude, quantities ("pm2_5:ug/m3;pm10:ug/m3"), calibrations
    ("pm2_5:1.05:-0.8:2025-01-01"), installed_at (optional).

    Example: kota devices import devices.csv
    """
    try:
        specs = load_devices_csv(csv_path)
    except DeviceSpecError as err:
        raise KotaError(str(err)) from None
    if dry_run:
        click.echo(f"{len(specs)} devices valid in {csv_path}")
        return
    count = _db_call(upsert_devices, require_url(database_url), specs)
    click.echo(f"imported {count} devices from {csv_path}")


@group.command()
@click.option("--id", "device_id", required=True, help="Device id (A-Z a-z 0-9 . _ -).")
@click.option("--city", required=True, help="UN/LOCODE of the city, e.g. THBKK.")
@click.option(
    "--site",
    "site_id",
    required=True,
    help="Site id; created when --latitude/--longitude are given.",
)
@click.option("--site-name", help="Human name of the site.")
@click.option("--latitude", type=float, help="Site latitude (WGS84).")
@click.option("--longitude", type=float, help="Site longitude (WGS84).")
@click.option("--model", required=True, help="Hardware model, e.g. PMS5003.")
@click.option("--driver", required=True, help="Edge driver name, e.g. pms5003.")
@click.option(
    "--quantity",
    "quantities",
    multiple=True,
    metavar="Q:UNIT",
    help="Declared quantity and unit, e.g. pm2_5:ug/m3 (repeatable).",
)
@click.option(
    "--calibrate",
    "calibrations",
    multiple=True,
    metavar="Q:GAIN:OFFSET:VALID_FROM",
    help="Linear calibration in the canonical unit, e.g. pm2_5:1.05:-0.8:2025-01-01.",
)
@database_option
def add(
    device_id: str,
    city: str,
    site_id: str,
    site_name: str | None,
    latitude: float | None,
    longitude: float | None,
    model: str,
    driver: str,
    quantities: tuple[str, ...],
    calibrations: tuple[str, ...],
    database_url: str | None,
) -> None:
    """Add or update one device.

    Example: kota devices add --id bkk-pms-01 --city THBKK --site bkk-sukhumvit
    --latitude 13.73 --longitude 100.56 --model PMS5003 --driver pms5003 --quantity pm2_5:ug/m3
    """
    try:
        spec = validate_spec(
            DeviceSpec(
                device_id=device_id,
                city=city,
                site_id=site_id,
                model=model,
                driver=driver,
                site_name=site_name,
                latitude=latitude,
                longitude=longitude,
                quantities=parse_quantities(";".join(quantities)),
                calibrations=[parse_calibration(c) for c in calibrations],
            )
        )
    except DeviceSpecError as err:
        raise KotaError(str(err)) from None
    _db_call(upsert_devices, require_url(database_url), [spec])
    click.echo(f"device {spec.device_id} saved ({spec.city}/{spec.site_id})")


@group.command(name="list")
@click.option("--city", help="Only this city (UN/LOCODE).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@database_option
def list_(city: str | None, as_json: bool, database_url: str | None) -> None:
    """List registered devices.

    Example: kota devices list --city THBKK
    """
    rows = _db_call(list_devices, require_url(database_url), city)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    from gateway.schema.cli import print_table

    print_table(
        ["DEVICE", "CITY", "SITE", "MODEL", "DRIVER", "STATUS", "QUANTITIES"],
        [
            [
                r["device_id"],
                r["city"],
                r["site_id"],
                r["model"],
                r["driver"],
                r["status"],
                r["quantities"],
            ]
            for r in rows
        ],
    )
    click.echo(f"\n{len(rows)} devices")


@group.command()
@click.argument("device_id")
@click.option("--at", "at_text", metavar="TIME", help="Retire from this ISO time (default: now).")
@database_option
def retire(device_id: str, at_text: str | None, database_url: str | None) -> None:
    """Retire a device: its readings observed from then on are dead-lettered.

    Example: kota devices retire bkk-pms-01
    """
    try:
        at = parse_time(at_text, "--at") if at_text else None
    except DeviceSpecError as err:
        raise KotaError(str(err)) from None
    if not _db_call(retire_device, require_url(database_url), device_id, at):
        raise KotaError(f"no device {device_id[:64]!r} in the registry")
    click.echo(f"device {device_id} retired")
