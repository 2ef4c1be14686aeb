"""Write a normalised batch (readings + dead letters) in ONE idempotent transaction.

Per batch: `storage.partitions.ensure_partitions` for the batch's observed_at range (no round
trip when the days are known), then one transaction that

1. writes the readings, deduplicated first in polars on (device, quantity, observed_at)
   (per key the earliest received_at wins, ties by position; the others count as duplicates):
   a. **fast path**: `SAVEPOINT`, binary COPY straight into `readings` (buffer prebuilt from
      the Arrow columns, see `ingest.pgcopy`); a batch whose keys are all new is done;
   b. **fallback**, when that COPY hits `unique_violation` (a redelivered or replayed batch):
      `ROLLBACK TO SAVEPOINT`, COPY into a per-connection `TEMP ... ON COMMIT DELETE ROWS`
      staging table and `INSERT INTO readings SELECT DISTINCT ON (key) ... ON CONFLICT (key)
      DO NOTHING`, so a reading delivered twice collapses to the first stored row.
      After a batch that conflicted with stored rows the next batches go to this path
      directly (`holdoff`: redelivery comes in bursts) until one is conflict-free; a role
      under row-level security (COPY FROM is refused there) always uses it,
2. inserts the dead letters,
3. commits. Any failure rolls back all of it; the caller (the MQTT consumer) then does not
   acknowledge and the batch is retried.

docs/ingest.md has the measured costs of both paths.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg.types.json import Jsonb

from gateway.schema import DeadLetter
from ingest.metrics import IngestMetrics
from ingest.pgcopy import PgType, encode_binary_copy

log = logging.getLogger(__name__)

CopyMethod = Literal["binary", "rows", "csv"]
WritePath = Literal["direct", "fallback", "staging"]

STAGE = "kota_ingest_stage"
READINGS = "readings"
KEY = ("device", "quantity", "observed_at")
# readings columns in table order, with their PostgreSQL types (unit is not stored).
STAGE_COLUMNS: tuple[tuple[str, PgType], ...] = (
    ("device", "text"),
    ("quantity", "text"),
    ("observed_at", "timestamptz"),
    ("city", "text"),
    ("site", "text"),
    ("value", "float8"),
    ("raw_value", "float8"),
    ("received_at", "timestamptz"),
    ("flags", "int2"),
    ("source", "text"),
)
_NAMES = ", ".join(name for name, _ in STAGE_COLUMNS)
_CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ("
    + ", ".join(f"{name} {pg}" for name, pg in STAGE_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)
_INSERT = f"""
INSERT INTO readings ({_NAMES})
SELECT DISTINCT ON (device, quantity, observed_at) {_NAMES}
  FROM {STAGE}
 ORDER BY device, quantity, observed_at, received_at
    ON CONFLICT (device, quantity, observed_at) DO NOTHING
