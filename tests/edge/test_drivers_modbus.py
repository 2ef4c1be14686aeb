"""Modbus RTU: register tables, hand vectors, fuzzing, and three slaves on one real pty bus."""

from __future__ import annotations

import logging
import struct
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from edge.drivers.base import AgentContext
from edge.drivers.metrics import driver_metrics
from edge.drivers.modbus import (
    MODELS,
    SPEC,
    ModbusDriver,
    crc16,
    decode_block,
    decode_read_response,
)
from edge.drivers.testing import CollectingSink, running
from firmware_sim.base import demo_source
from firmware_sim.devices import modbus as sim
from firmware_sim.faults import FaultInjector
from firmware_sim.transport import PtyBus
from gateway.schema import QualityFlag
from kota_cli.errors import ConfigError

CTX = AgentContext("pi-test", "THBKK", "bkk-test")


@pytest.fixture(autouse=True)
def _quiet_pymodbus(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="pymodbus")


def test_crc_vectors() -> None:
    assert crc16(bytes.fromhex("01 03 00 00 00 04")).to_bytes(2, "little") == b"\x44\x09"
    assert crc16(bytes.fromhex("01 04 00 00 00 02")).to_bytes(2, "little") == b"\x71\xcb"
    assert crc16(bytes.fromhex("FE 04 00 03 00 01")).to_bytes(2, "little") == b"\xd5\xc5"
    assert crc16(b"123456789") == 0x4B37


def test_docs_reply_vectors() -> None:
    words = decode_read_response(bytes.fromhex("01 04 04 43 66 00 00 0E 1F"), 1, 2)
    assert words == [0x4366, 0x0000]
    sdm = MODELS["sdm120"]
    start, _count, regs = sdm.blocks[0]
    assert decode_block(start, regs, words) == ([(regs[0], 230.0)], 0, 0)
    th = MODELS["kota_thprobe"]
    words = decode_read_response(bytes.fromhex("03 04 04 FF CB 02 8E 18 AA"), 3, 2)
    values, _, _ = decode_block(*th.blocks[0][:1], th.blocks[0][2], words)  # type: ignore[arg-type]
    assert [(r.quantity, v) for r, v in values] == [
        ("temperature", -5.3),
        ("relative_humidity", 65.4),
    ]
    assert decode_read_response(bytes.fromhex("FE 04 02 03 2C AC 09"), 0xFE, 1) == [812]
    # 1234.5 as float32, high word first
    assert decode_block(0, (sdm.registers[0],), [0x449A, 0x5000])[0][0][1] == 1234.5


def test_exception_and_bad_replies() -> None:
    exc = bytes([1, 0x84, 2])
    exc += crc16(exc).to_bytes(2, "little")
    assert decode_read_response(exc, 1, 2) == "exception_illegal_address"
    assert decode_read_response(exc[:-1] + b"\x00", 1, 2) == "bad_crc"
    assert decode_read_response(exc, 2, 2) == "wrong_address"


def test_register_tables_match_the_simulator() -> None:
    aliases = {"s8": "senseair_s8", "thprobe": "kota_thprobe", "watermeter": "kota_watermeter"}
    for name, model in sim.MODELS.items():
        ours = MODELS[aliases.get(name, name)]
        theirs = {
            (r.address, r.encoding, r.quantity, r.unit, r.channel)
            for r in model.registers
            if r.quantity
        }
        mine = {
            (r.address, r.encoding, r.quantity, r.unit, r.channel)
            for r in ours.registers
            if r.quantity not in ("", "status")
        }
        assert mine == theirs, name
        # every word we read is mapped in the simulator (no exception 02 from our blocks)
        mapped = {r.address + i for r in model.registers for i in range(r.words)}
        for start, count, _ in ours.blocks:
            assert set(range(start, start + count)) <= mapped, (name, start, count)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.integers(1, 247), st.integers(1, 20))
