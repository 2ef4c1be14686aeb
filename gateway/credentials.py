"""Broker credentials and ACLs: one MQTT login per device or edge agent, scoped to its site.

* A credential is a random password (``secrets.token_urlsafe``, 256 bits) shown once to the
  operator; the registry (``device_credentials``) keeps only its hash, already in Mosquitto's
  own password-file format (``$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>``, what
  ``mosquitto_passwd`` writes for Mosquitto 2.x), so ``kota devices passwd`` can rebuild the
  broker's password file from the database at any time without ever seeing a password.
* The MQTT username is the device id (globally unique, matches ``ID_RE`` so it can contain
  no ``:``, ``/``, ``+``, ``#`` or white space, and stays the same if the device moves site).
  Its city and site come from the registry and are bound in the generated ACL.
* A registry row whose driver is ``kota-agent`` is an edge agent (one credential for all the
  devices behind it): it may publish the uplinks of any device of its own site and its own
  status/heartbeat. Any other row is a device: it may publish only below its own topic.
* `render_acl` writes an acl_file in which every login gets exactly the topics it needs;
  Mosquitto denies everything not granted (and drops unauthorised QoS 0/1 publishes; an
  MQTT v5 client gets PUBACK reason code 0x87 Not authorized).

May import: the standard library, gateway.schema; psycopg lazily for the registry functions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.schema.uplink import ID_RE, TOPIC_PREFIX

AGENT_DRIVER = "kota-agent"
"""Registry driver name that marks an edge agent rather than a single device."""

PBKDF2_ITERATIONS = 101
"""Mosquitto 2.0's `mosquitto_passwd` default. Our passwords are 256-bit random tokens, so key
stretching adds nothing against guessing; a low count keeps reconnect storms cheap for the
broker. Mosquitto reads the count from each entry, so a larger value also works."""

SALT_BYTES = 12  # as mosquitto_passwd
PASSWORD_BYTES = 32  # token_urlsafe(32): 43 characters, 256 bits

GATEWAY_USER = "kota-gateway"
INGEST_USER = "kota-ingest"


class CredentialError(ValueError):
    """Invalid credential input or state; the message is shown to the operator."""


# --------------------------------------------------------------------------- hashing


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(
    password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None
) -> str:
    """Mosquitto 2.x password hash ``$7$<iterations>$<salt b64>$<hash b64>`` (PBKDF2-SHA512)."""
    if not password:
        raise CredentialError("empty password")
    if iterations < 1:
        raise CredentialError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return (
        f"$7${iterations}${base64.b64encode(salt).decode('ascii')}"
        f"${base64.b64encode(digest).decode('ascii')}"
    )


def verify_password(password: str, password_hash: str) -> bool:
    """True when `password` matches a ``$7$`` hash (constant-time comparison)."""
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    if iterations < 1:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(digest, expected)


def check_username(username: str) -> str:
    """Usernames go verbatim into the password file (``user:hash``) and the ACL (``user X``)."""
    if not ID_RE.match(username):
        raise CredentialError(
            f"username {username[:80]!r} must be 1-64 characters of A-Z a-z 0-9 . _ -"
        )
    return username


# --------------------------------------------------------------------------- password file


def passwd_line(username: str, password_hash: str) -> str:
    if not password_hash.startswith("$7$") or any(c in password_hash for c in ":\n\r "):
        raise CredentialError(f"password hash of {username} is not a mosquitto $7$ hash")
    return f"{check_username(username)}:{password_hash}"


def parse_passwd(text: str) -> dict[str, str]:
    """username -> hash of a Mosquitto password file (comments and blank lines skipped)."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, password_hash = line.partition(":")
        if not sep or not username or not password_hash:
            raise CredentialError(f"password file line {number} is not user:hash")
        entries[username] = password_hash
    return entries


def render_passwd(entries: Mapping[str, str]) -> str:
    """A whole password file, sorted by username (hashes only, never passwords)."""
    return "".join(passwd_line(user, entries[user]) + "\n" for user in sorted(entries))


