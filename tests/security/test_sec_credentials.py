"""Device credentials: the Mosquitto hash format, password/ACL files, and `kota devices`
credential commands against a real PostgreSQL, whose output a real Mosquitto then enforces."""

from __future__ import annotations

import base64
import re
import shutil
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from test_sec_helpers import (
    ACCEPTED,
    NOT_AUTHORIZED,
    Client,
    connect,
    make_readable_by_broker,
    start_secure_broker,
    wait_for,
)

from gateway.credentials import (
    AGENT_DRIVER,
    BrokerAccount,
    CredentialError,
    gateway_user,
    hash_password,
    ingest_user,
    new_password,
    parse_passwd,
    render_acl,
    render_passwd,
    update_passwd_file,
    verify_password,
)
from gateway.devices_cli import group
from kota_cli.errors import KotaError
from kota_cli.servers import MosquittoServer, temp_dir

ROOT = Path(__file__).resolve().parents[2]
HASH_RE = re.compile(r"^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$")

EXAMPLE_REGISTRY = [
    BrokerAccount("bkk-pms-01", "bkk-pms-01", "THBKK", "bkk-sukhumvit"),
    BrokerAccount("bkk-sht-01", "bkk-sht-01", "THBKK", "bkk-sukhumvit"),
    BrokerAccount("pi-bkk-01", "pi-bkk-01", "THBKK", "bkk-sukhumvit", agent=True),
    BrokerAccount("han-aq-01", "han-aq-01", "VNHAN", "han-hoankiem"),
    BrokerAccount("sgp-mtr-01", "sgp-mtr-01", "SGSIN", "sg-bishan"),
]
EXAMPLE_HEADER = (
    "# EXAMPLE generated from a five-device example registry (tests/security/"
    "test_sec_credentials.py);\n# a deployment writes its own: kota devices acl --out "
    "deploy/mosquitto/acl\n"
)


# --------------------------------------------------------------------------- hash format


def test_hash_is_mosquitto_pbkdf2_sha512_format() -> None:
    password = new_password()
    assert len(password) == 43 and password != new_password()
    entry = hash_password(password)
    assert HASH_RE.match(entry), entry
    assert verify_password(password, entry)
    assert not verify_password(password + "x", entry)
    assert hash_password(password) != entry  # fresh salt each time
    # fixed salt: PBKDF2-HMAC-SHA512 over the UTF-8 password, 101 rounds, standard base64
    salt = bytes(range(12))
    fixed = hash_password("secret", salt=salt)
    assert fixed.split("$")[3] == base64.b64encode(salt).decode()
    assert verify_password("secret", fixed) and verify_password(
        "secret", hash_password("secret", iterations=5000)
    )
    for broken in ("", "$6$abc$def", "$7$x$AAAA$BBBB", "$7$0$AAAA$BBBB", "$7$101$!!$??"):
        assert not verify_password("secret", broken)
    with pytest.raises(CredentialError):
        hash_password("")


def test_hashes_of_mosquitto_passwd_verify_with_ours(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), "dev-1", "p4ss word"], check=True)
    entries = parse_passwd(path.read_text())
    assert HASH_RE.match(entries["dev-1"])
    assert verify_password("p4ss word", entries["dev-1"])
    assert not verify_password("p4ss", entries["dev-1"])


def test_python_generated_entries_are_accepted_by_the_real_mosquitto() -> None:
    """Default 101 rounds and a larger count (Mosquitto reads it from the entry)."""
    passwords = {"dev-101": new_password(), "dev-5000": new_password()}
    text = render_passwd(
        {
            "dev-101": hash_password(passwords["dev-101"]),
            "dev-5000": hash_password(passwords["dev-5000"], iterations=5000),
        }
    )
    broker = start_secure_broker([], passwords, [], passwd_text=text)
    try:
        for user, password in passwords.items():
            assert connect(broker.port, user, password, client_id=user).ok, user
            assert not connect(broker.port, user, password[:-1], client_id=user + "-x").ok
    finally:
        broker.server.destroy()