def test_random_replies_never_decode_with_a_bad_crc(data: bytes, address: int, count: int) -> None:
    result = decode_read_response(data, address, count)
    if isinstance(result, list):
        assert crc16(data[:-2]) == data[-2] | data[-1] << 8
        assert len(result) == count


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 16), st.integers(1, 255)), min_size=1, max_size=3))
def test_mutated_replies_are_rejected_by_us_and_by_pymodbus(flips: list) -> None:
    words = [0x4366, 0x0000, 0x4248, 0x0000, 0x3F80, 0x0000]
    body = bytes([1, 4, 12]) + struct.pack(">6H", *words)
    good = body + crc16(body).to_bytes(2, "little")
    data = bytearray(good)
    for pos, xor in flips:
        data[pos] ^= xor
    bad = bytes(data)
    ours = decode_read_response(bad, 1, 6)
    _used, pdu = FramerRTU(DecodePDU(False)).handleFrame(bad, 0, 0)
    if crc16(bad[:-2]) != bad[-2] | bad[-1] << 8:
        assert isinstance(ours, str)
        assert pdu is None or list(getattr(pdu, "registers", [])) != words or bad == good
    elif isinstance(ours, list):
        start, _count, regs = 0, 6, [r for r in MODELS["sdm120"].registers[:1]]
        decode_block(start, regs, ours)  # decodes without crashing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=18, max_size=18))
def test_register_decoding_never_crashes(words: list[int]) -> None:
    for model in MODELS.values():
        for start, count, regs in model.blocks:
            values, _status, non_finite = decode_block(start, regs, words[:count])
            assert len(values) + non_finite <= len(regs)


