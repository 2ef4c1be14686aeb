"""Device encoders and state machines against hand-computed byte vectors (no pty)."""

from __future__ import annotations

import calendar
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_sim.base import DEMO_EPOCH, SerialDevice, demo_source
from firmware_sim.devices import (
    KINDS,
    PMS5003,
    SDS011,
    ModbusSlave,
    TrafficCounter,
    make_device,
    modbus,
    pms5003,
    sds011,
    traffic_nmea,
)

H = bytes.fromhex

PMS_VALUES = {
    "pm1_cf1": 8,
    "pm2_5_cf1": 12,
    "pm10_cf1": 15,
    "pm1": 8,
    "pm2_5": 12,
    "pm10": 15,
    "particles_0_3": 1416,
    "particles_0_5": 420,
    "particles_1_0": 84,
    "particles_2_5": 9,
    "particles_5_0": 3,
    "particles_10": 2,
}
# checksum by hand: 42+4D+00+1C = AB; PM words 8+12+15+8+12+15 = 46; counts 05+88+01+A4+54+09+03+02
# = 194; reserved 97+00 = 97; AB+46+194+97 = 31C
PMS_FRAME = H("424d001c0008000c000f0008000c000f058801a400540009000300029700031c")


def const(values):
    return lambda _t: values


# -- PMS5003 -------------------------------------------------------------------------------
def test_pms_frame_vector():
    assert pms5003.encode_frame(PMS_VALUES) == PMS_FRAME
    assert len(PMS_FRAME) == 32


def test_pms_quantize_rounds_and_clamps():
    q = pms5003.quantize({"pm2_5": 12.6, "pm10": -3, "pm1": 70000})
    assert q["pm2_5"] == 13 and q["pm10"] == 0 and q["pm1"] == 65535
    assert q["pm2_5_cf1"] == 13  # CF=1 defaults to the atmospheric value


@pytest.mark.parametrize(
    ("cmd", "data", "wire"),
    [
        (0xE1, 0, "424de100000170"),
        (0xE1, 1, "424de100010171"),
        (0xE2, 0, "424de200000171"),
        (0xE4, 0, "424de400000173"),
        (0xE4, 1, "424de400010174"),
    ],
)
def test_pms_command_vectors(cmd, data, wire):
    assert pms5003.encode_command(cmd, data) == H(wire)


def test_pms_state_machine():
    dev = PMS5003(const(PMS_VALUES), "pm", interval_s=1.0)
    assert isinstance(dev, SerialDevice)
    assert dev.emit(100.0) == PMS_FRAME  # active: first frame at once
    assert dev.emit(100.5) == b""
    assert dev.emit(101.0) == PMS_FRAME
    dev.receive(H("424de100000170"), 101.2)  # passive
    assert dev.emit(101.2) == H("424d0004e1000174")
    assert dev.emit(105.0) == b""  # no active frames in passive mode
    dev.receive(H("424de2000001"), 105.1)  # a read split across writes
    dev.receive(H("71"), 105.1)
    assert dev.emit(105.1) == PMS_FRAME
    dev.receive(H("424de400000173"), 106.0)  # sleep
    assert dev.emit(106.0) == H("424d0004e4000177")
    dev.receive(H("424de200000171"), 106.5)  # read while asleep: ignored
    assert dev.emit(106.5) == b""
    dev.receive(H("424de400010174"), 107.0)  # wake: no ack, still passive
    assert dev.emit(107.0) == b""
    dev.receive(H("424de100010171"), 108.0)  # active again: ack then frames
    assert dev.emit(108.0) == H("424d0004e1010175") + PMS_FRAME
    dev.receive(H("424de1000001ff"), 109.0)  # bad checksum: ignored
    assert [f.frame_type for f in dev.sent_log].count("ack") == 3
    assert dev.sent_log[0].values["particles_0_3"] == 1416


# -- SDS011 --------------------------------------------------------------------------------
def test_sds_frame_vector():
    # 12.3 -> 123 = 7B 00; 45.6 -> 456 = C8 01; CS = 7B+00+C8+01+A1+60 = 245 -> 45
    assert sds011.encode_frame({"pm2_5": 12.3, "pm10": 45.6}) == H("aac07b00c801a16045ab")
    assert sds011.quantize({"pm2_5": 12.34, "pm10": 2000}) == {"pm2_5": 12.3, "pm10": 999.9}


