"""Encode a columnar frame as a PostgreSQL binary COPY stream, vectorised with numpy.

`copy.write_row()` costs a Python call and a per-field dumper per value; building the whole
`COPY ... (FORMAT binary)` payload from the Arrow buffers with a few numpy scatter operations
costs O(bytes) in C. docs/ingest.md has the measured comparison.

Binary COPY layout: 19-byte header, then per tuple an int16 field count followed by, per field,
an int32 length (-1 = NULL) and that many bytes; all integers big-endian. Text is UTF-8,
float8 is IEEE big-endian, int2 is big-endian, timestamptz is int64 microseconds since
2000-01-01 00:00 UTC. The stream ends with the int16 -1 trailer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds

PgType = Literal["text", "float8", "int2", "timestamptz"]


def _fixed(
    values: np.ndarray, nulls: np.ndarray | None, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(field lengths, payload bytes) of a fixed-width big-endian column."""
    n = len(values)
    raw = np.ascontiguousarray(values).view(np.uint8).reshape(n, width)
    if nulls is None or not nulls.any():
        return np.full(n, width, dtype=np.int64), raw.reshape(-1)
    lens = np.where(nulls, -1, width).astype(np.int64)
    return lens, raw[~nulls].reshape(-1)


def _column(arr: pa.ChunkedArray | pa.Array, pg_type: PgType) -> tuple[np.ndarray, np.ndarray]:
    """Field lengths (-1 for NULL) and concatenated payload bytes of one column."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pg_type == "text":
        arr = arr.cast(pa.large_string())
        _, offsets_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
        lens = np.diff(offsets)
        data = (
            np.frombuffer(data_buf, dtype=np.uint8)
            if data_buf is not None
            else np.zeros(0, np.uint8)
        )
        data = data[offsets[0] : offsets[-1]]
        if nulls is not None:
            lens = np.where(nulls, -1, lens)
        return lens.astype(np.int64), data
    if pg_type == "float8":
        values = arr.cast(pa.float64()).fill_null(0.0).to_numpy().astype(">f8")
        return _fixed(values, nulls, 8)
    if pg_type == "int2":
        values = arr.cast(pa.int16()).fill_null(0).to_numpy().astype(">i2")
        return _fixed(values, nulls, 2)
    if pg_type == "timestamptz":
        micros = arr.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).fill_null(0).to_numpy()
        return _fixed((micros - PG_EPOCH_US).astype(">i8"), nulls, 8)
    raise ValueError(f"unsupported type {pg_type}")


def encode_binary_copy(frame: pl.DataFrame, columns: Sequence[tuple[str, PgType]]) -> bytes:
    """The complete binary COPY payload (header, tuples, trailer) of `frame[columns]`."""
    n = frame.height
    table = frame.select([name for name, _ in columns]).to_arrow()
    encoded = [_column(table.column(i), pg_type) for i, (_, pg_type) in enumerate(columns)]
    # Bytes per field: 4 (length word) + payload (0 for NULL).
    field_sizes = [4 + np.maximum(lens, 0) for lens, _ in encoded]
    row_sizes = 2 + np.sum(field_sizes, axis=0) if encoded else np.full(n, 2, np.int64)
    row_starts = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(row_sizes[:-1], out=row_starts[1:])
    body = int(row_sizes.sum()) if n else 0
    out = np.empty(len(HEADER) + body + len(TRAILER), dtype=np.uint8)
    out[: len(HEADER)] = np.frombuffer(HEADER, np.uint8)
    base = row_starts + len(HEADER)
    # field count
    count = np.frombuffer(np.array(len(columns), dtype=">i2").tobytes(), np.uint8)
    out[base[:, None] + np.arange(2)] = count
    pos = base + 2
    four = np.arange(4)
    for (lens, data), size in zip(encoded, field_sizes, strict=True):
        out[pos[:, None] + four] = lens.astype(">i4").view(np.uint8).reshape(n, 4)
        present = np.maximum(lens, 0)
        total = int(present.sum())
        if total:
            # scatter each row's payload to pos+4: destination = source index + per-row shift
            src_starts = np.zeros(n, dtype=np.int64)
            np.cumsum(present[:-1], out=src_starts[1:])
            shift = np.repeat(pos + 4 - src_starts, present)
            out[np.arange(total, dtype=np.int64) + shift] = data
        pos = pos + size
    out[-len(TRAILER) :] = np.frombuffer(TRAILER, np.uint8)
    return out.tobytes()
