"""Scenario 5: a serial device vanishes and returns (firmware_sim PMS5003 on a real pty, read
by the real pms5003 driver inside an edge agent process; PtyBus.close() = unplug,
reopen() = plug back on the same stable path).

Produced = the data frames the simulator put on the wire while plugged (its `sent_log`; each
frame carries a unique counter value in PM2.5). Two kinds of frame can honestly be lost and
are counted from the simulator's log, not guessed:

* ``at_open``: sent after a plug-in but before the edge had opened the port (its open
  command was acknowledged): pyserial flushes the input queue when it opens a port;
* ``at_unplug``: the last frames whose bytes were still unread in the pty when it vanished.

Every other ("steady") frame must be stored exactly once with all its 12 quantities.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from harness import (
    CounterSource,
    Database,
    PlugSession,
    Stack,
    classify_frames,
    unplug,
    wait_until,
)

from edge.drivers.pms5003 import FIELDS
from firmware_sim.devices.pms5003 import PMS5003
from firmware_sim.transport import PtyBus
from kota_cli.servers import MosquittoServer

DEVICES = ("flt-pms-0", "flt-pms-1")
FRAME_S = 0.1


def test_serial_device_vanishes_and_returns(
    tmp_path: Path, pg_url: str, mosquitto: MosquittoServer
) -> None:
    stack = Stack(tmp_path, Database(pg_url), mosquitto)
    sims = {d: PMS5003(CounterSource(0), d, interval_s=FRAME_S) for d in DEVICES}
    sessions: dict[str, list[PlugSession]] = {d: [] for d in DEVICES}
    buses: dict[str, PtyBus] = {}
    try:
        for d in DEVICES:
            sessions[d].append(PlugSession(time.time()))
            buses[d] = PtyBus([sims[d]])
        stack.db.prepare([(d, "pms5003") for d in DEVICES])
        stack.start_gateway()
        devices_toml = "".join(
            f"""
[[devices]]
kind = "pms5003"
device_id = "{d}"
port = "{buses[d].path}"
interval = 0
reopen_max_delay = 1.0
"""
            for d in DEVICES
        )
        agent = stack.agent(devices_toml)
        agent.start()

        def acks(d: str) -> int:
            return sum(1 for f in list(sims[d].sent_log) if f.frame_type == "ack")

        def stored_frames(d: str) -> int:
            return stack.db.count([d]) // len(FIELDS)

        for d in DEVICES:
            wait_until(lambda d=d: acks(d) >= 1, 30, f"{d}: the edge to open its port")
        victim = buses[DEVICES[0]]
        reopens = f'kota_edge_port_reopens_total{{device="{DEVICES[0]}"}}'
        for cycle in range(2):
            wait_until(
                lambda cycle=cycle: stored_frames(DEVICES[0]) >= 5 + 10 * cycle, 30, "frames"
            )
            opened = acks(DEVICES[0])
            tries = agent.metric(reopens)
            unplug(victim, sessions[DEVICES[0]][-1])
            # the driver notices and keeps trying to reopen a port that is not there
            wait_until(lambda tries=tries: agent.metric(reopens) >= tries + 2, 30, "reopen tries")
            sessions[DEVICES[0]].append(PlugSession(time.time()))
            victim.reopen()  # plugged back: a new pty behind the same path
            wait_until(lambda opened=opened: acks(DEVICES[0]) > opened, 30, "the edge to reopen")
        wait_until(lambda: stored_frames(DEVICES[0]) >= 35, 30, "frames after the last return")
        for d in DEVICES:
            unplug(buses[d], sessions[d][-1])  # end of the run: nothing is sent any more
        assert agent.stop() == 0, agent.log()  # drains the outbox
        stack.probe()  # barrier: the gateway has written everything sent before the probe
        assert stack.gateway is not None and stack.gateway.stop() == 0

        lines = []
        for d in DEVICES:
            classes, n_acks = classify_frames(list(sims[d].sent_log), sessions[d])
            rows = stack.db.rows([d])
            per_time = Counter(t for _, _, t, _ in rows)
            assert set(per_time.values()) == {len(FIELDS)}, f"{d}: incomplete frames stored"
            values = Counter(int(v) for _, q, _, v in rows if q == "pm2_5")
            duplicates = sum(n - 1 for n in values.values())
            unexpected = set(values) - set(classes)
            lost = {c: 0 for c in ("steady", "at_open", "at_unplug")}
            for value, cls in classes.items():
                if value not in values:
                    lost[cls] += 1
            at_risk = Counter(classes.values())
            line = (
                f"FAULT serial_vanish {d}: produced={len(classes)} frames "
                f"({len(classes) * len(FIELDS)} readings) stored={len(values)} frames "
                f"dropped_reported=0 lost={lost['steady']} duplicates={duplicates} "
                f"unexpected={len(unexpected)} unplugs={len(sessions[d])} opens={n_acks} "
                f"lost_at_open={lost['at_open']}/{at_risk['at_open']} "
                f"lost_at_unplug={lost['at_unplug']}/{at_risk['at_unplug']} "
                f"unread_bytes_at_unplug="
                f"{','.join(str(s.unread_at_unplug) for s in sessions[d])}"
            )
            print("\n" + line, flush=True)
            lines.append(line)
            assert lost["steady"] == 0 and duplicates == 0 and not unexpected, line
            assert len(values) == len(classes) - lost["at_open"] - lost["at_unplug"], line
    finally:
        stack.close()
        for bus in buses.values():
            bus.shutdown()
