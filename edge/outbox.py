"""The durable outbox: every reading is committed to SQLite before anything else happens.

One row per driver hand-off (`put`): the samples of one `sink(device_id, samples)` call as
columnar JSON, in one small transaction. Rows leave only when the broker has acknowledged
the MQTT message that carried them (`ack`, on QoS 1 PUBACK with a success reason code).
Rows handed to the uplink but not yet acknowledged are "in flight" in memory only: after a
restart every row still in the file is by definition un-acknowledged and is sent again.

Bounds: the sum of row sizes stays under `max_bytes` and no row is older than `max_age_s`;
the oldest rows go first and every dropped reading is counted, per reason, in the
`counters` table (persisted in the same transaction as the delete) so a drop is never
silent, not even across restarts.

Durability (see docs/edge.md for measurements): WAL journal. `sync="normal"` (default)
never fsyncs on commit; commits survive a crash of the process (kill -9, OOM) but a power
loss can roll back the commits made since the last checkpoint, which `checkpoint()` bounds
(the agent calls it every `outbox.checkpoint_s`, 10 s by default). The file is never
corrupted either way. `sync="full"` fsyncs the WAL on every commit: nothing committed is
lost on power loss, at the price of one SD-card fsync per driver hand-off.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.schema import Sample
from kota_cli.errors import KotaError

log = logging.getLogger("kota.edge.outbox")

#: Bytes counted per row on top of its payload (ids, device, site, driver, index entry).
ROW_OVERHEAD = 64
#: Before this moment (2024-01-01 UTC) the clock is not set (a Pi has no RTC): rows stamped
#: earlier are never expired by age, only by size.
SANE_EPOCH = 1_704_067_200.0
DROP_REASONS = ("size", "age", "write_error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    site TEXT NOT NULL,
    driver TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    n INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_device ON outbox (device_id, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
SCHEMA_VERSION = "1"


class OutboxError(KotaError):
    """The outbox file cannot be opened or used."""


@dataclass(frozen=True, slots=True)
class Row:
    """One driver hand-off read back from the outbox."""

    id: int
    device_id: str
    site: str
    driver: str
    enqueued_at: float
    samples: list[Sample]


@dataclass(frozen=True)
class OutboxStats:
    """What the heartbeat and the metrics report."""

    rows: int
    readings: int
    bytes: int
    oldest_age_s: float
    inflight_rows: int
    dropped: dict[str, int]  # reason -> readings dropped, ever (persisted)
    dropped_rows: dict[str, int]


@dataclass
class _Head:
    """Per-device state of the rows not yet handed to the uplink (a hint kept in memory)."""

    cursor: int = 0  # highest row id handed to the uplink since open / last release
    rows: int = 0
    readings: int = 0
    oldest: float | None = None  # enqueued_at of the oldest pending row
    inflight_rows: int = 0


def pack_samples(samples: Sequence[Sample]) -> bytes:
    """Columnar JSON: [quantities, values, units, observed_us, flags]."""
    return json.dumps(
        [
            [s.quantity for s in samples],
            [s.value for s in samples],
            [s.unit for s in samples],
            [s.observed_us for s in samples],
            [s.flags for s in samples],
        ],
        separators=(",", ":"),
        allow_nan=True,
    ).encode()


def unpack_samples(payload: bytes) -> list[Sample]:
    q, v, u, t, f = json.loads(payload)
    return [Sample(*cols) for cols in zip(q, v, u, t, f, strict=True)]


class Outbox:
    """A bounded, ordered, crash-safe queue of sample batches in one SQLite file.

    Thread-safe: drivers call `put` from their own threads while the uplink calls
    `due`/`take`/`ack` from its thread; one connection is shared under a lock, which is
    the fastest arrangement for SQLite on one small disk.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_bytes: int = 512 * 1024 * 1024,
        max_age_s: float = 14 * 86_400.0,
        sync: str = "normal",
        clock: Callable[[], float] = time.time,
        on_put: Callable[[str, int, bool], None] | None = None,
        exclusive: bool = True,
        max_row_readings: int = 500,
    ) -> None:
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.sync = sync
        self.clock = clock
        self.on_put = on_put
        self.max_row_readings = max(1, max_row_readings)
        self._lock = threading.RLock()
        self._slack = min(max_bytes // 1000, 64 * 1024)
        self._heads: dict[str, _Head] = {}
        self._rows = self._readings = self._bytes = 0
        self._counters: dict[str, int] = {}
        self._unpersisted: dict[str, int] = {}
        self._lockfile: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutboxError(
                f"outbox: cannot create {self.path.parent}: {err.strerror or err}"
            ) from None
        if exclusive:
            self._take_lockfile()
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as err:
            self._release_lockfile()
            raise OutboxError(f"outbox: cannot open {self.path}: {err}") from None
        self._load()

    # ------------------------------------------------------------------ open / close

    def _take_lockfile(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutboxError(
                f"outbox {self.path} is in use by another agent (pid {other or '?'}); "
                "stop it first (systemctl stop kota-edge)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lockfile = fd

    def _release_lockfile(self) -> None:
        if self._lockfile is not None:
            os.close(self._lockfile)
            self._lockfile = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(
                f"WAL journal not supported on this filesystem (got {mode})"
            )
        db.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'full' else 'NORMAL'}")
        db.execute(
            "PRAGMA journal_size_limit=8388608"
        )  # truncate the WAL to 8 MiB after checkpoints
        db.execute("PRAGMA busy_timeout=10000")
        db.executescript(_SCHEMA)
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
        )
        return db

    def _load(self) -> None:
        """Totals and per-device heads from the file (every row is pending after open)."""
        self._heads.clear()
        self._rows = self._readings = self._bytes = 0
        for device, rows, readings, size, oldest in self._db.execute(
            "SELECT device_id, COUNT(*), SUM(n), SUM(length(payload)), MIN(enqueued_at) "
            "FROM outbox GROUP BY device_id"
        ):
            self._heads[device] = _Head(rows=rows, readings=readings, oldest=oldest)
            self._rows += rows
            self._readings += readings
            self._bytes += size + ROW_OVERHEAD * rows
        self._counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_db", None) is None:
                return
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None  # type: ignore[assignment]
            self._release_lockfile()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ writing

    def put(self, device_id: str, site: str, driver: str, samples: Sequence[Sample]) -> int | None:
        """Commit one batch of samples in one transaction; returns its (last) row id, or None
        when the write failed.

        A hand-off larger than `max_row_readings` is split into several rows so that any row
        fits in one uplink message. A failed write (disk full, I/O error) is counted as
        dropped (`write_error`) and logged; it never raises into the driver.
        """
        if not samples:
            return None
        step = self.max_row_readings
        parts = [
            (pack_samples(samples[i : i + step]), len(samples[i : i + step]))
            for i in range(0, len(samples), step)
        ]
        size = sum(len(payload) + ROW_OVERHEAD for payload, _ in parts)
        n = len(samples)
        now = self.clock()
        with self._lock:
            try:
                with self._tx() as db:
                    dropped = self._make_room(db, size)
                    for payload, count in parts:
                        row_id = db.execute(
                            "INSERT INTO outbox (device_id, site, driver, enqueued_at, n, payload) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            (device_id, site, driver, now, count, payload),
                        ).lastrowid
                    added = self._write_counters(db, dropped, "size")
            except sqlite3.Error as err:
                self._count_unpersisted("write_error", n)
                log.error("outbox: write of %d readings from %s failed: %s", n, device_id, err)
                return None
            self._committed(added)
            self._forget(dropped)
            head = self._heads.setdefault(device_id, _Head())
            first = head.oldest is None
            head.rows += len(parts)
            head.readings += n
            if first:
                head.oldest = now
            self._rows += len(parts)
            self._readings += n
            self._bytes += size
            pending = head.readings
        if dropped:
            log.warning(
                "outbox full (%d bytes): dropped %d oldest readings",
                self.max_bytes,
                sum(d[2] for d in dropped),
            )
        if self.on_put is not None:
            self.on_put(device_id, pending, first)
        assert row_id is not None
        return row_id

    def _make_room(self, db: sqlite3.Connection, size: int) -> list[tuple[int, str, int, int]]:
        """Delete the oldest rows so that `size` more bytes fit; returns what was deleted."""
        excess = self._bytes + size - self.max_bytes
        if excess <= 0:
            return []
        excess += self._slack
        freed, last_id = 0, None
        after = -1
        while freed < excess:
            chunk = db.execute(
                "SELECT id, length(payload) FROM outbox WHERE id > ? ORDER BY id LIMIT 512",
                (after,),
            ).fetchall()
            if not chunk:
                break
            for row_id, length in chunk:
                freed += length + ROW_OVERHEAD
                last_id = row_id
                if freed >= excess:
                    break
            after = chunk[-1][0]
        if last_id is None:
            return []
        return db.execute(
            "DELETE FROM outbox WHERE id <= ? RETURNING id, device_id, n, length(payload)",
            (last_id,),
        ).fetchall()

    def _write_counters(
        self,
        db: sqlite3.Connection,
        dropped: Sequence[tuple[int, str, int, int]],
        reason: str,
    ) -> dict[str, int]:
        """Add drops (and counts that could not be written before) to `counters` in `db`'s
        transaction; returns the new drops, for `_committed` once the commit succeeded."""
        added: dict[str, int] = {}
        if dropped:
            added[f"dropped_readings.{reason}"] = sum(d[2] for d in dropped)
            added[f"dropped_rows.{reason}"] = len(dropped)
        rows = dict(added)
        for name, value in self._unpersisted.items():
            rows[name] = rows.get(name, 0) + value
        if rows:
            db.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                list(rows.items()),
            )
        return added

    def _committed(self, added: dict[str, int]) -> None:
        for name, value in added.items():
            self._counters[name] = self._counters.get(name, 0) + value
        self._unpersisted.clear()

    def _count_unpersisted(self, reason: str, readings: int) -> None:
        """A drop that could not be written yet: counted now, persisted with the next commit."""
        for name, value in (
            (f"dropped_readings.{reason}", readings),
            (f"dropped_rows.{reason}", 1),
        ):
            self._counters[name] = self._counters.get(name, 0) + value
            self._unpersisted[name] = self._unpersisted.get(name, 0) + value

    def _forget(self, deleted: Sequence[tuple[int, str, int, int]]) -> None:
        """Update totals and heads after rows were deleted (dropped or acknowledged)."""
        for row_id, device, n, length in deleted:
            self._rows -= 1
            self._readings -= n
            self._bytes -= length + ROW_OVERHEAD
            head = self._heads.get(device)
            if head is None:
                continue
            if row_id > head.cursor:
                head.rows = max(0, head.rows - 1)
                head.readings = max(0, head.readings - n)
                if head.rows == 0:
                    head.oldest = None
            else:
                head.inflight_rows = max(0, head.inflight_rows - 1)

    # ------------------------------------------------------------------ reading

    def due(
        self, now: float, max_readings: int, max_age_s: float, *, flush: bool = False
    ) -> list[str]:
        """Devices whose pending readings should be sent now, oldest first."""
        with self._lock:
            ready = [
                (head.oldest, device)
                for device, head in self._heads.items()
                if head.rows > 0
                and head.oldest is not None
                and (flush or head.readings >= max_readings or now - head.oldest >= max_age_s)
            ]
        ready.sort()
        return [device for _, device in ready]

    def next_due_in(self, now: float, max_age_s: float) -> float | None:
        """Seconds until the next device becomes due by age (None when nothing is pending)."""
        with self._lock:
            oldest = [h.oldest for h in self._heads.values() if h.rows > 0 and h.oldest is not None]
        if not oldest:
            return None
        return max(0.0, min(oldest) + max_age_s - now)

    def take(self, device_id: str, max_readings: int) -> list[Row]:
        """The device's oldest pending rows (up to `max_readings` readings, at least one row),
        now marked in flight. Rows in one take share site and driver."""
        with self._lock:
            head = self._heads.get(device_id)
            if head is None or head.rows == 0:
                return []
            cur = self._db.execute(
                "SELECT id, site, driver, enqueued_at, n, payload FROM outbox "
                "WHERE device_id = ? AND id > ? ORDER BY id LIMIT ?",
                (device_id, head.cursor, max_readings + 1),
            )
            rows: list[Row] = []
            readings = 0
            next_oldest: float | None = None
            for row_id, site, driver, enqueued_at, n, payload in cur:
                if rows and (
                    readings + n > max_readings or (site, driver) != (rows[0].site, rows[0].driver)
                ):
                    next_oldest = enqueued_at
                    break
                rows.append(
                    Row(row_id, device_id, site, driver, enqueued_at, unpack_samples(payload))
                )
                readings += n
            cur.close()
            if not rows:
                head.rows = head.readings = 0
                head.oldest = None
                return []
            head.cursor = rows[-1].id
            head.inflight_rows += len(rows)
            if next_oldest is None:
                head.rows = head.readings = 0
                head.oldest = None
            else:
                head.rows = max(1, head.rows - len(rows))
                head.readings = max(1, head.readings - readings)
                head.oldest = next_oldest
            return rows

    def release(self, device_id: str, from_id: int) -> None:
        """Rows of the device from `from_id` on are no longer in flight: send them again."""
        with self._lock:
            head = self._heads.setdefault(device_id, _Head())
            head.cursor = min(head.cursor, from_id - 1)
            self._recount(device_id, head)

    def release_all(self) -> None:
        """Forget everything in flight (a fresh MQTT client): every row will be sent again."""
        with self._lock:
            for device, head in self._heads.items():
                head.cursor = 0
                self._recount(device, head)

    def _recount(self, device_id: str, head: _Head) -> None:
        rows, readings, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n), 0), MIN(enqueued_at) FROM outbox "
            "WHERE device_id = ? AND id > ?",
            (device_id, head.cursor),
        ).fetchone()
        inflight = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE device_id = ? AND id <= ?",
            (device_id, head.cursor),
        ).fetchone()[0]
        head.rows, head.readings, head.oldest, head.inflight_rows = rows, readings, oldest, inflight

    def ack(self, row_ids: Sequence[int]) -> int:
        """The broker has these rows: delete them (one transaction). Returns readings removed."""
        if not row_ids:
            return 0
        deleted: list[tuple[int, str, int, int]] = []
        with self._lock, self._tx() as db:
            for start in range(0, len(row_ids), 500):
                chunk = row_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                deleted.extend(
                    db.execute(
                        f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING id, device_id, n, length(payload)",
                        chunk,
                    ).fetchall()
                )
            added = self._write_counters(db, [], "")
        with self._lock:
            self._committed(added)
            self._forget(deleted)
        return sum(d[2] for d in deleted)

    # ------------------------------------------------------------------ maintenance

    def expire(self, now: float | None = None) -> int:
        """Drop rows older than `max_age_s` (counted as reason `age`); returns readings dropped."""
        now = self.clock() if now is None else now
        if now < SANE_EPOCH:
            return 0  # clock not set yet: cannot tell what is old
        cutoff = now - self.max_age_s
        total = 0
        with self._lock:
            after = -1
            for _ in range(1000):
                chunk = self._db.execute(
                    "SELECT id, enqueued_at FROM outbox WHERE id > ? ORDER BY id LIMIT 1000",
                    (after,),
                ).fetchall()
                old = [row_id for row_id, at in chunk if SANE_EPOCH <= at < cutoff]
                stop = not chunk or any(at >= cutoff for _, at in chunk)
                if old:
                    with self._tx() as db:
                        deleted: list[tuple[int, str, int, int]] = []
                        for start in range(0, len(old), 500):
                            part = old[start : start + 500]
                            deleted.extend(
                                db.execute(
                                    f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(part))}) "
                                    "RETURNING id, device_id, n, length(payload)",
                                    part,
                                ).fetchall()
                            )
                        added = self._write_counters(db, deleted, "age")
                    self._committed(added)
                    self._forget(deleted)
                    total += sum(d[2] for d in deleted)
                if stop:
                    break
                after = chunk[-1][0]
        if total:
            log.warning(
                "outbox: dropped %d readings older than %.1f days", total, self.max_age_s / 86_400
            )
        return total

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (fsyncs both): bounds what a power loss can undo."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # ------------------------------------------------------------------ reporting

    def stats(self) -> OutboxStats:
        with self._lock:
            first = self._db.execute(
                "SELECT enqueued_at FROM outbox ORDER BY id LIMIT 1"
            ).fetchone()
            oldest_age = max(0.0, self.clock() - first[0]) if first else 0.0
            dropped = {r: self._counters.get(f"dropped_readings.{r}", 0) for r in DROP_REASONS}
            dropped_rows = {r: self._counters.get(f"dropped_rows.{r}", 0) for r in DROP_REASONS}
            return OutboxStats(
                rows=self._rows,
                readings=self._readings,
                bytes=self._bytes,
                oldest_age_s=oldest_age,
                inflight_rows=sum(h.inflight_rows for h in self._heads.values()),
                dropped=dropped,
                dropped_rows=dropped_rows,
            )

    def dropped(self) -> dict[str, int]:
        """Readings dropped ever, per reason (persisted across restarts)."""
        return self.stats().dropped

    def rows(self, device_id: str | None = None) -> list[Row]:
        """Every row still in the outbox, in order (diagnostics and tests)."""
        sql = "SELECT id, device_id, site, driver, enqueued_at, payload FROM outbox"
        args: tuple[Any, ...] = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args = (device_id,)
        with self._lock:
            return [
                Row(i, d, s, k, at, unpack_samples(p))
                for i, d, s, k, at, p in self._db.execute(sql + " ORDER BY id", args)
            ]
