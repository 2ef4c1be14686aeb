"""The edge agent: runs on a Raspberry Pi next to the sensors, for months, unattended.

Owns: reading `edge.toml` (`edge.config`), the durable SQLite outbox every reading is
written to before anything else happens (`edge.outbox`), the MQTT v5 uplink that empties
it only on broker acknowledgement (`edge.uplink`), the agent process that wires drivers,
outbox, uplink and metrics together (`edge.agent`), its Prometheus endpoint
(`edge.metrics`), the `kota edge` commands (`edge.cli`) and `kota bench edge` (`edge.bench`).
The device drivers live in `edge.drivers` (their own package and owner).

May import: the standard library, paho-mqtt, pyserial, pymodbus, prometheus-client, click
and `gateway.schema` (stdlib-only). Never polars, pyarrow, psycopg or orjson: the agent is
installed with the base `kota-iot` package on 32- and 64-bit ARM boards.
"""
