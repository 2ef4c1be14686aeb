"""The shared schema: the contract every Kota component speaks.

Owns: the quantity catalogue (`quantities.toml`), the city registry (`cities.csv`), quality
flags, the normalised `Reading`, and the versioned uplink wire format (edge -> gateway) with
its JSON Schemas.

May import: the standard library only. The edge agent imports this package on a Raspberry Pi
without polars, pyarrow or psycopg, so nothing server-side may appear here.
"""

from gateway.schema.cities import City, load_cities
from gateway.schema.deadletter import DeadLetter
from gateway.schema.flags import QualityFlag
from gateway.schema.quantities import QUANTITIES, Quantity, quantity
from gateway.schema.reading import READING_COLUMNS, Reading
from gateway.schema.uplink import (
    MAX_UPLINK_BYTES,
    UPLINK_SCHEMA,
    Sample,
    UplinkBatch,
    UplinkError,
    decode_uplink,
    encode_uplink,
    parse_topic,
    uplink_topic,
)

__all__ = [
    "MAX_UPLINK_BYTES",
    "QUANTITIES",
    "READING_COLUMNS",
    "UPLINK_SCHEMA",
    "City",
    "DeadLetter",
    "QualityFlag",
    "Quantity",
    "Reading",
    "Sample",
    "UplinkBatch",
    "UplinkError",
    "decode_uplink",
    "encode_uplink",
    "load_cities",
    "parse_topic",
    "quantity",
    "uplink_topic",
]