SDS_SLEEP = H("aab406010000000000000000000000ffff05ab")  # airrohr firmware's SLEEPCMD
SDS_WORK = H("aab406010100000000000000000000ffff06ab")
SDS_QUERY_MODE = H("aab402010100000000000000000000ffff02ab")
SDS_QUERY = H("aab404000000000000000000000000ffff02ab")


def test_sds_command_vectors():
    assert sds011.encode_command(6, b"\x01\x00") == SDS_SLEEP
    assert sds011.encode_command(6, b"\x01\x01") == SDS_WORK
    assert sds011.encode_command(2, b"\x01\x01") == SDS_QUERY_MODE
    assert sds011.encode_command(4) == SDS_QUERY


def test_sds_state_machine():
    dev = SDS011(const({"pm2_5": 12.3, "pm10": 45.6}), "sds")
    frame = H("aac07b00c801a16045ab")
    assert dev.emit(0.0) == frame
    dev.receive(SDS_QUERY_MODE, 0.5)
    assert dev.emit(0.5) == H("aac502010100a16005ab")
    assert dev.emit(3.0) == b""
    dev.receive(SDS_QUERY, 3.1)
    assert dev.emit(3.1) == frame
    dev.receive(SDS_SLEEP, 4.0)
    assert dev.emit(4.0) == H("aac506010000a16008ab")
    dev.receive(SDS_QUERY, 4.5)  # asleep: ignored
    assert dev.emit(4.5) == b""
    dev.receive(SDS_WORK, 5.0)
    assert dev.emit(5.0) == H("aac506010100a16009ab")
    other = sds011.encode_command(4, device_id=0x1234)  # not our ID
    dev.receive(other, 6.0)
    assert dev.emit(6.0) == b""
    dev.receive(sds011.encode_command(7), 7.0)  # firmware 2015-07-10: 0F 07 0A
    assert dev.emit(7.0) == H("aac5070f070aa16028ab")


def test_sds_working_period():
    dev = SDS011(const({"pm2_5": 1, "pm10": 2}), "sds")
    dev.receive(sds011.encode_command(8, b"\x01\x02"), 0.0)  # every 2 minutes
    # CS = 08+01+02+00+A1+60 = 10C -> 0C
    out = dev.emit(0.0)
    assert out[:10] == H("aac508010200a1600cab")
    assert out[10:12] == H("aac0")  # then a report at once
    times = [t for t in range(1, 300) if dev.emit(float(t))]
    assert times == [120, 240]


# -- traffic sentence ----------------------------------------------------------------------
LANE = {
    "vehicle_count_motorcycle": 27,
    "vehicle_count_car": 13,
    "vehicle_count_heavy": 2,
    "vehicle_speed": 37.5,
    "lane_occupancy": 12.3,
}


def test_traffic_sentence_vector():
    end = calendar.timegm((2025, 1, 6, 8, 15, 0))
    lv = traffic_nmea.lane_values(LANE, 1)
    assert lv["vehicle_count"] == 42
    # XOR of "KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13,2" = 0x64 (worked by hand
    # in docs/protocols.md)
    assert traffic_nmea.encode_sentence("KT0001", 1, 60, end, lv) == (
        b"$KTTRF,KT0001,1,60,081500,060125,42,37.5,12.3,27,13,2*64\r\n"
    )
    assert traffic_nmea.nmea_checksum("GPGLL,5057.970,N,00146.110,E,142451,A") == "27"


def test_traffic_no_vehicles_has_empty_speed():
    lv = traffic_nmea.lane_values({"vehicle_count": 0, "vehicle_speed": 40}, 1)
    s = traffic_nmea.encode_sentence("X", 2, 60, 0.0, lv)
    assert s.startswith(b"$KTTRF,X,2,60,000000,010170,0,,0.0,0,0,0*")
    assert "vehicle_speed" not in lv


@given(st.integers(0, 5000), st.lists(st.floats(0.01, 10), min_size=3, max_size=3))
def test_traffic_classes_sum_to_count(total, shares):
    parts = traffic_nmea.split_count(total, shares)
    assert sum(parts) == total and all(p >= 0 for p in parts)


