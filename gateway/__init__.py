"""Gateway: normalise every city's uplinks into the shared schema.

Owns: uplink decoding, unit/time normalisation, calibration, quality flags, dead letters,
the device registry lookups and the `kota gateway` commands.

`gateway.schema` is the shared contract imported by every component (edge included) and
must stay importable with the base (edge-safe) dependencies only. The rest of `gateway`
is server-side and may import polars, orjson, paho-mqtt and `ingest`/`storage`.
"""
