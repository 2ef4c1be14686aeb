"""Ingest: writing readings and dead letters, and the acknowledged MQTT consumption.

Owns `ingest.writer.ReadingWriter` (one idempotent transaction per batch: binary COPY
straight into `readings` inside a savepoint, falling back on a key conflict to COPY into a
temp staging table + `INSERT ... ON CONFLICT (device, quantity, observed_at) DO NOTHING`;
dead letters; commit), `ingest.consumer.MqttBatchConsumer` (MQTT v5 persistent session,
QoS 1, PUBACK only after the handler returned, i.e. after the commit), the `kota_ingest_*`
Prometheus metrics, `kota ingest run|stats` and the production `mosquitto.conf`.
See docs/ingest.md.

May import: psycopg, polars, pyarrow, numpy, paho-mqtt, orjson, prometheus-client, click,
`storage`, `gateway.schema`, `kota_cli.errors`. Must not import the rest of `gateway`, nor
`indicators`.
"""
