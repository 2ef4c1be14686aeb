"""Fault scenarios on the whole pipeline: edge agent process -> Mosquitto -> `kota gateway run`
-> PostgreSQL, with KNOWN readings (fault_driver.CountingDriver). After recovery the database
must hold exactly what the edge produced, minus only the drops the outbox reported.

Each scenario prints one `FAULT ...` line with its counts (``pytest -s`` shows them).
See docs/reliability.md, "Fault suite".
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    CountingFleet,
    Database,
    EdgeAgent,
    HeartbeatWatcher,
    Stack,
    compare,
    missing_ranges,
    wait_until,
)

from kota_cli.servers import MosquittoServer, PostgresServer

DRAIN_S = 60.0  # bound on "after recovery, everything arrives" (typically a few seconds)
# Every scenario runs the gateway as deployed: `kota gateway run` on its default MQTT v5
# shared subscription. Mosquitto (2.0.11 here) does not restore SHARED subscriptions from its
# persistence file, so right after a broker restart an uplink can find no subscriber; the
# broker then answers PUBACK 0x10 "No matching subscribers" and the edge keeps those readings
# in its outbox until the gateway is back (test_shared_subscription_survives_broker_restart).


@pytest.fixture
def stack(tmp_path: Path, pg_url: str, mosquitto: MosquittoServer) -> Iterator[Stack]:
    s = Stack(tmp_path, Database(pg_url), mosquitto)
    yield s
    s.close()


def run_fleet(
    stack: Stack, fleet: CountingFleet, group: str | None = None, **agent_kwargs: object
) -> EdgeAgent:
    stack.db.prepare(fleet.registry())
    stack.start_gateway(group=group)
    agent = stack.agent(fleet.toml(), **agent_kwargs)  # type: ignore[arg-type]
    agent.start()
    return agent


def at_progress(fleet: CountingFleet, fraction: float, timeout: float = 60.0) -> None:
    """Wait until `fraction` of all hand-offs were produced (the fault then hits mid-run)."""
    target = int(fleet.handoffs() * fraction)
    wait_until(lambda: fleet.progress() >= target, timeout, f"{fraction:.0%} of the hand-offs")


def finish(stack: Stack, fleet: CountingFleet, agent: EdgeAgent) -> None:
    """Wait for every reading to be stored, then stop agent and gateway cleanly."""
    wait_until(fleet.done, DRAIN_S, "the devices to produce everything")
    try:
        stack.db.wait_count(fleet.devices, fleet.readings(), DRAIN_S)
    except AssertionError as err:
        gateway = stack.gateway.log() if stack.gateway else ""
        detail = missing_ranges(fleet.expected(), stack.db.rows(fleet.devices))
        raise AssertionError(
            f"{err}\n{detail}\n--- agent log\n{agent.log()}\n--- gateway log\n{gateway}"
        ) from None
    assert agent.stop() == 0, agent.log()
    assert stack.gateway is not None
    assert stack.gateway.stop() == 0, stack.gateway.log()


def uplink_connected(agent: EdgeAgent) -> float:
    return agent.metric("kota_edge_uplink_connected", -1.0)


# --------------------------------------------------------------------------- 1. broker restart


def test_broker_restart_mid_run(stack: Stack) -> None:
    fleet = CountingFleet(stack.workdir, n=3, count=1500, rate_hz=50, per_handoff=5)
    agent = run_fleet(stack, fleet)
    broker = stack.broker
    at_progress(fleet, 0.3)
    before = fleet.progress()
    broker.stop()  # SIGTERM: persistence saved (the gateway's session and its queue)
    wait_until(lambda: uplink_connected(agent) == 0, 30, "the agent to notice the broker gone")
    wait_until(lambda: fleet.progress() >= before + 20, 30, "production while the broker is down")
    during = fleet.progress() - before
    broker.start()  # same port
    wait_until(lambda: uplink_connected(agent) == 1, 30, "the agent to reconnect")
    finish(stack, fleet, agent)
    counts = compare("broker_restart", fleet.expected(), stack.db.rows(fleet.devices))
    counts.extra["handoffs_during_outage"] = during
    counts.print()
    counts.assert_exact()


# --------------------------------------------------------------------------- 2. database restart


def test_database_restart_and_crash_mid_run(
    tmp_path: Path, pg_private: PostgresServer, mosquitto: MosquittoServer
) -> None:
    stack = Stack(tmp_path, Database(pg_private.create_database("faults")), mosquitto)
    try:
        fleet = CountingFleet(stack.workdir, n=3, count=1500, rate_hz=50, per_handoff=5)
        agent = run_fleet(stack, fleet)
        outages = []
        for fraction, mode in ((0.25, "fast"), (0.6, "immediate")):
            at_progress(fleet, fraction)
            before = fleet.progress()
            pg_private.stop(mode)  # "immediate" = crash: recovery from WAL on start
            wait_until(
                lambda before=before: fleet.progress() >= before + 20,
                30,
                "production while the database is down",
            )
            pg_private.start()  # same port
            outages.append(f"{mode}:{fleet.progress() - before}")
        finish(stack, fleet, agent)
        counts = compare("database_restart", fleet.expected(), stack.db.rows(fleet.devices))
        counts.extra["outages"] = ",".join(outages)
        counts.print()
        counts.assert_exact()
        assert not stack.db.dead_letters(fleet.devices)
    finally:
        stack.close()


# --------------------------------------------------------------------------- 3. gateway SIGKILL


def test_gateway_sigkill_at_random_moments(stack: Stack) -> None:
    rng = random.Random(20260)
    fleet = CountingFleet(stack.workdir, n=3, count=1500, rate_hz=50, per_handoff=5)
    agent = run_fleet(stack, fleet)
    gateway = stack.gateway
    assert gateway is not None
    at_progress(fleet, 0.15)
    for _ in range(3):
        # a random moment of the gateway's life: a batch may be half-normalised, half-written
        # or committed but not yet acknowledged
        time.sleep(rng.uniform(0.1, 1.5))
        gateway.kill()
        gateway.start()  # same --client-id: the persistent session gets the redeliveries
    finish(stack, fleet, agent)
    counts = compare("gateway_sigkill", fleet.expected(), stack.db.rows(fleet.devices))
    counts.extra["kills"] = gateway.kills
    counts.print()
    counts.assert_exact()


# --------------------------------------------------------------------------- 4. edge SIGKILL


def test_edge_agent_sigkill_and_restart(stack: Stack) -> None:
    rng = random.Random(4242)
    fleet = CountingFleet(stack.workdir, n=3, count=1500, rate_hz=50, per_handoff=5)
    agent = run_fleet(stack, fleet)
    waiting = []
    for fraction in (0.2, 0.55):
        at_progress(fleet, fraction + rng.uniform(0, 0.1))
        time.sleep(rng.uniform(0, 0.3))  # a random moment, not a hand-off boundary
        agent.kill()
        waiting.append(agent.outbox_rows())  # un-acknowledged rows the restart must re-send
        agent.start()  # same config, same outbox file
    finish(stack, fleet, agent)
    counts = compare("edge_sigkill", fleet.expected(), stack.db.rows(fleet.devices))
    counts.extra["kills"] = agent.kills
    counts.extra["outbox_rows_at_kill"] = ",".join(map(str, waiting))
    counts.print()
    counts.assert_exact()


# --------------------------------------------------------------------------- 6. long uplink outage


def test_uplink_down_for_a_long_stretch(stack: Stack) -> None:
    fleet = CountingFleet(stack.workdir, n=3, count=7000, rate_hz=50, per_handoff=10)
    agent = run_fleet(stack, fleet)
    broker = stack.broker
    at_progress(fleet, 0.1)
    broker.stop()
    wait_until(lambda: uplink_connected(agent) == 0, 30, "the agent to notice the broker gone")
    depth_at_stop = agent.metric("kota_edge_outbox_depth")
    progress_at_stop = fleet.progress()
    max_depth = depth_at_stop
    outage_end = time.monotonic() + 10.0  # the outage itself is the fault, not a wait
    while time.monotonic() < outage_end:
        max_depth = max(max_depth, agent.metric("kota_edge_outbox_depth"))
        time.sleep(0.2)
    produced_in_outage = (fleet.progress() - progress_at_stop) * fleet.per_handoff * 2
    broker.start()
    # the outbox grew by what was produced meanwhile (nothing left it), then drains to zero
    assert produced_in_outage > 2000
    assert max_depth >= depth_at_stop + 0.9 * produced_in_outage, (max_depth, produced_in_outage)
    wait_until(fleet.done, DRAIN_S, "the devices to produce everything")
    wait_until(
        lambda: agent.metric("kota_edge_outbox_depth", -1) == 0, DRAIN_S, "the outbox to drain"
    )
    finish(stack, fleet, agent)
    counts = compare("uplink_down_10s", fleet.expected(), stack.db.rows(fleet.devices))
    counts.extra["outbox_depth_max"] = int(max_depth)
    counts.extra["produced_while_down"] = produced_in_outage
    counts.print()
    counts.assert_exact()


# --------------------------------------------------------------------------- 7. outbox bound


DROPPED_SIZE = 'kota_edge_outbox_dropped_total{reason="size"}'


def test_outbox_bound_drops_are_counted_reported_and_oldest_first(stack: Stack) -> None:
    # 3 devices x 300 hand-offs of 25 readings x 2 quantities (~1.9 KB a row): ~1.7 MiB
    # produced while the broker is down, into an outbox bounded at 1 MiB (the minimum).
    fleet = CountingFleet(stack.workdir, n=3, count=7500, rate_hz=100, per_handoff=25)
    stack.db.prepare(fleet.registry())
    stack.start_gateway()
    broker = stack.broker
    broker.stop()
    agent = stack.agent(fleet.toml(), max_bytes=1024 * 1024)
    agent.start()  # connects in the background; the broker is down from the start
    wait_until(fleet.done, 60, "the devices to produce everything")
    dropped_metric = int(agent.metric(DROPPED_SIZE))
    assert dropped_metric > 0, agent.metrics()
    assert agent.metric("kota_edge_outbox_bytes") <= 1024 * 1024
    assert "outbox full" in agent.log()  # the warning line
    watcher = HeartbeatWatcher
    broker.start()
    hb = watcher(broker)
    try:
        heartbeat = wait_until(
            lambda: hb.latest().get("outbox", {}).get("dropped"), 30, "a heartbeat"
        )
    finally:
        hb.close()
    wait_until(
        lambda: agent.metric("kota_edge_outbox_depth", -1) == 0, DRAIN_S, "the outbox to drain"
    )
    expected = fleet.expected()
    stored_target = len(expected) - dropped_metric
    stack.db.wait_count(fleet.devices, stored_target, DRAIN_S)
    assert agent.stop() == 0, agent.log()
    file_counters = agent.outbox_file_counters()
    assert stack.gateway is not None and stack.gateway.stop() == 0
    rows = stack.db.rows(fleet.devices)
    stored = {(d, q, t) for d, q, t, _ in rows}
    missing = set(expected) - stored
    counts = compare(
        "outbox_bound",
        expected,
        rows,
        dropped=missing,
        dropped_reported=dropped_metric,
    )
    # reported everywhere, and the same number: metric, heartbeat, persisted counter
    assert heartbeat["size"] == dropped_metric
    assert file_counters["dropped_readings.size"] == dropped_metric
    # what is missing is exactly what was reported dropped ...
    assert len(missing) == dropped_metric
    # ... and it is the OLDEST: per device a prefix 0..k-1 of the readings, whole hand-offs
    first_kept: dict[str, int] = {}
    for device in fleet.devices:
        lost_n = sorted({int(expected[k]) for k in missing if k[0] == device})
        assert lost_n == list(range(len(lost_n))), f"{device}: dropped are not the oldest"
        assert len(lost_n) % fleet.per_handoff == 0
        first_kept[device] = len(lost_n)
    counts.extra["first_kept_n"] = ",".join(str(first_kept[d]) for d in fleet.devices)
    counts.extra["dropped_rows"] = file_counters.get("dropped_rows.size", 0)
    counts.extra["heartbeat_dropped"] = heartbeat["size"]
    counts.print()
    counts.assert_exact()
    assert re.search(r"dropped \d+ oldest readings", agent.log())


# --------------------------------------------------------------------------- the broker hazard


def test_shared_subscription_survives_broker_restart(stack: Stack) -> None:
    """The deployed set-up (default shared-subscription group) across a broker restart while
    the gateway is down: Mosquitto 2.0.11 restores the gateway's session but not its
    `$share/...` subscription, so the edge's uplinks find no subscriber. The broker says so
    (PUBACK 0x10 "No matching subscribers"); the edge must keep those readings in its outbox
    and deliver them once the gateway has re-subscribed. Nothing may be lost."""
    fleet = CountingFleet(stack.workdir, n=1, count=400, rate_hz=200, per_handoff=20)
    stack.db.prepare(fleet.registry())
    gateway = stack.start_gateway()  # default group: $share/kota-gateway/kota/v1/+/+/+/up
    gateway.kill()  # offline; the broker keeps its persistent session
    stack.broker.stop()
    stack.broker.start()  # the session is back, its shared subscription is not
    agent = stack.agent(fleet.toml())
    agent.start()
    wait_until(fleet.done, DRAIN_S, "the device to produce everything while no gateway listens")
    assert stack.db.rows(fleet.devices) == []  # nothing could be consumed yet
    gateway.start()  # same --client-id: re-subscribes; the edge's held readings now flow
    finish(stack, fleet, agent)
    counts = compare(
        "shared_subscription_broker_restart", fleet.expected(), stack.db.rows(fleet.devices)
    )
    counts.print()
    counts.assert_exact()
