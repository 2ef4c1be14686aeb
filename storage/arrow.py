"""Fast reads of `readings` into Arrow, via COPY ... TO STDOUT (FORMAT csv).

Measured on PostgreSQL 18 / pyarrow 26 with 1 M rows (docs/storage.md): CSV parsed by
pyarrow.csv with timestamps sent as epoch microseconds took ~1.6 s, CSV with text timestamps
~2.5 s, and binary COPY decoded row by row by psycopg ~8 s. So: CSV, integer timestamps.
COPY delivers one message per row; rows are gathered into blocks of `batch_rows` and each block
is parsed by pyarrow in C++, which keeps memory bounded when streaming (storage.archive).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from psycopg import sql

from gateway.schema import QUANTITIES, READING_COLUMNS
from storage.db import connect

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Arrow schema of a reading, in READING_COLUMNS order (unit comes from the catalogue).
READING_SCHEMA = pa.schema(
    [
        ("city", pa.string()),
        ("site", pa.string()),
        ("device", pa.string()),
        ("quantity", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("raw_value", pa.float64()),
        ("observed_at", TIMESTAMP),
        ("received_at", TIMESTAMP),
        ("flags", pa.int16()),
        ("source", pa.string()),
    ]
)
assert tuple(READING_SCHEMA.names) == READING_COLUMNS

# What COPY sends: every column but unit; timestamps as integer microseconds since the epoch.
_WIRE_COLUMNS = [name for name in READING_COLUMNS if name != "unit"]
_WIRE_TYPES = {
    f.name: (pa.int64() if f.type == TIMESTAMP else f.type)
    for f in READING_SCHEMA
    if f.name != "unit"
}
_SELECT = sql.SQL(
    "SELECT city, site, device, quantity, value, raw_value, "
    "(extract(epoch FROM observed_at) * 1000000)::bigint, "
    "(extract(epoch FROM received_at) * 1000000)::bigint, flags, source FROM readings"
)


def as_utc(value: datetime | date) -> datetime:
    """A date means its UTC midnight; a naive datetime is refused."""
    if not isinstance(value, datetime):
        return datetime.combine(value, time(), UTC)
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC datetimes")
    return value.astimezone(UTC)


def readings_query(
    start: datetime | date,
    end: datetime | date,
    cities: Sequence[str] | None = None,
    quantities: Sequence[str] | None = None,
    order_by: str | None = None,
) -> sql.Composed:
    """The COPY-able SELECT of readings with observed_at in [start, end)."""
    where = [
        sql.SQL("observed_at >= {}").format(sql.Literal(as_utc(start))),
        sql.SQL("observed_at < {}").format(sql.Literal(as_utc(end))),
    ]
    if cities is not None:
        where.append(sql.SQL("city = ANY({})").format(sql.Literal(list(cities))))
    if quantities is not None:
        where.append(sql.SQL("quantity = ANY({})").format(sql.Literal(list(quantities))))
    query = sql.SQL("{} WHERE {}").format(_SELECT, sql.SQL(" AND ").join(where))
    if order_by:
        query = sql.SQL("{} ORDER BY {}").format(
            query, sql.SQL(", ").join(sql.Identifier(c) for c in order_by.split(","))
        )
    return query


def _parse_block(block: bytes) -> pa.RecordBatch:
    table = pcsv.read_csv(
        io.BytesIO(block),
        read_options=pcsv.ReadOptions(
            column_names=_WIRE_COLUMNS, block_size=max(len(block), 1 << 20)
        ),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        convert_options=pcsv.ConvertOptions(
            column_types=_WIRE_TYPES,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
        ),
    )
    return _to_reading_batch(table)


_UNIT_NAMES = pa.array(list(QUANTITIES), pa.string())
_UNIT_VALUES = pa.array([q.ucum for q in QUANTITIES.values()], pa.string())


def _to_reading_batch(table: pa.Table) -> pa.RecordBatch:
    index = pc.index_in(table.column("quantity"), value_set=_UNIT_NAMES)
    unit = pc.take(_UNIT_VALUES, index)
    columns: list[Any] = []
    for field in READING_SCHEMA:
        if field.name == "unit":
            columns.append(unit)
        elif field.type == TIMESTAMP:
            columns.append(table.column(field.name).cast(TIMESTAMP))
        else:
            columns.append(table.column(field.name))
    combined = pa.Table.from_arrays(columns, schema=READING_SCHEMA).combine_chunks()
    batches = combined.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=READING_SCHEMA)
    return batches[0]


def iter_reading_batches(
    conn: psycopg.Connection[Any], query: sql.Composable, batch_rows: int = 250_000
) -> Iterator[pa.RecordBatch]:
    """Stream a readings COPY as Arrow record batches of at most `batch_rows` rows."""
    rows: list[bytes] = []
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)) as copy,
    ):
        for chunk in copy:
            rows.append(bytes(chunk))
            if len(rows) >= batch_rows:
                yield _parse_block(b"".join(rows))
                rows.clear()
    if rows:
        yield _parse_block(b"".join(rows))


def read_readings(
    conninfo: str,
    start: datetime | date,
    end: datetime | date,
    cities: Sequence[str] | None = None,
    quantities: Sequence[str] | None = None,
) -> pa.Table:
    """Readings with observed_at in [start, end) as an Arrow table (READING_SCHEMA columns).

    Filters by city / quantity when given. Row-level security applies to the connecting role.
    """
    with connect(conninfo) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        batches = list(iter_reading_batches(conn, readings_query(start, end, cities, quantities)))
    return pa.Table.from_batches(batches, schema=READING_SCHEMA)
