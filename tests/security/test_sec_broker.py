"""Per-city broker ACLs and password logins against a real Mosquitto (allow_anonymous false).

Registry used here: two Bangkok devices at one site, one Hanoi device, one Bangkok edge agent;
service logins kota-gateway and kota-ingest. Every password-file entry is generated in Python.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from test_sec_helpers import (
    ACCEPTED,
    BAD_USER_OR_PASSWORD,
    NOT_AUTHORIZED,
    Client,
    SecureBroker,
    connect,
    start_secure_broker,
    wait_for,
)

from gateway.credentials import (
    BrokerAccount,
    gateway_user,
    hash_password,
    ingest_user,
    render_acl,
    render_passwd,
)

BKK, HAN = "THBKK", "VNHAN"
SITE, OTHER_SITE, HAN_SITE = "bkk-sukhumvit", "bkk-silom", "han-hoankiem"
ACCOUNTS = [
    BrokerAccount("bkk-pms-01", "bkk-pms-01", BKK, SITE),
    BrokerAccount("bkk-pms-02", "bkk-pms-02", BKK, SITE),
    BrokerAccount("han-pms-01", "han-pms-01", HAN, HAN_SITE),
    BrokerAccount("pi-bkk-01", "pi-bkk-01", BKK, SITE, agent=True),
]
SERVICES = [gateway_user(), ingest_user()]


def up(city: str, site: str, device: str) -> str:
    return f"kota/v1/{city}/{site}/{device}/up"


@pytest.fixture
def broker() -> Iterator[SecureBroker]:
    names = [a.username for a in ACCOUNTS] + [s.username for s in SERVICES]
    passwords = {name: secrets.token_urlsafe(32) for name in names}
    broker = start_secure_broker(ACCOUNTS, passwords, SERVICES)
    yield broker
    broker.server.destroy()


def gateway_monitor(broker: SecureBroker) -> tuple[Client, Client]:
    """The gateway reading every up/heartbeat/status and ingest reading normalized/#."""
    gateway = broker.login("kota-gateway", client_id="gw-monitor")
    for topic in ("kota/v1/+/+/+/up", "kota/v1/+/+/+/heartbeat", "kota/v1/+/+/+/status"):
        assert gateway.subscribe(topic) == [1]
    ingest = broker.login("kota-ingest", client_id="ingest-monitor")
    assert ingest.subscribe("kota/v1/normalized/#") == [1]
    return gateway, ingest


def test_anonymous_wrong_password_and_unknown_user_are_refused(broker: SecureBroker) -> None:
    anonymous = connect(broker.port, client_id="anon")
    assert not anonymous.ok and anonymous.connack is not None
    assert anonymous.connack.value == NOT_AUTHORIZED
    wrong = connect(broker.port, "bkk-pms-01", "not-the-password", client_id="wrong")
    assert not wrong.ok and wrong.connack is not None
    assert wrong.connack.value in (BAD_USER_OR_PASSWORD, NOT_AUTHORIZED)
    # another device's password does not open this device's login
    swapped = connect(broker.port, "bkk-pms-01", broker.passwords["bkk-pms-02"], client_id="x")
    assert not swapped.ok
    unknown = connect(broker.port, "rogue-01", "whatever", client_id="rogue")
    assert not unknown.ok
    # MQTT 3.1.1 too (CONNACK return code 5, which paho reports as 0x87 Not authorized)
    old = connect(broker.port, client_id="anon311", v5=False)
    assert not old.ok and old.connack is not None and old.connack.value == NOT_AUTHORIZED
    assert broker.login("bkk-pms-01").ok


def test_device_publishes_only_below_its_own_topic(broker: SecureBroker) -> None:
    gateway, ingest = gateway_monitor(broker)
    device = broker.login("bkk-pms-01")
    own = up(BKK, SITE, "bkk-pms-01")
    allowed = [own, f"kota/v1/{BKK}/{SITE}/bkk-pms-01/status"]
    denied = [
        up(HAN, HAN_SITE, "han-pms-01"),  # Hanoi's device
        up(HAN, HAN_SITE, "bkk-pms-01"),  # its own id under Hanoi
        up(BKK, SITE, "bkk-pms-02"),  # another Bangkok device at the same site
        up(BKK, OTHER_SITE, "bkk-pms-01"),  # its own id at another site
        f"kota/v1/{BKK}/{SITE}/pi-bkk-01/status",  # the agent's status
        "kota/v1/normalized/THBKK",  # bypassing the gateway's QC
        "kota/v1/THBKK/bkk-sukhumvit",
        "$SYS/broker/x",
    ]
    # MQTT v5: the PUBACK of an unauthorised publish carries 0x87 Not authorized
    for topic in allowed:
        assert device.publish(topic, b"ok") in ACCEPTED, topic
    for topic in denied:
        assert device.publish(topic, b"evil") == NOT_AUTHORIZED, topic
    # MQTT 3.1.1: the broker acknowledges but silently drops; the gateway sees only `own`
    old = broker.login("bkk-pms-01", client_id="bkk-pms-01-v311", v5=False)
    for topic in denied:
        old.publish(topic, b"evil311")
    old.publish(own, b"ok311")
    assert wait_for(lambda: gateway.topics().count(own) == 2)
    assert wait_for(lambda: len(gateway.topics()) >= 3)
    assert sorted(gateway.topics()) == sorted([*allowed, own])
    assert all(payload != b"evil" and payload != b"evil311" for _, payload in gateway.messages)
    assert ingest.messages == []


