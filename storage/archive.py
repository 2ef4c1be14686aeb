"""Parquet archive of readings: Hive-partitioned `city=XXXXX/date=YYYY-MM-DD/part-0.parquet`.

Streaming: one COPY per UTC day (partition pruning keeps each to one partition), parsed in
blocks of `batch_rows` rows and split by city into per-city Parquet writers (zstd). Memory is
bounded by about (cities with data that day + 1) x batch_rows rows, whatever the range.
Files are written under a temporary name and renamed when complete, so re-running an export
replaces a day atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.arrow import READING_SCHEMA, as_utc, iter_reading_batches, readings_query
from storage.db import connect

DEFAULT_BATCH_ROWS = 250_000


@dataclass
class ExportResult:
    """What an export wrote; `chunks` = COPY queries issued (one per day)."""

    files: list[Path] = field(default_factory=list)
    rows: int = 0
    chunks: int = 0
    batches: int = 0
    max_batch_rows: int = 0


class _CityWriter:
    """One city's file for one day, flushed in row groups of about batch_rows."""

    def __init__(self, path: Path, batch_rows: int) -> None:
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.batch_rows = batch_rows
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.writer: pq.ParquetWriter | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, READING_SCHEMA, compression="zstd")
        self.writer.write_table(pa.Table.from_batches(self.pending, schema=READING_SCHEMA))
        self.pending = []
        self.pending_rows = 0

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.tmp.replace(self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days)]


def _as_date(value: date | datetime) -> date:
    return as_utc(value).date()


def export_parquet(
    conninfo: str,
    start: date | datetime,
    end: date | datetime,
    out_dir: str | Path,
    *,
    cities: list[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> ExportResult:
    """Write readings of the UTC days in [start, end) to `out_dir` as Hive-partitioned Parquet.

    Datetimes are truncated to their UTC day. Returns what was written.
    """
    if batch_rows <= 0:
        raise ValueError("batch_rows must be positive")
    first, last = _as_date(start), _as_date(end)
    out = Path(out_dir)
    result = ExportResult()
    with connect(conninfo) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for day in _days(first, last):
            _export_day(conn, day, out, cities, batch_rows, result)
            conn.rollback()  # end the day's read transaction: no long-held snapshot
    return result


def _export_day(
    conn: Any, day: date, out: Path, cities: list[str] | None, batch_rows: int, result: ExportResult
) -> None:
    query = readings_query(
        day, day + timedelta(days=1), cities, order_by="device,quantity,observed_at"
    )
    writers: dict[str, _CityWriter] = {}
    result.chunks += 1
    try:
        for batch in iter_reading_batches(conn, query, batch_rows):
            result.batches += 1
            result.rows += batch.num_rows
            result.max_batch_rows = max(result.max_batch_rows, batch.num_rows)
            city_column = batch.column("city")
            for city in pc.unique(city_column).to_pylist():
                part = batch.filter(pc.equal(city_column, city))
                writer = writers.get(city)
                if writer is None:
                    path = out / f"city={city}" / f"date={day.isoformat()}" / "part-0.parquet"
                    writer = writers[city] = _CityWriter(path, batch_rows)
                writer.add(part)
        for writer in writers.values():
            writer.close()
            result.files.append(writer.path)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