"""
_INSERT_DEAD = """
INSERT INTO dead_letters (received_at, reason, detail, topic, city, site, device, payload, "row")
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_FRAME_SCHEMA: dict[str, Any] = {
    "device": pl.Utf8,
    "quantity": pl.Utf8,
    "observed_at": pl.Datetime("us", "UTC"),
    "city": pl.Utf8,
    "site": pl.Utf8,
    "value": pl.Float64,
    "raw_value": pl.Float64,
    "received_at": pl.Datetime("us", "UTC"),
    "flags": pl.Int16,
    "source": pl.Utf8,
}


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one `ReadingWriter.write` did. `duplicates` = rows given minus rows inserted."""

    inserted: int
    duplicates: int
    dead_letters: int
    seconds: float


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).hex()
    return str(obj)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _dead_letter_params(dead: DeadLetter) -> tuple[Any, ...]:
    return (
        dead.received_at,
        dead.reason,
        dead.detail,
        dead.topic,
        dead.city,
        dead.site,
        dead.device,
        dead.payload,
        Jsonb(dead.row, dumps=_dumps) if dead.row is not None else None,
    )


def _stage_frame(readings: pl.DataFrame) -> pl.DataFrame:
    """The staging columns with the staging dtypes (tolerates e.g. Int32 flags, ns times).

    Casts are not strict: a value that does not fit (flags > 32767, a non-numeric value)
    becomes null and the row is then rejected by `split_invalid`.
    """
    missing = [name for name, _ in STAGE_COLUMNS if name not in readings.columns]
    if missing:
        raise ValueError(f"readings frame lacks columns {missing} (see READING_COLUMNS)")
    exprs = []
    for name, dtype in _FRAME_SCHEMA.items():
        col = pl.col(name)
        current = readings.schema[name]
        if isinstance(dtype, pl.Datetime) and isinstance(current, pl.Datetime):
            if current.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            elif current.time_zone != "UTC":
                col = col.dt.convert_time_zone("UTC")
        exprs.append(col.cast(dtype, strict=False).alias(name))
    return readings.select(exprs)


_REQUIRED = ("device", "quantity", "observed_at", "city", "site", "value", "received_at", "flags")
_CITY = r"^[A-Z]{2}[A-Z2-9]{3}$"


def split_invalid(frame: pl.DataFrame, now: datetime) -> tuple[pl.DataFrame, list[DeadLetter]]:
    """Rows the readings table would refuse become dead letters (`invalid_row`).

    One bad row must not fail the whole transaction forever (the consumer retries a failed
    batch until it commits), so the writer checks the table's constraints up front.
    """
    ok = pl.all_horizontal([pl.col(c).is_not_null() for c in _REQUIRED])
    ok = (
        ok
        & pl.col("city").str.contains(_CITY)
        & (pl.col("flags") >= 0)
        & (pl.col("source").is_not_null())
    )
    flagged = frame.with_columns(ok.fill_null(False).alias("_ok"))
    good = flagged.filter(pl.col("_ok")).drop("_ok")
    if good.height == frame.height:
        return frame, []
    bad = flagged.filter(~pl.col("_ok")).drop("_ok")
    dead = []
    for row in bad.iter_rows(named=True):
        nulls = [c for c in _REQUIRED if row.get(c) is None]
        detail = (
            f"required columns missing or out of range: {nulls}"
            if nulls
            else ("city is not a UN/LOCODE, flags negative or source missing")
        )
        dead.append(
            DeadLetter(
                received_at=now,
                reason="invalid_row",
                detail=detail,
                city=row.get("city"),
                site=row.get("site"),
                device=row.get("device"),
                row=row,
            )
        )
    return good, dead


def dedupe_batch(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per (device, quantity, observed_at), in the batch's order.

    Per key the row with the earliest `received_at` is kept, ties broken by position (the
    first occurrence): the row the staging path's `DISTINCT ON ... ORDER BY received_at`
    keeps, made deterministic. Needed by the fast path, where a duplicate inside the batch
    would trip the primary key and force the fallback.
    """
    # the common case, a batch without duplicates, costs one hash pass (~2.5 ms per 50k rows)
    if frame.height < 2 or not frame.select(KEY).is_duplicated().any():
        return frame
    return (
        frame.with_row_index("_pos")
        .sort("received_at", maintain_order=True)
        .unique(subset=KEY, keep="first", maintain_order=True)
        .sort("_pos")
        .drop("_pos")
    )


