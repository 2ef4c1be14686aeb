"""Seeded fault injection: the sent_log says exactly which frames a decoder must reject."""

from __future__ import annotations

import struct

import pytest

from firmware_sim.base import demo_source
from firmware_sim.devices import PMS5003, SDS011, ModbusSlave, TrafficCounter, modbus
from firmware_sim.faults import FaultInjector

ALL = "bad_checksum=0.1,truncated=0.1,garbled=0.1,dropped=0.1,garbage=0.15,duplicate=0.1"


# independent validators (not the encoders)
def pms_ok(f: bytes) -> bool:
    return (
        len(f) == 32
        and f[:4] == b"\x42\x4d\x00\x1c"
        and sum(f[:30]) & 0xFFFF == struct.unpack(">H", f[30:])[0]
    )


def sds_ok(f: bytes) -> bool:
    return len(f) == 10 and f[:2] == b"\xaa\xc0" and f[9] == 0xAB and sum(f[2:8]) & 0xFF == f[8]


def nmea_ok(f: bytes) -> bool:
    if not (f.startswith(b"$") and f.endswith(b"\r\n")) or f.count(b"*") != 1:
        return False
    body, _, cs = f[1:-2].partition(b"*")
    x = 0
    for c in body:
        x ^= c
    return cs == f"{x:02X}".encode() and body.count(b",") == 11


def modbus_ok(f: bytes) -> bool:
    return len(f) >= 5 and len(f) == 5 + f[2] and modbus.crc16(f[:-2]) == f[-2:]


def strip(frame_data: bytes, faults: tuple[str, ...], sync: int) -> bytes:
    """The frame itself: without the duplicate copy and the leading garbage."""
    data = frame_data
    if "duplicate" in faults:
        data = data[: len(data) // 2]
    if "garbage" in faults:
        data = data[data.index(sync) :] if sync >= 0 else data
    return data


def run_device(dev, n: int, step: float) -> None:
    t = 1_735_689_600.0
    while len(dev.sent_log) < n:
        dev.emit(t)
        t += step


@pytest.mark.parametrize(
    ("make", "ok", "sync", "step"),
    [
        (lambda f: PMS5003(demo_source, "pm", faults=f), pms_ok, 0x42, 1.0),
        (lambda f: SDS011(demo_source, "sds", faults=f), sds_ok, 0xAA, 1.0),
        (lambda f: TrafficCounter(demo_source, "t", faults=f, lanes=3), nmea_ok, ord("$"), 60.0),
    ],
)
def test_sent_log_marks_exactly_the_corrupted_frames(make, ok, sync, step):
    dev = make(FaultInjector.from_spec(ALL, seed=7))
    run_device(dev, 600, step)
    kinds: dict[str, int] = {}
    for f in dev.sent_log:
        for k in f.faults:
            kinds[k] = kinds.get(k, 0) + 1
        assert ok(strip(f.data, f.faults, sync)) is not f.corrupted, (f.faults, f.data)
    # every kind happened, at about its rate
    for kind, rate in [("bad_checksum", 0.1), ("garbage", 0.15), ("duplicate", 0.1)]:
        assert 0.5 * rate * 600 < kinds[kind] < 1.6 * rate * 600
    assert {"truncated", "garbled", "dropped"} <= kinds.keys()
    assert sum(f.corrupted for f in dev.sent_log) == sum(
        kinds.get(k, 0) for k in ("bad_checksum", "truncated", "garbled", "dropped")
    )


def test_modbus_reply_faults():
    spec = "bad_checksum=0.1,truncated=0.1,garbled=0.1,dropped=0.1,duplicate=0.1"
    dev = ModbusSlave(demo_source, model="sdm120", faults=FaultInjector.from_spec(spec, seed=3))
    t = 1_735_689_600.0
    for i in range(300):
        dev.receive(modbus.read_request(1, 0x0048, 2), t + i)
        dev.emit(t + i)
    assert len(dev.sent_log) == 300
    assert 60 < sum(f.corrupted for f in dev.sent_log) < 180
    for f in dev.sent_log:
        assert modbus_ok(strip(f.data, f.faults, -1)) is not f.corrupted, f


def test_stream_decoder_recovers_every_good_frame():
    """A resynchronising decoder over the whole byte stream loses only the corrupted frames."""
    dev = PMS5003(demo_source, "pm", faults=FaultInjector.from_spec(ALL, seed=11))
    run_device(dev, 500, 1.0)
    stream = b"".join(f.data for f in dev.sent_log)
    good = 0
    i = 0
    while (i := stream.find(b"\x42\x4d", i)) >= 0:
        if pms_ok(stream[i : i + 32]):
            good += 1
            i += 32
        else:
            i += 1
    expected = sum((2 if "duplicate" in f.faults else 1) for f in dev.sent_log if not f.corrupted)
    assert good == expected


def test_same_seed_same_faults():
    a = PMS5003(demo_source, "a", faults=FaultInjector.from_spec(ALL, seed=5))
    b = PMS5003(demo_source, "b", faults=FaultInjector.from_spec(ALL, seed=5))
    run_device(a, 100, 1.0)
    run_device(b, 100, 1.0)
    assert [f.data for f in a.sent_log] == [f.data for f in b.sent_log]
    assert [f.faults for f in a.sent_log] == [f.faults for f in b.sent_log]


def test_no_faults_means_clean_frames():
    dev = PMS5003(demo_source, "pm", faults=FaultInjector({}, seed=1))
    run_device(dev, 50, 1.0)
    assert all(not f.faults and pms_ok(f.data) for f in dev.sent_log)


@pytest.mark.parametrize(
    "spec",
    ["nope=0.1", "bad_checksum", "bad_checksum=x", "garbage=1.5", "truncated=0.6,dropped=0.6"],
)
def test_bad_specs(spec):
    with pytest.raises(ValueError):
        FaultInjector.from_spec(spec)
