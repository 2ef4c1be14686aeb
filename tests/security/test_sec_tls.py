"""TLS listeners on a real Mosquitto with a throwaway test CA (openssl CLI).

One broker, two TLS listeners: server authentication only (devices log in with a password),
and `require_certificate true` (mutual TLS, password as well). Plus the real edge agent over
mqtts:// with its credential, checked end to end through the ACL.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from test_sec_helpers import (
    ACCEPTED,
    NOT_AUTHORIZED,
    Pki,
    SecureBroker,
    connect,
    make_test_pki,
    start_secure_broker,
    tls_listener,
    wait_for,
)

from edge.agent import Agent
from edge.config import load_config
from gateway.credentials import BrokerAccount, gateway_user
from gateway.schema import Sample, decode_uplink
from kota_cli.servers import free_port, temp_dir

SITE = "bkk-sukhumvit"
ACCOUNTS = [
    BrokerAccount("bkk-pms-01", "bkk-pms-01", "THBKK", SITE),
    BrokerAccount("pi-bkk-01", "pi-bkk-01", "THBKK", SITE, agent=True),
]
UP = f"kota/v1/THBKK/{SITE}/bkk-pms-01/up"


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    directory = temp_dir("kota-test-pki-")  # the broker's user must reach the files
    yield make_test_pki(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def broker(pki: Pki) -> Iterator[tuple[SecureBroker, int, int]]:
    tls_port, mtls_port = free_port(), free_port()
    while mtls_port == tls_port:
        mtls_port = free_port()
    passwords = {n: secrets.token_urlsafe(32) for n in ("bkk-pms-01", "pi-bkk-01", "kota-gateway")}
    broker = start_secure_broker(
        ACCOUNTS,
        passwords,
        [gateway_user()],
        extra_config=tls_listener(pki, tls_port)
        + tls_listener(pki, mtls_port, require_certificate=True),
    )
    yield broker, tls_port, mtls_port
    broker.server.destroy()


def test_tls_with_the_test_ca_succeeds_without_it_fails(
    pki: Pki, broker: tuple[SecureBroker, int, int]
) -> None:
    server, tls_port, _ = broker
    device = server.login("bkk-pms-01", port=tls_port, tls=pki.context())
    assert device.publish(UP, b"over tls") in ACCEPTED
    assert device.publish("kota/v1/VNHAN/han/bkk-pms-01/up", b"x") == NOT_AUTHORIZED
    # system CAs only: the test CA is unknown, certificate verification fails
    untrusted = connect(
        tls_port, "bkk-pms-01", server.passwords["bkk-pms-01"],
        client_id="no-ca", tls=pki.context(ca=False),
    )  # fmt: skip
    assert not untrusted.ok and isinstance(untrusted.error, ssl.SSLCertVerificationError)
    # a name the server certificate does not carry fails hostname verification
    with (
        socket.create_connection(("127.0.0.1", tls_port), timeout=5) as sock,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        pki.context().wrap_socket(sock, server_hostname="broker.example.org")
    # plain MQTT to the TLS port gets no CONNACK
    plain = connect(
        tls_port, "bkk-pms-01", server.passwords["bkk-pms-01"], client_id="p", timeout=2
    )
    assert not plain.ok
    # TLS does not replace the password: a wrong one is still refused
    wrong = connect(tls_port, "bkk-pms-01", "nope", client_id="wrong", tls=pki.context())
    assert not wrong.ok


def test_require_certificate_refuses_clients_without_a_cert(
    pki: Pki, broker: tuple[SecureBroker, int, int]
) -> None:
    server, _, mtls_port = broker
    password = server.passwords["bkk-pms-01"]
    without = connect(mtls_port, "bkk-pms-01", password, client_id="no-cert", tls=pki.context())
    assert not without.ok
    log = server.server.base_dir / "mosquitto.log"
    assert wait_for(lambda: "peer did not return a certificate" in log.read_text())
    with_cert = connect(
        mtls_port, "bkk-pms-01", password,
        client_id="with-cert", tls=pki.context(client_cert=True),
    )  # fmt: skip
    assert with_cert.ok, (with_cert.connack, with_cert.error)
    assert with_cert.publish(UP, b"mutual tls") in ACCEPTED
    with_cert.close()


class _Device:
    """A minimal edge driver: one pm2_5 sample every 50 ms."""

    kind = "tick"

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.n = 0

    def run(self, sink: Callable[[str, Sequence[Sample]], None], stop: threading.Event) -> None:
        while not stop.is_set():
            sink(self.device_id, [Sample("pm2_5", float(self.n), "ug/m3", time.time_ns() // 1000)])
            self.n += 1
            stop.wait(0.05)

    def health(self) -> dict[str, object]:
        return {"state": "ok"}


def test_edge_agent_over_tls_with_its_credential(
    tmp_path: Path, pki: Pki, broker: tuple[SecureBroker, int, int]
) -> None:
    """The real agent: mqtts://, username + password_file, uplinks of two devices behind it,
    retained status and heartbeats - all inside the ACL of an agent at THBKK/bkk-sukhumvit."""
    server, tls_port, _ = broker
    gateway = server.login("kota-gateway", client_id="gw")
    for topic in ("kota/v1/+/+/+/up", "kota/v1/+/+/+/status", "kota/v1/+/+/+/heartbeat"):
        gateway.subscribe(topic)
    secret = tmp_path / "mqtt-password"
    secret.write_text(server.passwords["pi-bkk-01"] + "\n")
    secret.chmod(0o600)
    config = tmp_path / "edge.toml"
    config.write_text(
        f"""
[agent]
id = "pi-bkk-01"
city = "THBKK"
site = "{SITE}"
state_dir = "{tmp_path / "state"}"
heartbeat_s = 1

[uplink]
url = "mqtts://localhost:{tls_port}"
username = "pi-bkk-01"
password_file = "{secret}"
ca_file = "{pki.ca_cert}"
batch_max_age_s = 0.2

[metrics]
enabled = false
"""
    )
    agent = Agent(load_config(config), drivers=[_Device("bkk-pms-01"), _Device("bkk-pms-02")])
    agent.start()
    try:
        assert wait_for(
            lambda: (
                {t.split("/")[4] for t in gateway.topics() if t.endswith("/up")}
                == {"bkk-pms-01", "bkk-pms-02"}
                and any(t.endswith("/pi-bkk-01/heartbeat") for t in gateway.topics())
            ),
            timeout=10,
        ), gateway.topics()
    finally:
        agent.stop(drain_s=1)
    assert f"kota/v1/THBKK/{SITE}/pi-bkk-01/status" in gateway.topics()
    batch = decode_uplink(
        next(p for t, p in gateway.messages if t.endswith("/bkk-pms-02/up")),
        f"kota/v1/THBKK/{SITE}/bkk-pms-02/up",
    )
    assert batch.device == "bkk-pms-02" and batch.city == "THBKK"