def test_password_file_update_and_parse(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    update_passwd_file(path, {"b-dev": hash_password("1"), "a-dev": hash_password("2")})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    inode = path.stat().st_ino
    update_passwd_file(path, {"b-dev": hash_password("3")}, remove=["a-dev"])
    assert path.stat().st_ino == inode  # same inode: a bind-mounted file sees the change
    entries = parse_passwd(path.read_text())
    assert list(entries) == ["b-dev"] and verify_password("3", entries["b-dev"])
    with pytest.raises(CredentialError, match="line 1"):
        parse_passwd("no-colon-here\n")
    for bad in ("has space", "a:b", "x/y", "", "+", "#"):
        with pytest.raises(CredentialError):
            render_passwd({bad: hash_password("p")})


# --------------------------------------------------------------------------- ACL text


def test_acl_grants_each_login_exactly_its_topics() -> None:
    text = render_acl(EXAMPLE_REGISTRY, [gateway_user(), ingest_user()])
    blocks = {
        block.split("\nuser ")[1].splitlines()[0]: block.split("\nuser ")[1].splitlines()[1:]
        for block in ("\n" + text).split("\n\n")
        if "\nuser " in block
    }
    assert blocks["bkk-pms-01"] == ["topic write kota/v1/THBKK/bkk-sukhumvit/bkk-pms-01/#"]
    assert blocks["pi-bkk-01"] == [
        "topic write kota/v1/THBKK/bkk-sukhumvit/+/up",
        "topic write kota/v1/THBKK/bkk-sukhumvit/pi-bkk-01/status",
        "topic write kota/v1/THBKK/bkk-sukhumvit/pi-bkk-01/heartbeat",
    ]
    assert blocks["kota-gateway"] == [
        "topic read kota/v1/+/+/+/up",
        "topic read kota/v1/+/+/+/heartbeat",
        "topic read kota/v1/+/+/+/status",
        "topic write kota/v1/normalized/#",
    ]
    assert blocks["kota-ingest"] == ["topic read kota/v1/normalized/#"]
    # no topic line before the first `user` line: anonymous clients would get nothing
    before_first_user = text.split("\nuser ")[0]
    assert not [ln for ln in before_first_user.splitlines() if ln and not ln.startswith("#")]
    assert not [ln for ln in text.splitlines() if ln.startswith("pattern")]


@pytest.mark.parametrize(
    "account",
    [
        BrokerAccount("d1", "d1", "TH/BKK", "s"),
        BrokerAccount("d1", "d1", "THBKK", "s/+"),
        BrokerAccount("d1", "d#", "THBKK", "s"),
        BrokerAccount("d 1", "d1", "THBKK", "s"),
    ],
)
def test_acl_refuses_ids_that_would_widen_a_topic(account: BrokerAccount) -> None:
    with pytest.raises(CredentialError):
        render_acl([account], [])


def test_acl_refuses_duplicate_logins() -> None:
    with pytest.raises(CredentialError, match="twice"):
        render_acl([EXAMPLE_REGISTRY[0]], [gateway_user("bkk-pms-01")])


def test_deploy_example_acl_is_current() -> None:
    """deploy/mosquitto/acl is the output for the example registry (no secrets in it)."""
    expected = EXAMPLE_HEADER + render_acl(EXAMPLE_REGISTRY, [gateway_user(), ingest_user()])
    path = ROOT / "deploy" / "mosquitto" / "acl"
    assert path.read_text() == expected, "regenerate: see EXAMPLE_REGISTRY in this test"


# --------------------------------------------------------------------------- CLI + database


@pytest.fixture
def db(pg_url: str) -> str:
    from storage.migrate import migrate

    migrate(pg_url)
    return pg_url


def cli(db: str, *args: str, ok: bool = True) -> str:
    """Run `kota devices ...`; with ok=False expect a KotaError and return its message."""
    result = CliRunner().invoke(group, [*args, "--database-url", db], catch_exceptions=not ok)
    if ok:
        assert result.exit_code == 0, result.output
        return result.output
    assert isinstance(result.exception, KotaError), (result.output, result.exception)
    return str(result.exception)


def add_args(device: str, city: str, site: str, driver: str = "pms5003") -> list[str]:
    lat, lon = {"THBKK": ("13.74", "100.55"), "VNHAN": ("21.03", "105.85")}[city]
    return [
        "add", "--id", device, "--city", city, "--site", site, "--latitude", lat,
        "--longitude", lon, "--model", "PMS5003", "--driver", driver,
    ]  # fmt: skip


def stored(db: str, device: str) -> tuple[str, str]:
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT username, password_hash FROM device_credentials WHERE device_id = %s",
            (device,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_add_issue_credential_stores_a_hash_and_a_working_passwd_entry(
    db: str, tmp_path: Path
) -> None:
    passwd = tmp_path / "passwd"
    secret = tmp_path / "bkk-pms-01.password"
    out = cli(
        db, *add_args("bkk-pms-01", "THBKK", "bkk-sukhumvit"),
        "--issue-credential", "--password-file", str(secret), "--mosquitto-passwd", str(passwd),
    )  # fmt: skip
    assert "device bkk-pms-01 saved" in out and f"password written to {secret}" in out
    password = secret.read_text().strip()
    assert len(password) == 43 and password not in out
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    username, password_hash = stored(db, "bkk-pms-01")
    assert username == "bkk-pms-01" and HASH_RE.match(password_hash)
    with psycopg.connect(db) as conn:  # the password itself is nowhere in the database
        dump = conn.execute("SELECT row_to_json(c)::text FROM device_credentials c").fetchall()
    assert password not in str(dump) and verify_password(password, password_hash)
    assert parse_passwd(passwd.read_text()) == {"bkk-pms-01": password_hash}

    # without --password-file the one-time password is printed exactly once
    out = cli(db, *add_args("han-pms-01", "VNHAN", "han-hoankiem"), "--issue-credential",
              "--mosquitto-passwd", str(passwd))  # fmt: skip
    han_password = out.split("put it on the device now):\n")[1].splitlines()[0]
    assert out.count(han_password) == 1 and verify_password(
        han_password, stored(db, "han-pms-01")[1]
    )
    assert set(parse_passwd(passwd.read_text())) == {"bkk-pms-01", "han-pms-01"}
    # listing shows logins, never hashes
    listing = cli(db, "credentials", "list")
    assert "bkk-pms-01" in listing and "$7$" not in listing and "2 credentials" in listing

    # the real broker accepts the CLI's entry (and only with the right password)
    base = temp_dir("kota-test-sec-cli-")
    shutil.copy(passwd, base / "passwd")
    make_readable_by_broker(base / "passwd")
    broker = MosquittoServer(
        base,
        persistence=False,
        allow_anonymous=False,
        extra_config=f"password_file {base / 'passwd'}\n",
    )
    broker.start()
    try:
        assert connect(broker.port, "bkk-pms-01", password, client_id="a").ok
        assert connect(broker.port, "han-pms-01", han_password, client_id="b").ok
        assert not connect(broker.port, "bkk-pms-01", han_password, client_id="c").ok
    finally:
        broker.destroy()


def test_issue_rotate_revoke_and_retire(db: str, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    cli(db, *add_args("bkk-pms-01", "THBKK", "bkk-sukhumvit"))
    cli(db, "credentials", "rotate", "bkk-pms-01", ok=False)  # nothing to rotate yet
    first = tmp_path / "first"
    cli(db, "credentials", "issue", "bkk-pms-01", "--password-file", str(first),
        "--mosquitto-passwd", str(passwd))  # fmt: skip
    assert "already has a credential" in cli(db, "credentials", "issue", "bkk-pms-01", ok=False)
    assert "--issue-credential" in cli(
        db, *add_args("x-1", "THBKK", "bkk-sukhumvit"), "--password-file", str(first), ok=False
    )
    second = tmp_path / "second"
    cli(db, "credentials", "rotate", "bkk-pms-01", "--password-file", str(second),
        "--mosquitto-passwd", str(passwd))  # fmt: skip
    new_hash = stored(db, "bkk-pms-01")[1]
    assert verify_password(second.read_text().strip(), new_hash)
    assert not verify_password(first.read_text().strip(), new_hash)
    assert parse_passwd(passwd.read_text()) == {"bkk-pms-01": new_hash}
    # retire: the login leaves the password file now and every regenerated file later
    out = cli(db, "retire", "bkk-pms-01", "--mosquitto-passwd", str(passwd))
    assert "removed from" in out and parse_passwd(passwd.read_text()) == {}
    regenerated = tmp_path / "passwd2"
    cli(db, "passwd", "--out", str(regenerated))
    assert parse_passwd(regenerated.read_text()) == {}
    assert "retired" in cli(db, "credentials", "issue", "bkk-pms-01", ok=False)
    cli(db, "credentials", "rotate", "bkk-pms-01", ok=False)  # retired: no new password
    assert "revoked" in cli(db, "credentials", "revoke", "bkk-pms-01")
    cli(db, "credentials", "revoke", "bkk-pms-01", ok=False)
    cli(db, "credentials", "issue", "nope-01", ok=False)


def test_registry_generated_acl_and_passwd_enforced_by_mosquitto(db: str, tmp_path: Path) -> None:
    """End to end: registry -> `kota devices passwd/acl` -> real broker -> per-city isolation."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    cli(db, *add_args("bkk-pms-01", "THBKK", "bkk-sukhumvit"), "--issue-credential",
        "--password-file", str(secrets_dir / "bkk-pms-01"))  # fmt: skip
    cli(db, *add_args("pi-bkk-01", "THBKK", "bkk-sukhumvit", driver=AGENT_DRIVER),
        "--issue-credential", "--password-file", str(secrets_dir / "pi-bkk-01"))  # fmt: skip
    cli(db, *add_args("han-pms-01", "VNHAN", "han-hoankiem"), "--issue-credential",
        "--password-file", str(secrets_dir / "han-pms-01"))  # fmt: skip
    cli(db, *add_args("bkk-old-01", "THBKK", "bkk-sukhumvit"), "--issue-credential",
        "--password-file", str(secrets_dir / "bkk-old-01"))  # fmt: skip
    cli(db, "retire", "bkk-old-01")
    (secrets_dir / "kota-gateway").write_text(new_password() + "\n")
    base = temp_dir("kota-test-sec-e2e-")
    out = cli(db, "passwd", "--out", str(base / "passwd"),
              "--service-user", f"kota-gateway={secrets_dir / 'kota-gateway'}")  # fmt: skip
    assert "4 logins written" in out  # 3 active devices + the gateway, not the retired one
    assert "3 logins" in cli(db, "acl", "--out", str(base / "acl"))
    acl = (base / "acl").read_text()
    assert "user bkk-old-01" not in acl and "topic write kota/v1/THBKK/bkk-sukhumvit/+/up" in acl
    assert "$7$" in (base / "passwd").read_text() and all(
        (secrets_dir / n).read_text().strip() not in (base / "passwd").read_text()
        for n in ("bkk-pms-01", "kota-gateway")
    )
    assert "user bkk-pms-01" in cli(db, "acl", "--out", "-")
    cli(
        db,
        "passwd",
        "--out",
        str(base / "x"),
        "--service-user",
        "bkk-pms-01=" + str(secrets_dir / "kota-gateway"),
        ok=False,
    )
    make_readable_by_broker(base / "passwd", base / "acl")
    broker = MosquittoServer(
        base,
        persistence=False,
        allow_anonymous=False,
        extra_config=f"password_file {base / 'passwd'}\nacl_file {base / 'acl'}\n",
    )
    broker.start()

    def login(name: str) -> Client:
        password = (secrets_dir / name).read_text().strip()
        return connect(broker.port, name, password, client_id=f"c-{name}")

    try:
        gateway = login("kota-gateway")
        assert gateway.ok
        assert gateway.subscribe("$share/kota-gateway/kota/v1/+/+/+/up") == [1]
        bkk = login("bkk-pms-01")
        assert bkk.ok
        assert bkk.publish("kota/v1/THBKK/bkk-sukhumvit/bkk-pms-01/up", b"1") in ACCEPTED
        assert bkk.publish("kota/v1/VNHAN/han-hoankiem/han-pms-01/up", b"2") == NOT_AUTHORIZED
        agent = login("pi-bkk-01")
        assert agent.publish("kota/v1/THBKK/bkk-sukhumvit/bkk-sht-09/up", b"3") in ACCEPTED
        assert agent.publish("kota/v1/VNHAN/han-hoankiem/han-pms-01/up", b"4") == NOT_AUTHORIZED
        assert not login("bkk-old-01").ok  # retired: no login
        assert wait_for(lambda: len(gateway.messages) == 2)
        assert sorted(p for _, p in gateway.messages) == [b"1", b"3"]
    finally:
        broker.destroy()