def copy_readings(
    cur: psycopg.Cursor[Any],
    frame: pl.DataFrame,
    method: CopyMethod = "binary",
    *,
    table: str = STAGE,
    payload: bytes | None = None,
) -> None:
    """COPY a staging-typed frame into `table` (the staging table by default).

    `payload`: the binary COPY buffer of `frame` already built by `encode_binary_copy`
    (method "binary" only), so the fallback does not encode the batch twice.
    """
    if method == "binary":
        if payload is None:
            payload = encode_binary_copy(frame, STAGE_COLUMNS)
        with cur.copy(f"COPY {table} ({_NAMES}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(payload)
    elif method == "rows":
        with cur.copy(f"COPY {table} ({_NAMES}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types([pg for _, pg in STAGE_COLUMNS])
            for row in frame.iter_rows():
                copy.write_row(row)
    elif method == "csv":
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(
            frame.to_arrow(),
            sink,
            pa_csv.WriteOptions(include_header=False, quoting_style="all_valid"),
        )
        with cur.copy(f"COPY {table} ({_NAMES}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(sink.getvalue().to_pybytes())
    else:
        raise ValueError(f"unknown COPY method {method!r}")


class ReadingWriter:
    """Writes normalised readings and dead letters; one transaction per `write`, idempotent.

    `conninfo` is a libpq URL/DSN. With `pool` (a `psycopg_pool.ConnectionPool`) connections
    are borrowed per batch; without, the writer keeps one connection of its own and reconnects
    after a failure. Thread-safe (a lock serialises writes on the own connection).

    `fast_path=False` always uses the staging path. `holdoff=True`: after a batch that
    conflicted with stored rows (redelivery comes in bursts) the next batches go straight to
    the staging path, until one of them is conflict-free; False = always try the fast path.
    `path_counts` counts the batches per path: "direct" (fast path), "fallback" (fast path
    failed, then staging), "staging" (staging directly).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        pool: Any = None,
        metrics: IngestMetrics | None = None,
        copy_method: CopyMethod = "binary",
        connect_timeout: int = 5,
        fast_path: bool = True,
        holdoff: bool = True,
    ) -> None:
        self.conninfo = conninfo
        self.pool = pool
        self.metrics = metrics
        self.copy_method: CopyMethod = copy_method
        self.connect_timeout = connect_timeout
        self.fast_path = fast_path
        self.holdoff = holdoff
        self.path_counts: dict[WritePath, int] = {"direct": 0, "fallback": 0, "staging": 0}
        self._last_conflicted = False
        self._state_lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._staged: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    # ------------------------------------------------------------------ connections
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self.pool is not None:
            with self.pool.connection() as conn:
                yield conn
            return
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self.conninfo, connect_timeout=self.connect_timeout)
            try:
                yield self._conn
            except BaseException:
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ReadingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_stage(self, conn: psycopg.Connection[Any]) -> None:
        if conn in self._staged:
            return
        with conn.transaction():
            conn.execute(_CREATE_STAGE)
        self._staged.add(conn)

    # ------------------------------------------------------------------ writing
    def write(self, readings: pl.DataFrame, dead_letters: Sequence[DeadLetter] = ()) -> WriteResult:
        """Store a batch in one transaction; returns what was inserted vs. already present."""
        started = time.perf_counter()
        frame: pl.DataFrame | None = None
        if readings.height:
            frame, rejected = split_invalid(_stage_frame(readings), datetime.now(UTC))
            if rejected:
                dead_letters = [*dead_letters, *rejected]
            if frame.height == 0:
                frame = None
        unique = dedupe_batch(frame) if frame is not None else None
        try:
            with self._connection() as conn:
                inserted = self._write(conn, unique, dead_letters)
        except psycopg.Error:
            if self.metrics is not None:
                self.metrics.db_errors.inc()
            raise
        seconds = time.perf_counter() - started
        given = frame.height if frame is not None else 0
        result = WriteResult(inserted, given - inserted, len(dead_letters), seconds)
        if self.metrics is not None:
            self.metrics.observe_write(result, frame, dead_letters)
        return result

    def _write(
        self,
        conn: psycopg.Connection[Any],
        frame: pl.DataFrame | None,
        dead_letters: Sequence[DeadLetter],
    ) -> int:
        from storage.partitions import ensure_partitions

        if frame is not None:
            self._ensure_stage(conn)
            start, end = frame["observed_at"].min(), frame["observed_at"].max()
            if isinstance(start, datetime) and isinstance(end, datetime):
                # Outside the batch transaction so that storage caches the known days.
                ensure_partitions(conn, start.astimezone(UTC), end.astimezone(UTC))
        inserted = 0
        with conn.transaction(), conn.cursor() as cur:
            if frame is not None:
                inserted = self._insert(conn, cur, frame)
            if dead_letters:
                cur.executemany(_INSERT_DEAD, [_dead_letter_params(d) for d in dead_letters])
        return inserted

    def _insert(
        self, conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any], frame: pl.DataFrame
    ) -> int:
        """Insert a key-unique frame inside the open transaction; returns the rows inserted."""
        payload = encode_binary_copy(frame, STAGE_COLUMNS) if self.copy_method == "binary" else None
        path: WritePath = "staging"
        if self.fast_path and not (self.holdoff and self._last_conflicted):
            try:
                with conn.transaction():  # SAVEPOINT; an error rolls back to it
                    copy_readings(cur, frame, self.copy_method, table=READINGS, payload=payload)
            except psycopg.errors.UniqueViolation:
                path = "fallback"  # redelivered / replayed rows: collapse them below
            except psycopg.errors.FeatureNotSupported as exc:
                # COPY FROM is refused under row-level security (a kota_ingest member):
                # this role can only INSERT, so stop trying.
                log.warning("ingest fast path disabled: %s", exc.diag.message_primary or exc)
                self.fast_path = False
                path = "fallback"
            else:
                self._count("direct", conflicted=False)
                return frame.height  # COPY inserts every row or fails
        copy_readings(cur, frame, self.copy_method, table=STAGE, payload=payload)
        cur.execute(_INSERT)
        inserted = max(cur.rowcount, 0)
        self._count(path, conflicted=path == "fallback" or inserted < frame.height)
        return inserted

    def _count(self, path: WritePath, *, conflicted: bool) -> None:
        with self._state_lock:
            self.path_counts[path] += 1
            self._last_conflicted = conflicted
