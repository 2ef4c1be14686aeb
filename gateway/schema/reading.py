"""The normalised reading: one row of `readings`, identical in every city."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Column order of the normalised table everywhere (gateway batches, COPY, Parquet).
READING_COLUMNS: tuple[str, ...] = (
    "city",
    "site",
    "device",
    "quantity",
    "value",
    "unit",
    "raw_value",
    "observed_at",
    "received_at",
    "flags",
    "source",
)


@dataclass(frozen=True, slots=True)
class Reading:
    """A normalised reading.

    Identity is (device, quantity, observed_at): the same reading delivered twice collapses
    to one row downstream. `value` is in the quantity's canonical UCUM unit, calibrated;
    `raw_value` is the same measurement in the canonical unit before calibration.
    `observed_at`/`received_at` are timezone-aware UTC datetimes with microsecond precision.
    """

    city: str
    site: str
    device: str
    quantity: str
    value: float
    unit: str
    raw_value: float
    observed_at: datetime
    received_at: datetime
    flags: int
    source: str

    @property
    def key(self) -> tuple[str, str, datetime]:
        return (self.device, self.quantity, self.observed_at)
