"""Devices on real ptys, opened with pyserial and pymodbus's client like USB adapters."""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest
import serial
from pymodbus.client import ModbusSerialClient

from firmware_sim.devices import PMS5003, SDS011, ModbusSlave, TrafficCounter
from firmware_sim.transport import PtyBus

H = bytes.fromhex
PM = {"pm1": 5, "pm2_5": 9, "pm10": 14, "pm2_5_cf1": 10}


def const(values):
    return lambda _t: values


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks():
    threads = set(threading.enumerate())
    fds = open_fds()
    yield
    time.sleep(0.05)
    assert set(threading.enumerate()) - threads == set()
    assert len(open_fds() - fds) == 0, open_fds() - fds


def read_exact(port: serial.Serial, n: int) -> bytes:
    data = port.read(n)
    assert len(data) == n, data.hex()
    return data


def pms_decode(frame: bytes) -> dict[str, int]:
    """Independent of the encoder: header, length, checksum, words."""
    assert frame[:4] == H("424d001c")
    assert sum(frame[:30]) & 0xFFFF == struct.unpack(">H", frame[30:])[0]
    w = struct.unpack(">13H", frame[4:30])
    return {"pm2_5_cf1": w[1], "pm1": w[3], "pm2_5": w[4], "pm10": w[5]}


def test_pms_active_frames_over_pty():
    dev = PMS5003(const(PM), "pm-1", interval_s=0.05)
    with PtyBus([dev]) as bus:
        assert os.path.islink(bus.path) and os.readlink(bus.path) == bus.pty_path
        with serial.Serial(bus.path, 9600, timeout=2) as port:
            frames = [read_exact(port, 32) for _ in range(3)]
    for f in frames:
        assert pms_decode(f) == {"pm2_5_cf1": 10, "pm1": 5, "pm2_5": 9, "pm10": 14}
    assert dev.sent_log[0].values["pm2_5"] == 9


def test_pms_commands_over_pty():
    dev = PMS5003(const(PM), "pm-1", interval_s=0.05)
    with PtyBus([dev]) as bus, serial.Serial(bus.path, 9600, timeout=2) as port:
        read_exact(port, 32)
        port.write(H("424de100000170"))  # passive
        deadline = time.time() + 2
        buf = b""
        while H("424d0004e1000174") not in buf and time.time() < deadline:
            buf += port.read(port.in_waiting or 1)
        assert H("424d0004e1000174") in buf
        time.sleep(0.15)
        port.reset_input_buffer()
        time.sleep(0.15)
        assert port.in_waiting == 0  # no more active frames
        port.write(H("424de200000171"))  # read
        assert pms_decode(read_exact(port, 32))["pm10"] == 14
        port.write(H("424de400000173"))  # sleep
        assert read_exact(port, 8) == H("424d0004e4000177")
        port.write(H("424de200000171"))
        port.timeout = 0.3
        assert port.read(32) == b""  # asleep: read ignored
        port.timeout = 2
        port.write(H("424de400010174"))  # wake: no ack
        port.write(H("424de200000171"))
        assert pms_decode(read_exact(port, 32))["pm1"] == 5


def test_sds_query_and_sleep_over_pty():
    dev = SDS011(const({"pm2_5": 12.3, "pm10": 45.6}), "sds", interval_s=0.05)
    frame = H("aac07b00c801a16045ab")
    with PtyBus([dev]) as bus, serial.Serial(bus.path, 9600, timeout=2) as port:
        assert read_exact(port, 10) == frame
        port.write(H("aab402010100000000000000000000ffff02ab"))  # query mode
        buf = b""
        deadline = time.time() + 2
        while H("aac502010100a16005ab") not in buf and time.time() < deadline:
            buf += port.read(port.in_waiting or 1)
        assert H("aac502010100a16005ab") in buf
        time.sleep(0.15)
        port.reset_input_buffer()
        port.write(H("aab404000000000000000000000000ffff02ab"))  # query data
        assert read_exact(port, 10) == frame
        port.write(H("aab406010000000000000000000000ffff05ab"))  # sleep
        assert read_exact(port, 10) == H("aac506010000a16008ab")
        port.write(H("aab406010100000000000000000000ffff06ab"))  # work
        assert read_exact(port, 10) == H("aac506010100a16009ab")