def write_text_in_place(path: Path, text: str, *, new_mode: int) -> None:
    """Rewrite `path` keeping its inode and mode (a file bind-mounted into the broker's
    container only sees writes to the same inode); a new file gets `new_mode`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, new_mode)
    try:
        data = text.encode("utf-8")
        os.ftruncate(fd, 0)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def write_secret_file(path: Path, secret: str) -> None:
    """Write a one-time password to a file only its owner can read (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secret + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def update_passwd_file(
    path: Path, set_entries: Mapping[str, str] | None = None, remove: Iterable[str] = ()
) -> None:
    """Add/replace entries (username -> hash) and remove usernames in a password file."""
    try:
        entries = parse_passwd(path.read_text("utf-8")) if path.exists() else {}
    except (OSError, UnicodeDecodeError) as err:
        raise CredentialError(f"cannot read {path}: {err}") from None
    for username in remove:
        entries.pop(username, None)
    entries.update(set_entries or {})
    try:
        write_text_in_place(path, render_passwd(entries), new_mode=0o640)
    except OSError as err:
        raise CredentialError(f"cannot write {path}: {err}") from None


# --------------------------------------------------------------------------- ACL


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One registry login: a device (or agent) with its place and password hash."""

    username: str
    device_id: str
    city: str
    site_id: str
    agent: bool = False
    password_hash: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """A server-side login (gateway, ingest) and the topic filters it may read/write."""

    username: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


def gateway_user(username: str = GATEWAY_USER) -> ServiceUser:
    """Reads every uplink, heartbeat and status (shared-subscription workers included:
    Mosquitto checks a ``$share/<group>/<filter>`` subscription against ``<filter>``) and
    publishes normalised readings."""
    return ServiceUser(
        username,
        read=(
            f"{TOPIC_PREFIX}/+/+/+/up",
            f"{TOPIC_PREFIX}/+/+/+/heartbeat",
            f"{TOPIC_PREFIX}/+/+/+/status",
        ),
        write=(f"{TOPIC_PREFIX}/normalized/#",),
    )


def ingest_user(username: str = INGEST_USER) -> ServiceUser:
    """Reads the normalised readings the gateway publishes."""
    return ServiceUser(username, read=(f"{TOPIC_PREFIX}/normalized/#",))


DEFAULT_SERVICE_USERS = (gateway_user(), ingest_user())


def _check_topic_part(value: str, what: str) -> str:
    if not ID_RE.match(value):  # no / + # or white space can reach the ACL
        raise CredentialError(f"{what} {value[:80]!r} cannot be used in a topic")
    return value


def account_topics(account: BrokerAccount) -> list[str]:
    """Topic filters an account may publish to."""
    city = _check_topic_part(account.city, "city")
    site = _check_topic_part(account.site_id, "site")
    own = _check_topic_part(account.device_id, "device")
    base = f"{TOPIC_PREFIX}/{city}/{site}"
    if account.agent:
        return [f"{base}/+/up", f"{base}/{own}/status", f"{base}/{own}/heartbeat"]
    return [f"{base}/{own}/#"]


def render_acl(
    devices: Iterable[BrokerAccount],
    service_users: Iterable[ServiceUser] = DEFAULT_SERVICE_USERS,
) -> str:
    """Mosquitto acl_file text: service users first, then one block per device/agent.

    No topic line precedes the first ``user`` line, so anonymous clients (if ever allowed)
    get nothing; no ``pattern`` line is used because a device-id username cannot carry the
    city and site, which each block binds explicitly.
    """
    lines = [
        "# Mosquitto acl_file generated by `kota devices acl` from the device registry.",
        "# Do not edit: change the registry and regenerate. Everything not granted is denied.",
        "# Devices publish only below kota/v1/<city>/<site>/<device>/; edge agents (driver",
        f"# {AGENT_DRIVER}) publish the uplinks of their own site and their own status/heartbeat.",
        "",
    ]
    seen: set[str] = set()

    def start(username: str, comment: str) -> None:
        check_username(username)
        if username in seen:
            raise CredentialError(f"username {username} appears twice in the ACL")
        seen.add(username)
        lines.append(f"# {comment}")
        lines.append(f"user {username}")

    for service in service_users:
        start(service.username, "service")
        lines.extend(f"topic read {topic}" for topic in service.read)
        lines.extend(f"topic write {topic}" for topic in service.write)
        lines.append("")
    for account in sorted(devices, key=lambda a: (a.city, a.site_id, a.username)):
        kind = "edge agent" if account.agent else "device"
        start(account.username, f"{kind} {account.device_id} at {account.city}/{account.site_id}")
        lines.extend(f"topic write {topic}" for topic in account_topics(account))
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    device_id: str
    username: str
    password: str = field(repr=False)
    password_hash: str = field(repr=False)


def issue_credential(
    conninfo: str, device_id: str, *, rotate: bool = False, iterations: int = PBKDF2_ITERATIONS
) -> IssuedCredential:
    """Create (or, with `rotate`, replace) the credential of an active registered device.

    Stores only the hash; the returned password must be handed to the device now and is
    not recoverable afterwards. `rotate=True` requires an existing credential; without it an
    existing credential is an error (use rotate), so a password is never replaced by accident.
    """
    import psycopg

    password = new_password()
    password_hash = hash_password(password, iterations=iterations)
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM devices WHERE device_id = %s FOR UPDATE", (device_id,))
        row = cur.fetchone()
        if row is None:
            raise CredentialError(f"no device {device_id[:64]!r} in the registry")
        if row[0] != "active":
            raise CredentialError(f"device {device_id} is {row[0]}: no credential for it")
        username = check_username(device_id)
        cur.execute("SELECT 1 FROM device_credentials WHERE device_id = %s", (device_id,))
        exists = cur.fetchone() is not None
        if rotate and not exists:
            raise CredentialError(
                f"device {device_id} has no credential to rotate "
                f"(issue one: kota devices credentials issue {device_id})"
            )
        if not rotate and exists:
            raise CredentialError(
                f"device {device_id} already has a credential "
                f"(replace it: kota devices credentials rotate {device_id})"
            )
        cur.execute(
            "INSERT INTO device_credentials (device_id, username, password_hash) "
            "VALUES (%s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
            "username = EXCLUDED.username, password_hash = EXCLUDED.password_hash, "
            "created_at = now()",
            (device_id, username, password_hash),
        )
    return IssuedCredential(device_id, username, password, password_hash)


def revoke_credential(conninfo: str, device_id: str) -> str | None:
    """Delete a device's credential; returns its username, or None if it had none."""
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "DELETE FROM device_credentials WHERE device_id = %s RETURNING username",
            (device_id,),
        )
        row = cur.fetchone()
    return None if row is None else str(row[0])


