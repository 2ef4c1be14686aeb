"""PMS5003 parser and driver: hand-computed vectors, resync, splits, fuzzing, real ptys."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from edge.drivers.base import AgentContext
from edge.drivers.metrics import driver_metrics
from edge.drivers.pms5003 import (
    CMD_ACTIVE,
    CMD_PASSIVE,
    CMD_READ_NOW,
    CMD_SLEEP_NOW,
    CMD_WAKE,
    FIELDS,
    Pms5003Driver,
    Pms5003Parser,
    parse,
)
from edge.drivers.pms5003 import SPEC as PMS_SPEC
from edge.drivers.testing import CollectingSink, running
from firmware_sim.base import demo_source
from firmware_sim.devices.pms5003 import PMS5003
from firmware_sim.faults import FaultInjector
from firmware_sim.transport import PtyBus
from gateway.schema import QualityFlag
from kota_cli.errors import ConfigError

# CF=1 10/20/30, atmospheric 11/21/31, counts 1000/500/100/20/5/1, reserved 97 00.
# checksum = sum of bytes 0..29 = 0x041B (computed by hand: 0x42+0x4D+0x1C+... ).
FRAME = bytes.fromhex(
    "42 4d 00 1c 00 0a 00 14 00 1e 00 0b 00 15 00 1f"
    " 03 e8 01 f4 00 64 00 14 00 05 00 01 97 00 04 1b"
)
VALUES = {
    "pm1_cf1": 10.0,
    "pm2_5_cf1": 20.0,
    "pm10_cf1": 30.0,
    "pm1": 11.0,
    "pm2_5": 21.0,
    "pm10": 31.0,
    "particles_0_3": 1000.0,
    "particles_0_5": 500.0,
    "particles_1_0": 100.0,
    "particles_2_5": 20.0,
    "particles_5_0": 5.0,
    "particles_10": 1.0,
}
ACK_PASSIVE = bytes.fromhex("42 4d 00 04 e1 00 01 74")
CTX = AgentContext("pi-test", "THBKK", "bkk-test")


def test_commands_match_the_datasheet() -> None:
    assert bytes.fromhex("42 4D E1 00 00 01 70") == CMD_PASSIVE
    assert bytes.fromhex("42 4D E1 00 01 01 71") == CMD_ACTIVE
    assert bytes.fromhex("42 4D E2 00 00 01 71") == CMD_READ_NOW
    assert bytes.fromhex("42 4D E4 00 00 01 73") == CMD_SLEEP_NOW
    assert bytes.fromhex("42 4D E4 00 01 01 74") == CMD_WAKE


def test_hand_computed_frame() -> None:
    frames, rejects = parse(FRAME)
    assert rejects == {}
    assert len(frames) == 1
    assert frames[0].values == VALUES
    assert frames[0].offset == 0
    assert frames[0].meta["reserved"] == 0x9700
    assert list(frames[0].values) == list(FIELDS)


def test_ack_frames_are_not_rejected() -> None:
    frames, rejects = parse(ACK_PASSIVE + FRAME)
    assert rejects == {}
    assert [f.kind for f in frames] == ["ack", "data"]
    assert frames[0].meta == {"command": 0xE1, "data": 0x00}
    assert frames[1].offset == 8


def test_garbage_before_and_between_frames() -> None:
    stream = b"\x00\xff\x13" + FRAME + b"\x42\x42\x01" + FRAME + b"junk"
    frames, rejects = parse(stream)
    assert [f.values for f in frames] == [VALUES, VALUES]
    assert [f.offset for f in frames] == [3, 3 + 32 + 3]
    assert rejects == {"garbage": 3}


def test_bad_checksum_is_rejected_never_emitted() -> None:
    bad = bytearray(FRAME)
    bad[-1] ^= 0x01
    frames, rejects = parse(bytes(bad) + FRAME)
    assert [f.offset for f in frames] == [32]
    assert rejects == {"bad_checksum": 1}
    # a changed data byte is caught by the sum too
    bad = bytearray(FRAME)
    bad[11] ^= 0x40
    frames, rejects = parse(bytes(bad))
    assert frames == [] and rejects == {"bad_checksum": 1}


def test_bad_length_and_truncated() -> None:
    bad_len = bytearray(FRAME)
    bad_len[3] = 0x14  # length 20 (a PMS1003 or noise)
    frames, rejects = parse(bytes(bad_len) + FRAME)
    assert len(frames) == 1 and rejects == {"bad_length": 1}
    # a frame cut short by a new header: rejected as truncated, the next frame decoded
    frames, rejects = parse(FRAME[:20] + FRAME)
    assert [f.offset for f in frames] == [20] and rejects == {"truncated": 1}
    # the stream ends mid-frame
    frames, rejects = parse(FRAME + FRAME[:10])
    assert len(frames) == 1 and rejects == {"truncated": 1}


def _stream() -> bytes:
    bad = bytearray(FRAME)
    bad[30] ^= 0xFF
    return b"\x01\x02" + FRAME + ACK_PASSIVE + bytes(bad) + b"\x42" + FRAME[:9] + FRAME + FRAME


def _decode_in_pieces(stream: bytes, cuts: list[int]) -> tuple[list, dict]:
    p = Pms5003Parser()
    frames = []
    last = 0
    for cut in [*cuts, len(stream)]:
        frames += p.feed(stream[last:cut])
        last = cut
    p.flush()
    return [(f.offset, f.kind, f.values) for f in frames], dict(p.rejects)


def test_split_at_every_byte_boundary() -> None:
    stream = _stream()
    whole = _decode_in_pieces(stream, [])
    assert len([k for _, k, _ in whole[0] if k == "data"]) == 3
    assert whole[1] == {"garbage": 2, "bad_checksum": 1, "truncated": 1}
    for i in range(1, len(stream)):
        assert _decode_in_pieces(stream, [i]) == whole, i
    assert _decode_in_pieces(stream, list(range(1, len(stream)))) == whole


def _valid(stream: bytes, offset: int) -> bool:
    f = stream[offset : offset + 32]
    return len(f) == 32 and sum(f[:30]) & 0xFFFF == struct.unpack(">H", f[30:])[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
def test_random_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    frames, _ = _decode_in_pieces(data, sorted(c for c in cuts if c < len(data)))
    for offset, kind, _values in frames:
        if kind == "data":
            assert _valid(data, offset)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 32 * 3 - 1), st.integers(1, 255)), max_size=6),
    st.binary(max_size=20),
)
def test_mutated_frames_never_emit_a_bad_checksum(flips: list, prefix: bytes) -> None:
    data = bytearray(prefix + FRAME * 3)
    for pos, xor in flips:
        data[len(prefix) + pos] ^= xor
    stream = bytes(data)
    frames, _ = parse(stream)
    for f in frames:
        if f.kind == "data":
            assert _valid(stream, f.offset)
            raw = struct.unpack(">13H", stream[f.offset + 4 : f.offset + 30])
            assert list(f.values.values()) == [float(w) for w in raw[:12]]


def test_clock_suspect_when_the_clock_is_unset() -> None:
    metrics = driver_metrics(CollectorRegistry())
    ctx = AgentContext("pi", "THBKK", "s", clock=lambda: 1000.0)  # 1970: no RTC, no NTP yet
    drv = Pms5003Driver("pm-x", ctx, port="/nonexistent", interval=0, metrics=metrics)
    sink = CollectingSink()
    for frame in parse(FRAME)[0]:
        drv.on_frame(frame, sink)
    samples = sink.batches[0][1]
    assert all(s.flags == QualityFlag.CLOCK_SUSPECT for s in samples)
    assert samples[0].observed_us == 1_000_000_000
    ctx = AgentContext("pi", "THBKK", "s", clock=lambda: 1_763_794_800.123456)
    drv = Pms5003Driver("pm-y", ctx, port="/nonexistent", interval=0, metrics=metrics)
    for frame in parse(FRAME)[0]:
        drv.on_frame(frame, sink)
    assert {s.flags for s in sink.batches[1][1]} == {0}
    assert sink.batches[1][1][0].observed_us == 1_763_794_800_123_456
    units = {s.quantity: s.unit for s in samples}
    assert units["pm2_5"] == "ug/m3" and units["particles_0_3"] == "/dL"


def test_build_validates_config() -> None:
    build = PMS_SPEC.build
    drv = build({"kind": "pms5003", "device_id": "pm-1", "port": "/dev/x"}, CTX)
    assert drv.device_id == "pm-1" and drv.kind == "pms5003"
    cases = [
        ({"device_id": "pm-1"}, "port: is required"),
        ({"device_id": "pm 1", "port": "/x"}, "device_id:"),
        ({"device_id": "pm-1", "port": "/x", "mode": "lazy"}, "mode: must be one of"),
        ({"device_id": "pm-1", "port": "/x", "intervall": 5}, "intervall: unknown option"),
        ({"device_id": "pm-1", "port": "/x", "duty_cycle": True, "interval": 10}, "interval:"),
        ({"device_id": "pm-1", "port": "/x", "interval": "60"}, "interval: must be a number"),
    ]
    for table, message in cases:
        with pytest.raises(ConfigError, match=message):
            build({"kind": "pms5003", **table}, CTX)


# -- real ptys ------------------------------------------------------------------------------


def _expected(dev: PMS5003) -> list[dict[str, float]]:
    out = []
    for f in dev.sent_log:
        if f.frame_type == "data" and not f.corrupted:
            out += [dict(f.values)] * (2 if "duplicate" in f.faults else 1)
    return out


def test_pty_active_mode_with_fault_injection() -> None:
    faults = FaultInjector(
        {
            "bad_checksum": 0.1,
            "truncated": 0.05,
            "garbled": 0.1,
            "dropped": 0.05,
            "garbage": 0.2,
            "duplicate": 0.1,
        },
        seed=7,
    )
    dev = PMS5003(demo_source, "pm-a", interval_s=0.01, faults=faults)
    metrics = driver_metrics(CollectorRegistry())
    with PtyBus([dev]) as bus:
        drv = Pms5003Driver("pm-a", CTX, port=bus.path, interval=0, metrics=metrics)
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 60, timeout=10)
            dev.asleep = True  # the simulated sensor stops sending
            time.sleep(0.1)
            want = _expected(dev)
            assert sink.wait_for(lambda: len(sink.batches) >= len(want), timeout=5)
            time.sleep(0.1)
    corrupted = [f for f in dev.sent_log if f.corrupted]
    assert corrupted, "the fault injector should have corrupted some frames"
    got = sink.values("pm-a")
    # ack frames of the mode command are in the log but carry no values
    assert got == want
    health = drv.health()
    rejected = health["rejected"]
    assert isinstance(rejected, dict)
    # every corrupted frame is rejected (the last one may still wait for more bytes)
    hard = sum(v for k, v in rejected.items() if k != "garbage")
    assert len(corrupted) - 1 <= hard + rejected.get("garbage", 0)
    assert health["readings"] == 12 * len(want)
    value = metrics.registry.get_sample_value(
        "kota_edge_readings_total", {"driver": "pms5003", "device": "pm-a"}
    )
    assert value == 12 * len(want)


def test_pty_passive_mode_polls_at_the_interval() -> None:
    dev = PMS5003(demo_source, "pm-p", mode="passive")
    with PtyBus([dev]) as bus:
        drv = Pms5003Driver(
            "pm-p",
            CTX,
            port=bus.path,
            mode="passive",
            interval=0.05,
            metrics=driver_metrics(CollectorRegistry()),
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 5, timeout=5)
        time.sleep(0.05)
    data = [f for f in dev.sent_log if f.frame_type == "data"]
    got = sink.values()
    assert got == [dict(f.values) for f in data][: len(got)]
    assert len(got) >= len(data) - 1


def test_pty_duty_cycle_wakes_reads_and_sleeps() -> None:
    dev = PMS5003(demo_source, "pm-d", interval_s=0.02)
    with PtyBus([dev]) as bus:
        drv = Pms5003Driver(
            "pm-d",
            CTX,
            port=bus.path,
            duty_cycle=True,
            interval=0.4,
            warmup=0.1,
            metrics=driver_metrics(CollectorRegistry()),
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 2, timeout=5)
            time.sleep(0.15)
            assert dev.asleep  # put back to sleep after the reading
    acks = [f for f in dev.sent_log if f.frame_type == "ack"]
    assert len(acks) >= 2  # mode ack + sleep acks
    assert drv.health()["frames_ok"] > len(sink.batches)  # warm-up frames were discarded


def test_pty_unplugged_and_replugged() -> None:
    dev = PMS5003(demo_source, "pm-r", interval_s=0.02)
    metrics = driver_metrics(CollectorRegistry())
    with PtyBus([dev]) as bus:
        drv = Pms5003Driver(
            "pm-r", CTX, port=bus.path, interval=0, metrics=metrics, reopen_max_delay=0.5
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 3, timeout=5)
            bus.close()  # USB cable pulled
            time.sleep(0.8)
            assert drv.health()["state"] == "reopening"
            before = len(sink.batches)
            bus.reopen()  # plugged back: a new pty behind the same by-id path
            assert sink.wait_for(lambda: len(sink.batches) >= before + 3, timeout=5)
            assert drv.health()["state"] == "ok"
    assert drv.health()["reopens"] >= 1
    assert (
        metrics.registry.get_sample_value("kota_edge_port_reopens_total", {"device": "pm-r"}) >= 1
    )
