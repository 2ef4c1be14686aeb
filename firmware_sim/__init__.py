"""Kota's device simulators: sensors and meters reproduced byte for byte, so the edge agent,
gateway and pipeline are tested without hardware.

This package owns the device protocols (PMS5003, SDS011, Kota's traffic sentence, Modbus RTU
register maps), the pseudo-terminal transport, fault injection, city value profiles and the
``kota sim`` CLI. It runs on an edge-class machine, so it may import only the standard library,
pyserial, pymodbus and paho-mqtt (no server-side packages such as psycopg or polars).
"""