def test_device_can_read_nothing(broker: SecureBroker) -> None:
    device = broker.login("bkk-pms-01", client_id="snoop")
    codes = [
        device.subscribe(topic)[0]
        for topic in (
            "kota/v1/#",
            "#",
            "$share/snoop/kota/v1/+/+/+/up",
            up(HAN, HAN_SITE, "han-pms-01"),
        )
    ]
    # Mosquitto 2.0.x grants the SUBACK (newer releases may answer 0x87) but checks read
    # access on every delivery, so nothing reaches the device
    assert set(codes) <= {1, NOT_AUTHORIZED}
    other = broker.login("han-pms-01")
    assert other.publish(up(HAN, HAN_SITE, "han-pms-01"), b"hanoi") in ACCEPTED
    gateway, _ = gateway_monitor(broker)
    assert other.publish(up(HAN, HAN_SITE, "han-pms-01"), b"hanoi2") in ACCEPTED
    assert wait_for(lambda: len(gateway.messages) == 1)
    assert device.messages == []


def test_edge_agent_publishes_for_its_site_only(broker: SecureBroker) -> None:
    gateway, _ = gateway_monitor(broker)
    agent = broker.login("pi-bkk-01")
    base = f"kota/v1/{BKK}/{SITE}"
    allowed = [
        up(BKK, SITE, "bkk-pms-01"),
        up(BKK, SITE, "bkk-tasmota-07"),  # any device behind it at its site
        f"{base}/pi-bkk-01/status",
        f"{base}/pi-bkk-01/heartbeat",
    ]
    denied = [
        up(BKK, OTHER_SITE, "bkk-pms-09"),
        up(HAN, HAN_SITE, "han-pms-01"),
        f"{base}/bkk-pms-01/status",  # another client's status
        f"{base}/pi-bkk-02/heartbeat",
        f"{base}/bkk-pms-01/cmd",
    ]
    for topic in allowed:
        assert agent.publish(topic, b"ok") in ACCEPTED, topic
    for topic in denied:
        assert agent.publish(topic, b"evil") == NOT_AUTHORIZED, topic
    assert wait_for(lambda: len(gateway.messages) >= len(allowed))
    assert sorted(gateway.topics()) == sorted(allowed)


def test_gateway_reads_through_a_shared_subscription(broker: SecureBroker) -> None:
    shared = "$share/kota-gateway/kota/v1/+/+/+/up"
    workers = [broker.login("kota-gateway", client_id=f"gw-{i}") for i in range(2)]
    for worker in workers:
        assert worker.subscribe(shared) == [1]
    # read access is checked against the real topic of each message, without the
    # $share/<group>/ prefix: a share over topics the gateway may not read delivers nothing
    snoop = broker.login("kota-gateway", client_id="gw-snoop")
    assert set(snoop.subscribe("$share/snoop/kota/v1/normalized/#")) <= {1, NOT_AUTHORIZED}
    assert set(snoop.subscribe("$share/snoop/kota/v1/+/+/+/cmd")) <= {1, NOT_AUTHORIZED}
    bkk, han = broker.login("bkk-pms-01"), broker.login("han-pms-01")
    sent = []
    for i in range(20):
        for client, topic in (
            (bkk, up(BKK, SITE, "bkk-pms-01")),
            (han, up(HAN, HAN_SITE, "han-pms-01")),
        ):
            payload = f"{topic}#{i}".encode()
            assert client.publish(topic, payload) in ACCEPTED
            sent.append(payload)
    received = lambda: [p for w in workers for _, p in w.messages]  # noqa: E731
    assert wait_for(lambda: len(received()) >= len(sent))
    assert sorted(received()) == sorted(sent)  # each message exactly once over the group
    assert all(w.messages for w in workers)  # and spread over both workers
    # the gateway publishes normalised readings, nothing else
    assert workers[0].publish("kota/v1/normalized/THBKK", b"{}") in ACCEPTED
    assert workers[0].publish(up(BKK, SITE, "bkk-pms-01"), b"forged") == NOT_AUTHORIZED
    assert workers[0].publish(f"kota/v1/{BKK}/{SITE}/bkk-pms-01/cmd", b"cmd") == NOT_AUTHORIZED
    ingest = broker.login("kota-ingest")
    assert ingest.subscribe("kota/v1/normalized/#") == [1]
    assert workers[1].publish("kota/v1/normalized/VNHAN", b"{}") in ACCEPTED
    assert wait_for(lambda: len(ingest.messages) == 1)
    assert snoop.messages == []


def test_revoked_login_is_refused_after_reload(broker: SecureBroker) -> None:
    """Device theft: drop the stolen login from the ACL and password file, SIGHUP, it is out."""
    stolen = broker.login("bkk-pms-02", client_id="stolen")
    assert stolen.publish(up(BKK, SITE, "bkk-pms-02"), b"before") in ACCEPTED
    # 1. a regenerated ACL takes effect on the open connection at once
    broker.acl_path.write_text(
        render_acl([a for a in ACCOUNTS if a.username != "bkk-pms-02"], SERVICES)
    )
    broker.reload()
    assert stolen.client.is_connected()
    assert stolen.publish(up(BKK, SITE, "bkk-pms-02"), b"after") == NOT_AUTHORIZED
    # 2. a regenerated password file disconnects it and refuses the next login
    passwords = {u: p for u, p in broker.passwords.items() if u != "bkk-pms-02"}
    broker.passwd_path.write_text(
        render_passwd({u: hash_password(p) for u, p in passwords.items()})
    )
    broker.reload()
    assert wait_for(lambda: not stolen.client.is_connected())
    again = connect(broker.port, "bkk-pms-02", broker.passwords["bkk-pms-02"], client_id="again")
    assert not again.ok
    assert broker.login("bkk-pms-01").publish(up(BKK, SITE, "bkk-pms-01"), b"x") in ACCEPTED