def test_traffic_sentences_over_pty():
    clock_start = time.time()
    # a fake clock running 600x so a 60 s interval passes in 0.1 s
    dev = TrafficCounter(
        const({"vehicle_count": 12, "vehicle_speed": 41.26, "lane_occupancy": 7}),
        "t",
        lanes=2,
        interval_s=60,
    )
    with (
        PtyBus([dev], clock=lambda: 1_735_689_600 + (time.time() - clock_start) * 600) as bus,
        serial.Serial(bus.path, 9600, timeout=2) as port,
    ):
        lines = [port.read_until(b"\r\n") for _ in range(2)]
    assert lines[0].startswith(b"$KTTRF,KT0001,1,60,000100,010125,12,41.3,7.0,")
    assert lines[1].startswith(b"$KTTRF,KT0001,2,60,000100,010125,12,41.3,7.0,")
    body, _, cs = lines[0][1:-2].partition(b"*")
    x = 0
    for c in body:
        x ^= c
    assert cs == f"{x:02X}".encode()


def test_three_modbus_slaves_on_one_bus():
    values = {
        "co2": 812,
        "voltage": 230.0,
        "current": 1.5,
        "active_power": 345.0,
        "frequency": 50.0,
        "active_energy_import": 1234.5,
        "active_energy_export": 0.0,
        "temperature": -5.3,
        "relative_humidity": 65.4,
    }
    slaves = [
        ModbusSlave(const(values), "co2", model="s8"),
        ModbusSlave(const(values), "meter", model="sdm120", address=2),
        ModbusSlave(const(values), "probe", model="thprobe", address=3),
    ]
    with PtyBus(slaves, baudrate=9600) as bus:
        client = ModbusSerialClient(bus.path, baudrate=9600, timeout=1, retries=0)
        try:
            assert client.connect()
            rr = client.read_input_registers(3, count=1, device_id=0x68)
            assert rr.registers == [812]
            rr = client.read_input_registers(3, count=1, device_id=0xFE)  # any address
            assert rr.registers == [812]
            rr = client.read_input_registers(0, count=2, device_id=2)
            assert rr.registers == [0x4366, 0x0000]  # 230.0 V
            rr = client.read_input_registers(0x48, count=2, device_id=2)
            kwh = client.convert_from_registers(rr.registers, client.DATATYPE.FLOAT32)
            assert kwh == pytest.approx(1234.5)
            rr = client.read_input_registers(1, count=2, device_id=3)
            assert rr.registers == [0xFFCB, 654]  # -5.3 degC, 65.4 %
            rr = client.read_input_registers(0x10, count=1, device_id=2)  # not mapped
            assert rr.isError() and rr.exception_code == 2
        finally:
            client.close()
    assert slaves[2].sent_log[0].values == {"temperature": -5.3, "relative_humidity": 65.4}
    assert slaves[0].requests == 2 and slaves[1].requests == 3


def test_unplug_and_replug_keeps_the_link():
    dev = PMS5003(const(PM), "pm-1", interval_s=0.05)
    with PtyBus([dev]) as bus:
        link = bus.path
        port = serial.Serial(link, 9600, timeout=2)
        read_exact(port, 32)
        bus.close()
        assert not os.path.lexists(link) and not bus.plugged
        with pytest.raises(serial.SerialException):
            for _ in range(50):  # the open port now fails like an unplugged adapter
                port.read(32)
        port.close()
        bus.reopen()
        assert bus.plugged and os.readlink(link) == bus.pty_path
        assert bus.path == link
        with serial.Serial(link, 9600, timeout=2) as port2:
            assert pms_decode(read_exact(port2, 32))["pm2_5"] == 9
