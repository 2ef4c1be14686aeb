"""A dead letter: input that could not become a reading, kept with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_KEPT_PAYLOAD = 64 * 1024  # raw bytes kept per dead letter; the rest is cut (length noted)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message or row.

    `reason` is a stable code (e.g. `invalid_json`, `unknown_device`, `future_timestamp`,
    listed in docs/quality-flags.md); `detail` is a human sentence. For a whole rejected
    message `payload` holds its raw bytes (cut to MAX_KEPT_PAYLOAD) and `row` is None; for a
    single rejected row `row` holds that row and `payload` is None.
    """

    received_at: datetime
    reason: str
    detail: str
    topic: str | None = None
    city: str | None = None
    site: str | None = None
    device: str | None = None
    payload: bytes | None = None
    row: dict[str, Any] | None = None

    @staticmethod
    def cut(payload: bytes) -> bytes:
        return payload[:MAX_KEPT_PAYLOAD]
