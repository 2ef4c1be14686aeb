"""Shared pieces of the broker-security tests: MQTT clients, a locked-down broker, test PKI.

Imported by the other test_sec_* modules (pytest puts this folder on sys.path); the tests
here check the helpers themselves (the test CA and the hash format).
"""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.credentials import (
    BrokerAccount,
    ServiceUser,
    hash_password,
    render_acl,
    render_passwd,
)
from kota_cli.servers import MosquittoServer, free_port, temp_dir

NOT_AUTHORIZED = 0x87
BAD_USER_OR_PASSWORD = 0x86
ACCEPTED = (0x00, 0x10)  # PUBACK Success / No matching subscribers


# --------------------------------------------------------------------------- clients


@dataclass
class Client:
    """A paho MQTT client that records CONNACK, SUBACK, PUBACK reason codes and messages."""

    client: mqtt.Client
    connack: ReasonCode | None = None
    error: BaseException | None = None
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: dict[int, list[int]] = field(default_factory=dict)
    connected: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ok(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 5) -> list[int]:
        result, mid = self.client.subscribe(topic, qos=qos)
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None
        assert wait_for(lambda: mid in self.subacks, timeout), f"no SUBACK for {topic}"
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 5) -> int:
        """Publish and wait for the PUBACK; returns its reason code (QoS 1)."""
        info = self.client.publish(topic, payload, qos=qos)
        assert wait_for(lambda: info.mid in self.pubacks, timeout), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def topics(self) -> list[str]:
        with self.lock:
            return [topic for topic, _ in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def connect(
    port: int,
    username: str | None = None,
    password: str | None = None,
    *,
    client_id: str,
    v5: bool = True,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> Client:
    """Connect and wait for the CONNACK (or the connection to fail). Never retries."""
    paho = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    paho.reconnect_delay_set(60, 60)  # a refused client must not retry during the test
    if username is not None:
        paho.username_pw_set(username, password)
    if tls is not None:
        paho.tls_set_context(tls)
    state = Client(paho)

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        state.connack = rc
        state.connected.set()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if state.connack is None:
            state.connack = rc
        state.connected.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with state.lock:
            state.messages.append((msg.topic, bytes(msg.payload)))

    def on_publish(_c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        state.pubacks[mid] = rc.value

    def on_subscribe(_c: mqtt.Client, _u: Any, mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        state.subacks[mid] = [rc.value for rc in rcs]

    paho.on_connect = on_connect
    paho.on_disconnect = on_disconnect
    paho.on_message = on_message
    paho.on_publish = on_publish
    paho.on_subscribe = on_subscribe
    try:
        paho.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as err:  # TLS verification or handshake failure
        state.error = err
        return state
    paho.loop_start()
    if not state.connected.wait(timeout):
        state.error = TimeoutError("no CONNACK")
    if not state.ok:
        paho.loop_stop()
    return state


# --------------------------------------------------------------------------- broker


def make_readable_by_broker(*paths: Path, mode: int = 0o644) -> None:
    """mosquitto started as root drops to the `mosquitto` user before reading these."""
    for path in paths:
        path.chmod(mode)
        if os.geteuid() == 0:
            try:
                info = pwd.getpwnam("mosquitto")
            except KeyError:
                continue
            os.chown(path, info.pw_uid, info.pw_gid)


@dataclass
class SecureBroker:
    server: MosquittoServer
    passwords: dict[str, str]
    tls_port: int | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def passwd_path(self) -> Path:
        return self.server.base_dir / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.server.base_dir / "acl"

    def login(self, username: str, **kwargs: Any) -> Client:
        client = connect(
            kwargs.pop("port", self.port),
            username,
            self.passwords[username],
            client_id=kwargs.pop("client_id", f"t-{username}"),
            **kwargs,
        )
        assert client.ok, f"{username} refused: {client.connack} {client.error}"
        return client

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads the password and ACL files."""
        import signal

        assert self.server._proc is not None
        self.server._proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)


def start_secure_broker(
    accounts: Iterable[BrokerAccount],
    passwords: Mapping[str, str],
    service_users: Iterable[ServiceUser],
    *,
    extra_config: str = "",
    passwd_text: str | None = None,
) -> SecureBroker:
    """A private broker with allow_anonymous false, a password file and a generated ACL."""
    base = temp_dir("kota-test-sec-")
    if passwd_text is None:
        passwd_text = render_passwd({u: hash_password(p) for u, p in passwords.items()})
    (base / "passwd").write_text(passwd_text)
    (base / "acl").write_text(render_acl(accounts, service_users))
    make_readable_by_broker(base / "passwd", base / "acl")
    server = MosquittoServer(
        base,
        persistence=False,
        allow_anonymous=False,
        extra_config=(f"password_file {base / 'passwd'}\nacl_file {base / 'acl'}\n" + extra_config),
    )
    try:
        server.start()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return SecureBroker(server, dict(passwords))


# --------------------------------------------------------------------------- test PKI


@dataclass(frozen=True)
class Pki:
    """A throwaway CA, a server cert for 127.0.0.1/localhost and a client cert (PEM files)."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def context(self, *, ca: bool = True, client_cert: bool = False) -> ssl.SSLContext:
        """A client context: trusting the test CA (or only the system CAs when ca=False)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert) if ca else None)
        if client_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"openssl {args[0]} failed: {result.stderr}"


def make_test_pki(directory: Path) -> Pki:
    """Generate the test PKI with the `openssl` CLI (python `cryptography` is not a
    dependency of Kota). EC P-256 keys, 1-day validity, SANs for 127.0.0.1 and localhost.
    `directory` and its parents must be traversable by the broker (see `temp_dir`)."""
    assert shutil.which("openssl"), (
        "openssl CLI missing (make test installs it: .ci/system-deps.sh)"
    )
    d = directory
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/O=Kota test/CN=Kota test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    for name, cn, ext in (
        ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                "extendedKeyUsage=serverAuth\n"),
        ("client", "pi-bkk-01", "extendedKeyUsage=clientAuth\n"),
    ):  # fmt: skip
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n" + ext)
        _openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/O=Kota test/CN={cn}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "1", "-sha256", "-extfile", f"{name}.ext",
                 "-out", f"{name}.crt", cwd=d)  # fmt: skip
    pki = Pki(
        d, d / "ca.crt", d / "ca.key", d / "server.crt", d / "server.key",
        d / "client.crt", d / "client.key",
    )  # fmt: skip
    make_readable_by_broker(pki.ca_cert, pki.server_cert)
    make_readable_by_broker(pki.server_key, mode=0o600)
    return pki


def tls_listener(pki: Pki, port: int, *, require_certificate: bool = False) -> str:
    """mosquitto.conf lines for a TLS listener on 127.0.0.1:port using the test PKI."""
    lines = [
        f"listener {port} 127.0.0.1",
        f"cafile {pki.ca_cert}",
        f"certfile {pki.server_cert}",
        f"keyfile {pki.server_key}",
    ]
    if require_certificate:
        lines.append("require_certificate true")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- self-tests


def test_test_pki_chain_verifies(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    for name in ("server", "client"):
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki.ca_cert), str(pki.dir / f"{name}.crt")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and ": OK" in result.stdout, result.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(pki.server_cert), "-noout", "-text"],
        capture_output=True,
        text=True,
    ).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert free_port() > 0
