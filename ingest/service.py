"""The `kota ingest run` handler: reading-v1 JSON Lines from the normalised topic -> database.

Used where gateway and ingest run as separate processes: the gateway publishes normalised
readings on `kota/v1/normalized/{city}` (payload = JSON Lines of reading-v1 objects) and
this handler writes each MQTT batch in one transaction. A payload or line that is not a
valid reading becomes a dead letter (`invalid_reading`), never a batch that fails forever.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import polars as pl

from gateway.schema import READING_COLUMNS, DeadLetter
from ingest.writer import ReadingWriter, WriteResult

NORMALIZED_FILTER = "kota/v1/normalized/#"
DEAD_REASON = "invalid_reading"

_JSON_SCHEMA: dict[str, Any] = {
    "city": pl.Utf8,
    "site": pl.Utf8,
    "device": pl.Utf8,
    "quantity": pl.Utf8,
    "value": pl.Float64,
    "unit": pl.Utf8,
    "raw_value": pl.Float64,
    "observed_at": pl.Utf8,
    "received_at": pl.Utf8,
    "flags": pl.Int64,
    "source": pl.Utf8,
}
assert tuple(_JSON_SCHEMA) == READING_COLUMNS


class _Message(Protocol):
    @property
    def topic(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


def _frame(jsonl: bytes) -> pl.DataFrame:
    raw = pl.read_ndjson(io.BytesIO(jsonl), schema=_JSON_SCHEMA)
    return raw.with_columns(
        pl.col("observed_at").str.to_datetime(time_unit="us", time_zone="UTC", strict=False),
        pl.col("received_at").str.to_datetime(time_unit="us", time_zone="UTC", strict=False),
    )


def _check_lines(message: _Message, now: datetime) -> tuple[list[bytes], list[DeadLetter]]:
    good: list[bytes] = []
    dead: list[DeadLetter] = []
    for line in message.payload.splitlines():
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            if not isinstance(obj, dict) or set(obj) != set(READING_COLUMNS):
                raise ValueError("not a reading-v1 object (wrong or missing keys)")
            _frame(line)
        except Exception as err:
            dead.append(
                DeadLetter(
                    received_at=now,
                    reason=DEAD_REASON,
                    detail=f"{type(err).__name__}: {err}"[:500],
                    topic=message.topic,
                    payload=DeadLetter.cut(line),
                )
            )
            continue
        good.append(line)
    return good, dead


def parse_readings(
    messages: Sequence[_Message], now: datetime | None = None
) -> tuple[pl.DataFrame, list[DeadLetter]]:
    """reading-v1 JSON Lines payloads -> (readings frame, dead letters)."""
    now = now or datetime.now(UTC)
    body = b"\n".join(m.payload.rstrip(b"\n") for m in messages if m.payload.strip())
    if not body:
        return pl.DataFrame(schema=_JSON_SCHEMA), []
    try:
        frame = _frame(body)
        # every line must be an object with exactly the reading-v1 keys
        if frame.height != sum(1 for m in messages for ln in m.payload.splitlines() if ln.strip()):
            raise ValueError("line count mismatch")
        bad_keys = any(
            set(orjson.loads(m.payload.splitlines()[0])) != set(READING_COLUMNS)
            for m in messages
            if m.payload.strip()
        )
        if bad_keys:
            raise ValueError("unexpected keys")
        return frame, []
    except Exception:
        pass  # slow path: find the bad lines
    lines: list[bytes] = []
    dead: list[DeadLetter] = []
    for message in messages:
        good, bad = _check_lines(message, now)
        lines.extend(good)
        dead.extend(bad)
    if not lines:
        return pl.DataFrame(schema=_JSON_SCHEMA), dead
    return _frame(b"\n".join(lines)), dead


class ReadingsHandler:
    """Batch handler: parse normalised readings and write them (raises -> no ack, retry)."""

    def __init__(self, writer: ReadingWriter) -> None:
        self.writer = writer
        self.last: WriteResult | None = None
        self.totals = {"messages": 0, "inserted": 0, "duplicates": 0, "dead_letters": 0}

    def __call__(self, messages: Sequence[_Message]) -> None:
        frame, dead = parse_readings(messages)
        result = self.writer.write(frame, dead)
        self.last = result
        self.totals["messages"] += len(messages)
        self.totals["inserted"] += result.inserted
        self.totals["duplicates"] += result.duplicates
        self.totals["dead_letters"] += result.dead_letters