def test_build_validates_config() -> None:
    base = {"kind": "modbus", "device_id": "bus", "port": "/x"}
    drv = SPEC.build(
        {
            **base,
            "slaves": [
                {"address": 1, "model": "sdm120", "device_id": "m1"},
                {"address": 2, "model": "thprobe", "device_id": "t1"},
            ],
        },
        CTX,
    )
    assert isinstance(drv, ModbusDriver) and [s.model.name for s in drv.slaves] == [
        "sdm120",
        "kota_thprobe",
    ]
    for extra, message in [
        ({}, "slaves: is required"),
        ({"slaves": []}, "slaves: must be a non-empty list"),
        (
            {"slaves": [{"address": 1, "model": "sdm999", "device_id": "m"}]},
            r"slaves\[0\]\.model: unknown model",
        ),
        (
            {"slaves": [{"address": 300, "model": "sdm120", "device_id": "m"}]},
            r"slaves\[0\]\.address: must be <= 254",
        ),
        (
            {
                "slaves": [
                    {"address": 1, "model": "sdm120", "device_id": "a"},
                    {"address": 1, "model": "sdm120", "device_id": "b"},
                ]
            },
            r"slaves\[1\]\.address: 1 is also slaves\[0\]",
        ),
        ({"slaves": [{"address": 1, "model": "sdm120"}]}, r"slaves\[0\]\.device_id: is required"),
        (
            {"parity": "X", "slaves": [{"address": 1, "model": "sdm120", "device_id": "a"}]},
            "parity: must be one of",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            SPEC.build({**base, **extra}, CTX)


# -- real pty bus ---------------------------------------------------------------------------


def _sent_values(dev: sim.ModbusSlave) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for f in dev.sent_log:
        if f.frame_type == "data" and not f.corrupted:
            out += list(f.values.items())
    return out


def _got_values(sink: CollectingSink, device_id: str) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for dev, samples in sink.batches:
        if dev == device_id or dev.startswith(device_id + "-L"):
            channel = dev[len(device_id) + 1 :]
            out += [
                (f"{s.quantity}:{channel}" if channel else s.quantity, s.value) for s in samples
            ]
    return out


def test_three_slaves_one_bus_missing_slave_and_replug() -> None:
    faults = FaultInjector({"bad_checksum": 0.15, "garbled": 0.1}, seed=3)
    meter = sim.ModbusSlave(demo_source, "sdm630", model="sdm630", address=1, faults=faults)
    probe = sim.ModbusSlave(demo_source, "th", model="thprobe", address=2)
    water = sim.ModbusSlave(demo_source, "wm", model="watermeter", address=3)
    metrics = driver_metrics(CollectorRegistry())
    slaves = [
        (1, "sdm630", "m1"),
        (2, "kota_thprobe", "th1"),
        (9, "sdm120", "ghost"),
        (3, "kota_watermeter", "wm1"),
    ]
    with PtyBus([meter, probe, water], baudrate=9600) as bus:
        drv = ModbusDriver(
            "bus1",
            CTX,
            port=bus.path,
            slaves=slaves,
            timeout=0.15,
            interval=0,
            pause_between_requests=0.0,
            reopen_max_delay=0.5,
            metrics=metrics,
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: drv.cycles >= 4, timeout=15)
            bus.close()  # the USB-RS485 adapter is pulled
            time.sleep(0.4)
            assert drv.health()["state"] == "reopening"
            cycles = drv.cycles
            bus.reopen()
            assert sink.wait_for(lambda: drv.cycles >= cycles + 2, timeout=15)
    health = drv.health()
    slaves_health = health["slaves"]
    assert isinstance(slaves_health, dict)
    assert slaves_health["ghost"]["rejected"].get("timeout", 0) >= 5
    assert slaves_health["ghost"]["readings"] == 0
    assert health["reopens"] >= 1  # type: ignore[operator]
    assert slaves_health["m1"]["rejected"].get("bad_crc", 0) >= 1
    # every value decoded is one a clean reply carried (exactly); corrupted replies never
    # decode. An unfinished cycle (at the unplug, at stop) is never emitted: two cycles short.
    for dev, dev_id, per_cycle in ((meter, "m1", 13), (probe, "th1", 2), (water, "wm1", 2)):
        got, sent = Counter(_got_values(sink, dev_id)), Counter(_sent_values(dev))
        assert got <= sent, (dev_id, sent - got, got - sent)
        assert got.total() >= sent.total() - 2 * per_cycle, (dev_id, got.total(), sent.total())
    assert (
        metrics.registry.get_sample_value(
            "kota_edge_frames_rejected_total",
            {"driver": "modbus", "device": "ghost", "reason": "timeout"},
        )
        >= 5
    )
    assert (
        metrics.registry.get_sample_value("kota_edge_port_reopens_total", {"device": "bus1"}) >= 1
    )


def test_exception_response_counted_per_slave() -> None:
    probe = sim.ModbusSlave(demo_source, "th", model="thprobe", address=2)
    s8 = sim.ModbusSlave(lambda t: {**demo_source(t), "co2": 812.0}, "s8", model="s8", address=0x68)
    metrics = driver_metrics(CollectorRegistry())
    # an SDM120 map read from the probe: 0x0000 is unmapped there -> exception 02
    slaves = [(2, "sdm120", "not-a-meter"), (0x68, "senseair_s8", "co2-1")]
    with PtyBus([probe, s8]) as bus:
        drv = ModbusDriver(
            "bus2",
            CTX,
            port=bus.path,
            slaves=slaves,
            timeout=0.2,
            interval=0,
            pause_between_requests=0.0,
            metrics=metrics,
        )
        sink = CollectingSink()
        with running(drv, sink):
            assert sink.wait_for(lambda: len(sink.batches) >= 2, timeout=10)
    rejected = drv.health()["slaves"]["not-a-meter"]["rejected"]  # type: ignore[index]
    assert rejected.get("exception_illegal_address", 0) >= 1
    batch = next(samples for dev, samples in sink.batches if dev == "co2-1")
    assert [(s.quantity, s.value, s.unit, s.flags) for s in batch] == [("co2", 812.0, "ppm", 0)]
    assert QualityFlag.DEVICE_WARNING not in QualityFlag(batch[0].flags)