def credential_username(conninfo: str, device_id: str) -> str | None:
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT username FROM device_credentials WHERE device_id = %s", (device_id,))
        row = cur.fetchone()
    return None if row is None else str(row[0])


def broker_accounts(conninfo: str, *, include_retired: bool = False) -> list[BrokerAccount]:
    """Logins of the registry (active devices only unless `include_retired`), with hashes."""
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT c.username, d.device_id, d.city, d.site_id, d.driver, c.password_hash "
            "FROM device_credentials c JOIN devices d ON d.device_id = c.device_id "
            "WHERE %s OR d.status = 'active' ORDER BY c.username",
            (include_retired,),
        )
        return [
            BrokerAccount(u, d, c, s, driver == AGENT_DRIVER, h)
            for u, d, c, s, driver, h in cur.fetchall()
        ]


def list_credentials(conninfo: str) -> list[dict[str, Any]]:
    """Username, device, place, kind, status and issue time of every credential (no hashes)."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT c.username, d.device_id, d.city, d.site_id, "
            "CASE WHEN d.driver = %s THEN 'agent' ELSE 'device' END AS kind, "
            "d.status, c.created_at FROM device_credentials c "
            "JOIN devices d ON d.device_id = c.device_id ORDER BY d.city, c.username",
            (AGENT_DRIVER,),
        )
        return list(cur.fetchall())
