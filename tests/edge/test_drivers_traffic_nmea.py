"""Traffic counter sentences: worked example, rejects, splits, fuzzing, lane devices, ptys."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from edge.drivers.base import AgentContext
from edge.drivers.metrics import driver_metrics
from edge.drivers.testing import CollectingSink, running
from edge.drivers.traffic_nmea import (
    SPEC,
    TrafficNmeaDriver,
    TrafficNmeaParser,
    nmea_checksum,
    parse,
)
from firmware_sim.base import demo_source
from firmware_sim.devices.traffic_nmea import TrafficCounter
from firmware_sim.faults import FaultInjector
from firmware_sim.transport import PtyBus
from gateway.schema import QualityFlag
from kota_cli.errors import ConfigError

# docs/protocols.md worked example (checksum worked by hand there: *64)
SENTENCE = b"$KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13,2*64\r\n"
END = dt.datetime(2025, 1, 6, 8, 15, tzinfo=dt.UTC).timestamp()
VALUES = {
    "vehicle_count": 42.0,
    "vehicle_count_motorcycle": 27.0,
    "vehicle_count_car": 13.0,
    "vehicle_count_heavy": 2.0,
    "vehicle_speed": 37.5,
    "lane_occupancy": 12.3,
}
CTX = AgentContext("pi-test", "THBKK", "bkk-test")


def _sentence(body: str) -> bytes:
    return f"${body}*{nmea_checksum(body.encode()):02X}\r\n".encode()


def test_worked_example() -> None:
    assert nmea_checksum(SENTENCE[1:-5]) == 0x64
    frames, rejects = parse(SENTENCE)
    assert rejects == {}
    assert frames[0].values == VALUES
    assert frames[0].meta == {
        "counter_id": "KT0001",
        "lane": 1,
        "interval_s": 60,
        "interval_end": END,
    }


def test_empty_speed_when_no_vehicle() -> None:
    frames, rejects = parse(_sentence("KTTRF,KT0001,2,60,081500,060125,0,,0.0,0,0,0"))
    assert rejects == {}
    assert "vehicle_speed" not in frames[0].values
    assert frames[0].values["vehicle_count"] == 0.0


def test_rejects_by_reason() -> None:
    bad_cs = SENTENCE.replace(b"*64", b"*65")
    stream = (
        b"noise"
        + SENTENCE
        + bad_cs
        + _sentence("KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13")  # 11 fields
        + _sentence("KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13,3")  # sum 43 != 42
        + _sentence("GPGLL,5057.970,N,00146.110,E,142451,A")
        + b"$KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13,2*64\n"  # no CR
        + SENTENCE[:30]
        + SENTENCE
        + _sentence("KTTRF,KT0001,1,60,081500,320125,42,37.5,12.3,27,13,2")  # 32 January
        + SENTENCE[:20]
    )
    frames, rejects = parse(stream)
    assert len(frames) == 2
    assert rejects == {
        "garbage": 1,
        "bad_checksum": 1,
        "bad_fields": 2,
        "bad_sum": 1,
        "unknown_sentence": 1,
        "bad_format": 1,
        "truncated": 2,
    }


def test_too_long_sentence() -> None:
    frames, rejects = parse(b"$" + b"A" * 100 + b"\r\n" + SENTENCE)
    assert len(frames) == 1 and rejects == {"too_long": 1}


def _decode_in_pieces(stream: bytes, cuts: list[int]) -> tuple[list, dict]:
    p = TrafficNmeaParser()
    frames = []
    last = 0
    for cut in [*cuts, len(stream)]:
        frames += p.feed(stream[last:cut])
        last = cut
    p.flush()
    return [(f.offset, f.values, f.meta) for f in frames], dict(p.rejects)


def test_split_at_every_byte_boundary() -> None:
    lane2 = _sentence("KTTRF,KT0001,2,60,081500,060125,0,,0.0,0,0,0")
    stream = b"\x00x" + SENTENCE + SENTENCE.replace(b"42", b"43") + lane2 + SENTENCE[:9] + SENTENCE
    whole = _decode_in_pieces(stream, [])
    assert len(whole[0]) == 3
    for i in range(1, len(stream)):
        assert _decode_in_pieces(stream, [i]) == whole, i
    assert _decode_in_pieces(stream, list(range(1, len(stream)))) == whole


def _valid(stream: bytes, offset: int) -> bool:
    end = stream.index(b"\n", offset)
    line = stream[offset : end + 1]
    star = line.rindex(b"*")
    return nmea_checksum(line[1:star]) == int(line[star + 1 : star + 3], 16)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=300) | st.text("$KTRF,0123456789.*\r\nA", max_size=200).map(str.encode),
    st.lists(st.integers(0, 300), max_size=5),
)
def test_random_bytes_never_crash(data: bytes, cuts: list[int]) -> None:
    frames, _ = _decode_in_pieces(data, sorted(c for c in cuts if c < len(data)))
    for offset, _values, _meta in frames:
        assert _valid(data, offset)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SENTENCE) * 3 - 1), st.integers(1, 127)), max_size=4))
def test_mutated_sentences_never_emit_a_bad_checksum(flips: list) -> None:
    data = bytearray(SENTENCE * 3)
    for pos, xor in flips:
        data[pos] ^= xor
    stream = bytes(data)
    for f in parse(stream)[0]:
        assert _valid(stream, f.offset)


def test_lane_devices_and_sentence_time() -> None:
    metrics = driver_metrics(CollectorRegistry())
    read_t = END + 0.4  # the sentence arrives just after the interval end
    drv = TrafficNmeaDriver(
        "trf",
        AgentContext("pi", "THBKK", "s", clock=lambda: read_t),
        port="/x",
        lane_device_ids={2: "trf-out"},
        metrics=metrics,
    )
    sink = CollectingSink()
    lane2 = _sentence("KTTRF,KT0001,2,60,081500,060125,1,20.0,1.0,1,0,0")
    for frame in parse(SENTENCE + lane2)[0]:
        drv.on_frame(frame, sink)
    assert [dev for dev, _ in sink.batches] == ["trf-L1", "trf-out"]
    samples = sink.batches[0][1]
    assert {s.observed_us for s in samples} == {int(END) * 1_000_000}
    assert {s.flags for s in samples} == {0}
    assert {s.quantity: s.unit for s in samples}["vehicle_speed"] == "km/h"
    assert {s.quantity: s.unit for s in samples}["vehicle_count"] == "{vehicle}"


def test_counter_clock_unset_uses_read_time() -> None:
    # the counter's RTC lost power: 2000-01-01; the agent clock is fine
    stale = _sentence("KTTRF,KT0001,1,60,000100,010100,42,37.5,12.3,27,13,2")
    drv = TrafficNmeaDriver(
        "trf",
        AgentContext("pi", "THBKK", "s", clock=lambda: END),
        port="/x",
        metrics=driver_metrics(CollectorRegistry()),
    )
    sink = CollectingSink()
    for frame in parse(stale + SENTENCE.replace(b"081500", b"091500").replace(b"*64", b"*65"))[0]:
        drv.on_frame(frame, sink)
    samples = sink.batches[0][1]
    assert {s.flags for s in samples} == {QualityFlag.CLOCK_SUSPECT}
    assert samples[0].observed_us == int(END * 1e6)
    # an hour ahead of the agent: beyond max_clock_skew, read time + CLOCK_SUSPECT
    assert drv.sample_time(END + 3600) == (int(END * 1e6), QualityFlag.CLOCK_SUSPECT)
    # the agent clock unset (1970) and the counter's sane: trust the counter
    drv.ctx = AgentContext("pi", "THBKK", "s", clock=lambda: 100.0)
    assert drv.sample_time(END) == (int(END) * 1_000_000, 0)


def test_build_validates_config() -> None:
    drv = SPEC.build(
        {
            "kind": "traffic_nmea",
            "device_id": "trf",
            "port": "/x",
            "lane_device_ids": {"1": "trf-in"},
            "counter_id": "KT0001",
        },
        CTX,
    )
    assert isinstance(drv, TrafficNmeaDriver) and drv.lane_device(1) == "trf-in"
    assert drv.lane_device(3) == "trf-L3"
    for table, message in [
        ({"lane_device_ids": {"0": "x"}}, r"lane_device_ids\.0: lane must be 1..99"),
        ({"lane_device_ids": {"1": "bad id"}}, r"lane_device_ids\.1:"),
        ({"counter_id": "way-too-long-counter-id"}, "counter_id:"),
    ]:
        with pytest.raises(ConfigError, match=message):
            SPEC.build({"kind": "traffic_nmea", "device_id": "trf", "port": "/x", **table}, CTX)


# -- real ptys ------------------------------------------------------------------------------


def test_pty_sentences_with_fault_injection_and_replug() -> None:
    faults = FaultInjector(
        {
            "bad_checksum": 0.1,
            "truncated": 0.05,
            "garbled": 0.1,
            "dropped": 0.05,
            "garbage": 0.2,
            "duplicate": 0.1,
        },
        seed=5,
    )
    # virtual counter time: one interval per real 10 ms, starting 2025-01-06 08:00 UTC
    # virtual counter time, 6000x real time, frozen while the driver cannot listen (pyserial
    # flushes the input queue when it opens a port: bytes sent before that are lost, as on
    # a real UART)
    state = {"t": END - 900, "wall": time.time(), "run": True}

    def clock() -> float:
        if state["run"]:
            return state["t"] + (time.time() - state["wall"]) * 6000
        return state["t"]

    def freeze() -> None:
        state["t"], state["run"] = clock(), False

    def thaw() -> None:
        state["wall"], state["run"] = time.time(), True

    dev = TrafficCounter(demo_source, "trf", lanes=3, interval_s=60, faults=faults)
    ctx = AgentContext("pi", "THBKK", "s", clock=clock)
    with PtyBus([dev], clock=clock) as bus:
        drv = TrafficNmeaDriver(
            "trf",
            ctx,
            port=bus.path,
            reopen_max_delay=0.5,
            max_clock_skew=3600,
            metrics=driver_metrics(CollectorRegistry()),
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 30, timeout=10)
            freeze()
            n_clean = sum(1 + ("duplicate" in f.faults) for f in dev.sent_log if not f.corrupted)
            sink.wait_for(lambda: len(sink.batches) >= n_clean, timeout=3)
            bus.close()  # unplugged
            n_sent = len(dev.sent_log)
            time.sleep(0.6)
            bus.reopen()  # plugged back: a new pty behind the same path
            deadline = time.monotonic() + 5
            while (drv.port is None or drv.port.opens < 2) and time.monotonic() < deadline:
                time.sleep(0.01)
            thaw()
            assert sink.wait_for(lambda: len(sink.batches) >= 60, timeout=10)
            freeze()  # no more intervals end: let the driver drain
            n_clean = sum(1 + ("duplicate" in f.faults) for f in dev.sent_log if not f.corrupted)
            sink.wait_for(lambda: len(sink.batches) >= n_clean, timeout=3)
            time.sleep(0.1)
    assert len(dev.sent_log) > n_sent  # it carried on after the replug
    assert drv.health()["reopens"] >= 1  # type: ignore[operator]
    got = [
        (dev_id, {s.quantity: s.value for s in samples}, samples[0].observed_us)
        for dev_id, samples in sink.batches
    ]
    want = []
    for f in dev.sent_log:
        if not f.corrupted:
            item = (f"trf-L{f.meta['lane']}", dict(f.values), int(f.meta["interval_end"]) * 10**6)
            want += [item] * (2 if "duplicate" in f.faults else 1)
    # frames in flight when the bus was closed may be lost: compare in order, allowing gaps
    # only there; every received sentence must be one the counter sent cleanly
    assert any(f.corrupted for f in dev.sent_log)
    it = iter(want)
    for item in got:
        assert item in it, item
    # at most the last sentence before the unplug may be cut (a truncated tail)
    assert len(got) >= len(want) - 1
