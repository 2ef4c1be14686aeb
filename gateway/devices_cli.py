"""`kota devices`: provision devices, their sites, declared quantities and calibrations,
and their broker credentials and ACLs (see docs/security.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.credentials import (
    GATEWAY_USER,
    INGEST_USER,
    CredentialError,
    IssuedCredential,
    broker_accounts,
    check_username,
    credential_username,
    gateway_user,
    hash_password,
    ingest_user,
    list_credentials,
    render_acl,
    render_passwd,
    revoke_credential,
    update_passwd_file,
    write_secret_file,
    write_text_in_place,
)
from gateway.credentials import (
    issue_credential as issue_credential_fn,
)
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
    """The --database-url value or $KOTA_DATABASE_URL (storage owns the rule and its message)."""
    from storage.db import database_url

    return database_url(url)


def _db_call(func: Callable[..., Any], *args: Any) -> Any:
    """Run a registry DB operation; database and input errors become one line."""
    import psycopg

    try:
        return func(*args)
    except (DeviceSpecError, CredentialError) as err:
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
@click.option(
    "--issue-credential",
    is_flag=True,
    help="Also issue its MQTT credential; the password is shown once (or see --password-file).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the one-time password to this file (mode 0600) instead of printing it.",
)
@click.option(
    "--mosquitto-passwd",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Add/replace the device's entry in this Mosquitto password file.",
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
    issue_credential: bool,
    password_file: Path | None,
    mosquitto_passwd: Path | None,
    database_url: str | None,
) -> None:
    """Add or update one device.

    Example: kota devices add --id bkk-pms-01 --city THBKK --site bkk-sukhumvit
    --latitude 13.73 --longitude 100.56 --model PMS5003 --driver pms5003 --quantity pm2_5:ug/m3

    An edge agent (one credential for all devices of its site) is a row with driver
    kota-agent: kota devices add --id pi-bkk-01 --city THBKK --site bkk-sukhumvit
    --model "Raspberry Pi 4" --driver kota-agent --issue-credential
    """
    if (password_file or mosquitto_passwd) and not issue_credential:
        raise KotaError("--password-file and --mosquitto-passwd need --issue-credential")
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
    url = require_url(database_url)
    _db_call(upsert_devices, url, [spec])
    click.echo(f"device {spec.device_id} saved ({spec.city}/{spec.site_id})")
    if issue_credential:
        _deliver(
            _db_call(issue_credential_fn, url, spec.device_id), password_file, mosquitto_passwd
        )


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
@click.option(
    "--mosquitto-passwd",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also remove the device's login from this Mosquitto password file.",
)
@database_option
def retire(
    device_id: str, at_text: str | None, mosquitto_passwd: Path | None, database_url: str | None
) -> None:
    """Retire a device: its readings observed from then on are dead-lettered.

    A retired device's login is left out of `kota devices passwd` and `kota devices acl`;
    --mosquitto-passwd removes it from a password file now (then reload the broker: SIGHUP).

    Example: kota devices retire bkk-pms-01 --mosquitto-passwd deploy/mosquitto/passwd
    """
    try:
        at = parse_time(at_text, "--at") if at_text else None
    except DeviceSpecError as err:
        raise KotaError(str(err)) from None
    url = require_url(database_url)
    if not _db_call(retire_device, url, device_id, at):
        raise KotaError(f"no device {device_id[:64]!r} in the registry")
    click.echo(f"device {device_id} retired")
    if mosquitto_passwd is not None:
        username = _db_call(credential_username, url, device_id)
        if username is not None:
            _update_passwd(mosquitto_passwd, remove=[username])
            click.echo(f"login {username} removed from {mosquitto_passwd}; reload the broker")


# --------------------------------------------------------------------------- credentials


def _update_passwd(
    path: Path, set_entries: dict[str, str] | None = None, remove: tuple[str, ...] | list[str] = ()
) -> None:
    try:
        update_passwd_file(path, set_entries, remove)
    except CredentialError as err:
        raise KotaError(str(err)) from None


def _deliver(
    cred: IssuedCredential, password_file: Path | None, mosquitto_passwd: Path | None
) -> None:
    """Hand the one-time password over (file or stdout, once), then update the broker file.

    The password goes out first: were the broker file not writable, the operator still has
    it and can rebuild the file with `kota devices passwd`.
    """
    if password_file is not None:
        try:
            write_secret_file(password_file, cred.password)
        except OSError as err:
            raise KotaError(
                f"credential of {cred.device_id} stored, but {password_file} could not be "
                f"written ({err.strerror or err}): rotate it with "
                f"`kota devices credentials rotate {cred.device_id}`"
            ) from None
        click.echo(
            f"credential issued: username {cred.username}, password written to {password_file}"
        )
    else:
        click.echo(f"credential issued: username {cred.username}")
        click.echo("password (shown once, stored nowhere; put it on the device now):")
        click.echo(cred.password)
    if mosquitto_passwd is not None:
        _update_passwd(mosquitto_passwd, {cred.username: cred.password_hash})
        click.echo(f"login {cred.username} written to {mosquitto_passwd}; reload the broker")


def _secret_options(func: F) -> F:
    func = click.option(
        "--mosquitto-passwd",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Add/replace the login in this Mosquitto password file.",
    )(func)
    return click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the one-time password to this file (mode 0600) instead of printing it.",
    )(func)


@group.group()
def credentials() -> None:
    """MQTT credentials: one login per device or edge agent (username = device id).

    \b
    Example:
      kota devices credentials issue bkk-pms-01 --password-file /secure/bkk-pms-01.pw
      kota devices credentials rotate bkk-pms-01 --mosquitto-passwd deploy/mosquitto/passwd
    """


@credentials.command(name="issue")
@click.argument("device_id")
@_secret_options
@database_option
def credentials_issue(
    device_id: str,
    password_file: Path | None,
    mosquitto_passwd: Path | None,
    database_url: str | None,
) -> None:
    """Issue the first credential of a registered, active device.

    Example: kota devices credentials issue bkk-pms-01 --mosquitto-passwd deploy/mosquitto/passwd
    """
    cred = _db_call(issue_credential_fn, require_url(database_url), device_id)
    _deliver(cred, password_file, mosquitto_passwd)


@credentials.command(name="rotate")
@click.argument("device_id")
@_secret_options
@database_option
def credentials_rotate(
    device_id: str,
    password_file: Path | None,
    mosquitto_passwd: Path | None,
    database_url: str | None,
) -> None:
    """Replace a device's password; the old one stops working when the broker reloads.

    Example: kota devices credentials rotate bkk-pms-01 --mosquitto-passwd deploy/mosquitto/passwd
    """
    url = require_url(database_url)
    cred = _db_call(lambda: issue_credential_fn(url, device_id, rotate=True))
    _deliver(cred, password_file, mosquitto_passwd)


@credentials.command(name="revoke")
@click.argument("device_id")
@click.option(
    "--mosquitto-passwd",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also remove the login from this Mosquitto password file.",
)
@database_option
def credentials_revoke(
    device_id: str, mosquitto_passwd: Path | None, database_url: str | None
) -> None:
    """Delete a device's credential (the device stays registered).

    Example: kota devices credentials revoke bkk-pms-01 --mosquitto-passwd deploy/mosquitto/passwd
    """
    username = _db_call(revoke_credential, require_url(database_url), device_id)
    if username is None:
        raise KotaError(f"device {device_id[:64]!r} has no credential")
    click.echo(f"credential {username} revoked")
    if mosquitto_passwd is not None:
        _update_passwd(mosquitto_passwd, remove=[username])
        click.echo(f"login {username} removed from {mosquitto_passwd}; reload the broker")


@credentials.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@database_option
def credentials_list(as_json: bool, database_url: str | None) -> None:
    """List logins (never hashes or passwords).

    Example: kota devices credentials list
    """
    rows = _db_call(list_credentials, require_url(database_url))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    from gateway.schema.cli import print_table

    print_table(
        ["USERNAME", "DEVICE", "CITY", "SITE", "KIND", "STATUS", "ISSUED"],
        [
            [
                r["username"],
                r["device_id"],
                r["city"],
                r["site_id"],
                r["kind"],
                r["status"],
                r["created_at"].isoformat(timespec="seconds"),
            ]
            for r in rows
        ],
    )
    click.echo(f"\n{len(rows)} credentials")


# --------------------------------------------------------------------------- broker files


def _out_option(func: F) -> F:
    return click.option(
        "--out",
        required=True,
        type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
        help="File to write (rewritten in place, mode kept; '-' = stdout).",
    )(func)


def _write_out(out: Path, text: str, new_mode: int) -> None:
    if str(out) == "-":
        click.echo(text, nl=False)
        return
    try:
        write_text_in_place(out, text, new_mode=new_mode)
    except OSError as err:
        raise KotaError(f"cannot write {out}: {err.strerror or err}") from None


@group.command()
@_out_option
@click.option(
    "--gateway-user",
    "gateway_user_name",
    default=GATEWAY_USER,
    show_default=True,
    help="Gateway login.",
)
@click.option(
    "--ingest-user",
    "ingest_user_name",
    default=INGEST_USER,
    show_default=True,
    help="Ingest login.",
)
@database_option
def acl(out: Path, gateway_user_name: str, ingest_user_name: str, database_url: str | None) -> None:
    """Write the broker's acl_file from the registry (active devices with a credential).

    Each device may publish only below kota/v1/<city>/<site>/<device>/; an edge agent
    (driver kota-agent) the uplinks of its site and its own status/heartbeat; the gateway
    reads uplinks, heartbeats and status (also as $share/<group>/...).

    Example: kota devices acl --out deploy/mosquitto/acl
    """
    accounts = _db_call(broker_accounts, require_url(database_url))
    try:
        text = render_acl(
            accounts, [gateway_user(gateway_user_name), ingest_user(ingest_user_name)]
        )
    except CredentialError as err:
        raise KotaError(str(err)) from None
    _write_out(out, text, 0o644)
    if str(out) != "-":
        click.echo(f"ACL for {len(accounts)} logins written to {out}; reload the broker")


def _service_user(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise KotaError(
            f"--service-user {value[:80]!r} must look like kota-gateway=/run/secrets/pw"
        )
    try:
        return check_username(name), Path(path)
    except CredentialError as err:
        raise KotaError(str(err)) from None


@group.command()
@_out_option
@click.option(
    "--service-user",
    "service_users",
    multiple=True,
    metavar="USER=PASSWORD_FILE",
    help="Also a service login whose password is read from a file (repeatable), "
    "e.g. kota-gateway=deploy/secrets/mqtt_gateway_password.",
)
@database_option
def passwd(out: Path, service_users: tuple[str, ...], database_url: str | None) -> None:
    """Write the whole Mosquitto password file: every active credential of the registry (as
    stored hashes) plus the service logins given. Contains hashes only.

    Example: kota devices passwd --out deploy/mosquitto/passwd
    --service-user kota-gateway=deploy/secrets/mqtt_gateway_password
    """
    entries = {
        a.username: a.password_hash for a in _db_call(broker_accounts, require_url(database_url))
    }
    for value in service_users:
        name, path = _service_user(value)
        try:
            secret = path.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise KotaError(f"--service-user {name}: cannot read {path}: {err}") from None
        if not secret:
            raise KotaError(f"--service-user {name}: {path} is empty")
        if name in entries:
            raise KotaError(f"--service-user {name} clashes with a device login")
        entries[name] = hash_password(secret)
    try:
        text = render_passwd(entries)
    except CredentialError as err:
        raise KotaError(str(err)) from None
    _write_out(out, text, 0o640)
    if str(out) != "-":
        click.echo(f"{len(entries)} logins written to {out}; reload the broker")