def test_traffic_counter_one_sentence_per_lane_per_interval():
    src = const(
        {"vehicle_count": 10, "vehicle_count:lane2": 5, "vehicle_speed": 30, "lane_occupancy": 5}
    )
    dev = TrafficCounter(src, "t", counter_id="BKK-01", lanes=2, interval_s=60)
    out = b"".join(dev.emit(float(t)) for t in range(30, 200))
    lines = out.split(b"\r\n")[:-1]
    assert len(lines) == 6  # intervals ending at 60, 120, 180; 2 lanes each
    assert [f.meta["lane"] for f in dev.sent_log] == [1, 2] * 3
    assert lines[0].startswith(b"$KTTRF,BKK-01,1,60,000100,010170,10,")
    assert dev.sent_log[1].values["vehicle_count"] == 5
    assert dev.sent_log[0].values["vehicle_count"] == 10


# -- Modbus --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frame", "crc"),
    [("010300000004", "4409"), ("010400000002", "71cb"), ("fe0400030001", "d5c5")],
)
def test_modbus_crc_vectors(frame, crc):
    assert modbus.crc16(H(frame)) == H(crc)


def test_modbus_crc_check_string():
    assert modbus.crc16(b"123456789") == H("374b")  # CRC-16/MODBUS check value 0x4B37


def test_register_encodings():
    assert modbus.encode_value("float32", 230.0) == [0x4366, 0x0000]
    assert modbus.encode_value("float32", 50.0) == [0x4248, 0x0000]
    assert modbus.encode_value("int16x10", -5.3) == [0xFFCB]
    assert modbus.encode_value("uint16x10", 65.4) == [654]
    assert modbus.decode_value("int16x10", [0xFFCB]) == -5.3


def test_modbus_s8_reply_bytes():
    dev = ModbusSlave(const({"co2": 777}), model="s8")
    assert dev.kind == "modbus:s8" and dev.address == 0x68
    dev.receive(H("fe0400030001d5c5"), 1.0)
    reply = dev.emit(1.0)
    assert reply[:5] == H("fe04020309")  # 777 = 0x0309
    assert modbus.crc16(reply[:5]) == reply[5:]
    assert dev.sent_log[-1].values == {"co2": 777.0}


def test_modbus_ignores_other_addresses_and_bad_crc():
    dev = ModbusSlave(const({"voltage": 230}), model="sdm120", address=2)
    dev.receive(modbus.read_request(3, 0, 2), 0.0)
    dev.receive(H("020400000002ffff"), 0.0)
    assert dev.emit(0.0) == b""
    dev.receive(modbus.read_request(2, 0, 2), 0.0)
    reply = dev.emit(0.0)
    assert reply[:7] == H("02040443660000")


def test_modbus_exceptions():
    dev = ModbusSlave(const({}), model="thprobe", address=5)
    dev.receive(modbus.read_request(5, 0, 1), 0.0)  # 0x0000 is not mapped
    reply = dev.emit(0.0)
    assert reply[:3] == H("058402") and modbus.crc16(reply[:3]) == reply[3:]
    dev.receive(modbus.read_request(5, 1, 2, function=3), 0.0)  # holding registers
    assert dev.emit(0.0)[:3] == H("058301")
    assert [f.frame_type for f in dev.sent_log] == ["exception", "exception"]


def test_sdm630_phases_and_totals():
    values = {"voltage": 231.0, "voltage:L2": 229.5, "current": 4.0, "active_power": 2700.0}
    dev = ModbusSlave(const(values), model="sdm630", address=1)
    dev.receive(modbus.read_request(1, 0x0000, 18), 0.0)
    reply = dev.emit(0.0)
    words = struct.unpack(">18H", reply[3:39])
    assert words[0:2] == (0x4367, 0x0000)  # 231.0
    log = dev.sent_log[-1].values
    assert log["voltage:L2"] == 229.5 and log["active_power:L1"] == 900.0
    assert "active_power" not in log  # 0x0034 was not read


def test_meter_totals_only_grow():
    dev = ModbusSlave(demo_source, model="watermeter")
    seen = []
    for t in range(0, 7200, 600):
        dev.receive(modbus.read_request(1, 0, 2), DEMO_EPOCH + t)
        dev.emit(DEMO_EPOCH + t)
        seen.append(dev.sent_log[-1].values["water_volume"])
    assert seen == sorted(seen) and seen[-1] > seen[0]


def test_make_device_kinds():
    for kind in KINDS:
        dev = make_device(kind, demo_source)
        assert dev.kind == kind
    with pytest.raises(ValueError):
        make_device("nope", demo_source)
