"""SDS011 parser and driver: datasheet vectors, replies, splits, fuzzing, real ptys."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from edge.drivers.base import AgentContext
from edge.drivers.metrics import driver_metrics
from edge.drivers.sds011 import SPEC, Sds011Driver, Sds011Parser, command, parse
from edge.drivers.testing import CollectingSink, running
from firmware_sim.base import demo_source
from firmware_sim.devices.sds011 import SDS011
from firmware_sim.faults import FaultInjector
from firmware_sim.transport import PtyBus
from kota_cli.errors import ConfigError

# Datasheet example: PM2.5 = (0x04 * 256 + 0xD4) / 10 = 123.6, PM10 = (0x0A * 256 + 0x3A) / 10
# = 261.8, id A1 60, CS = (D4 + 04 + 3A + 0A + A1 + 60) & 0xFF = 0x21D & 0xFF = 0x1D.
FRAME = bytes.fromhex("AA C0 D4 04 3A 0A A1 60 1D AB")
VALUES = {"pm2_5": 123.6, "pm10": 261.8}
# reply to "set query mode": AA C5 02 01 01 00 A1 60 CS AB, CS = 02+01+01+00+A1+60 = 0x105 -> 05
REPLY = bytes.fromhex("AA C5 02 01 01 00 A1 60 05 AB")
CTX = AgentContext("pi-test", "THBKK", "bkk-test")


def test_commands_match_known_vectors() -> None:
    # the airrohr firmware's sleep command
    assert command(6, bytes([1, 0])) == bytes.fromhex(
        "AA B4 06 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 05 AB"
    )
    assert command(4) == bytes.fromhex("AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB")


def test_datasheet_frame_and_reply() -> None:
    frames, rejects = parse(REPLY + FRAME)
    assert rejects == {}
    assert [f.kind for f in frames] == ["ack", "data"]
    assert frames[0].meta == {"command": 2, "data": [1, 1, 0], "sensor_id": "A160"}
    assert frames[1].values == VALUES and frames[1].offset == 10
    assert frames[1].meta["sensor_id"] == "A160"


def test_garbage_and_bad_frames() -> None:
    bad_cs = bytearray(FRAME)
    bad_cs[8] ^= 0x10
    bad_tail = bytearray(FRAME)
    bad_tail[9] = 0x00
    bad_type = bytearray(FRAME)
    bad_type[1] = 0xC1
    stream = (
        b"\x01\x02"
        + FRAME
        + bytes(bad_cs)
        + FRAME
        + bytes(bad_tail)
        + b"\x00" * 3
        + bytes(bad_type)
        + FRAME
        + FRAME[:4]
        + FRAME
        + FRAME[:6]
    )
    frames, rejects = parse(stream)
    assert [f.values for f in frames] == [VALUES] * 4
    assert rejects == {
        "garbage": 2,
        "bad_checksum": 1,
        "bad_tail": 1,
        "unknown_type": 1,
        "truncated": 2,
    }


def _decode_in_pieces(stream: bytes, cuts: list[int]) -> tuple[list, dict]:
    p = Sds011Parser()
    frames = []
    last = 0
    for cut in [*cuts, len(stream)]:
        frames += p.feed(stream[last:cut])
        last = cut
    p.flush()
    return [(f.offset, f.kind, f.values) for f in frames], dict(p.rejects)


def test_split_at_every_byte_boundary() -> None:
    bad = bytearray(FRAME)
    bad[3] ^= 0x01
    stream = b"\x07" + FRAME + REPLY + bytes(bad) + FRAME[:5] + FRAME + b"\x33" + FRAME
    whole = _decode_in_pieces(stream, [])
    assert len(whole[0]) == 4
    for i in range(1, len(stream)):
        assert _decode_in_pieces(stream, [i]) == whole, i
    assert _decode_in_pieces(stream, list(range(1, len(stream)))) == whole


def _valid(stream: bytes, offset: int) -> bool:
    f = stream[offset : offset + 10]
    return len(f) == 10 and f[0] == 0xAA and f[9] == 0xAB and sum(f[2:8]) & 0xFF == f[8]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_random_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    frames, _ = _decode_in_pieces(data, sorted(c for c in cuts if c < len(data)))
    for offset, _kind, _values in frames:
        assert _valid(data, offset)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 39), st.integers(1, 255)), max_size=6), st.binary(max_size=12)
)
def test_mutated_frames_never_emit_a_bad_checksum(flips: list, prefix: bytes) -> None:
    data = bytearray(prefix + FRAME * 4)
    for pos, xor in flips:
        data[len(prefix) + pos] ^= xor
    stream = bytes(data)
    for f in parse(stream)[0]:
        assert _valid(stream, f.offset)
        raw = stream[f.offset : f.offset + 10]
        if f.kind == "data":
            assert f.values == {
                "pm2_5": (raw[3] * 256 + raw[2]) / 10,
                "pm10": (raw[5] * 256 + raw[4]) / 10,
            }


def test_build_validates_config() -> None:
    drv = SPEC.build(
        {
            "kind": "sds011",
            "device_id": "sds-1",
            "port": "/dev/x",
            "mode": "query",
            "sensor_id": "a160",
            "working_period": 5,
        },
        CTX,
    )
    assert isinstance(drv, Sds011Driver) and drv.sensor_id == 0xA160
    for table, message in [
        ({"port": "/x", "sensor_id": "XYZ1"}, "sensor_id: must be 4 hex"),
        ({"port": "/x", "working_period": 31}, "working_period: must be <= 30"),
        ({"port": "/x", "mode": "passive"}, "mode: must be one of active, query"),
        (
            {"port": "/x", "duty_cycle": True, "interval": 300, "working_period": 5},
            "working_period: use either",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            SPEC.build({"kind": "sds011", "device_id": "sds-1", **table}, CTX)


# -- real ptys ------------------------------------------------------------------------------


def _expected(dev: SDS011) -> list[dict[str, float]]:
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
        seed=11,
    )
    dev = SDS011(demo_source, "sds-a", interval_s=0.01, faults=faults)
    with PtyBus([dev]) as bus:
        drv = Sds011Driver(
            "sds-a", CTX, port=bus.path, interval=0, metrics=driver_metrics(CollectorRegistry())
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 60, timeout=10)
            dev.asleep = True
            time.sleep(0.1)
            want = _expected(dev)
            assert sink.wait_for(lambda: len(sink.batches) >= len(want), timeout=5)
            time.sleep(0.1)
    assert any(f.corrupted for f in dev.sent_log)
    assert sink.values("sds-a") == want
    health = drv.health()
    assert health["readings"] == 2 * len(want)
    assert sum(health["rejected"].values()) > 0  # type: ignore[union-attr]


def test_pty_query_mode_sets_mode_and_queries() -> None:
    dev = SDS011(demo_source, "sds-q", interval_s=0.01)  # starts in active mode
    with PtyBus([dev]) as bus:
        drv = Sds011Driver(
            "sds-q",
            CTX,
            port=bus.path,
            mode="query",
            interval=0.05,
            metrics=driver_metrics(CollectorRegistry()),
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 5, timeout=5)
            assert dev.mode == "query"
    replies = [f for f in dev.sent_log if f.frame_type == "ack"]
    assert replies  # the mode change was acknowledged with AA C5 02 ...
    data = [dict(f.values) for f in dev.sent_log if f.frame_type == "data"]
    for got in sink.values():
        assert got in data


def test_pty_duty_cycle_sleeps_the_sensor() -> None:
    dev = SDS011(demo_source, "sds-d", interval_s=0.02)
    with PtyBus([dev]) as bus:
        drv = Sds011Driver(
            "sds-d",
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
            assert dev.asleep


def test_pty_unplugged_and_replugged() -> None:
    dev = SDS011(demo_source, "sds-r", interval_s=0.02)
    with PtyBus([dev]) as bus:
        drv = Sds011Driver(
            "sds-r",
            CTX,
            port=bus.path,
            interval=0,
            reopen_max_delay=0.5,
            metrics=driver_metrics(CollectorRegistry()),
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 3, timeout=5)
            bus.close()
            time.sleep(0.6)
            before = len(sink.batches)
            bus.reopen()
            assert sink.wait_for(lambda: len(sink.batches) >= before + 3, timeout=5)
    assert drv.health()["reopens"] >= 1  # type: ignore[operator]
