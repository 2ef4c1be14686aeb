"""Prometheus metrics of the ingest path (registry injectable for tests)."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from gateway.schema import DeadLetter

if TYPE_CHECKING:
    from ingest.writer import WriteResult

BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class IngestMetrics:
    """The `kota_ingest_*` metrics, registered in `registry` (default: the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self.readings_written = Counter(
            "kota_ingest_readings_written",
            "Readings inserted into the readings table.",
            registry=reg,
        )
        self.duplicates = Counter(
            "kota_ingest_duplicates",
            "Readings already stored (redelivery, replay), skipped.",
            registry=reg,
        )
        self.dead_letters = Counter(
            "kota_ingest_dead_letters", "Dead letters stored, by reason.", ["reason"], registry=reg
        )
        self.batch_size = Histogram(
            "kota_ingest_batch_size",
            "Readings per written batch.",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.commit_seconds = Histogram(
            "kota_ingest_commit_seconds",
            "Wall time of one write transaction (COPY..commit).",
            buckets=COMMIT_BUCKETS,
            registry=reg,
        )
        self.lag_seconds = Histogram(
            "kota_ingest_lag_seconds",
            "Commit time minus observed_at, per reading.",
            buckets=LAG_BUCKETS,
            registry=reg,
        )
        self.db_errors = Counter(
            "kota_ingest_db_errors",
            "Failed write transactions (batch retried, not acked).",
            registry=reg,
        )
        self.unacked = Gauge(
            "kota_ingest_unacked_messages",
            "MQTT messages received but not yet acknowledged.",
            registry=reg,
        )

    def observe_write(
        self, result: WriteResult, frame: pl.DataFrame | None, dead: Sequence[DeadLetter]
    ) -> None:
        self.readings_written.inc(result.inserted)
        self.duplicates.inc(result.duplicates)
        for reason, n in Tally(d.reason for d in dead).items():
            self.dead_letters.labels(reason=reason).inc(n)
        self.commit_seconds.observe(result.seconds)
        if frame is None or frame.height == 0:
            return
        self.batch_size.observe(frame.height)
        now_us = int(time.time() * 1_000_000)
        lags = ((now_us - frame["observed_at"].dt.epoch("us").to_numpy()) / 1e6).clip(0.0, None)
        observe_many(self.lag_seconds, lags)


def observe_many(hist: Histogram, values: np.ndarray) -> None:
    """Histogram.observe for a whole array: one bucket search in numpy, one inc per bucket."""
    buckets = getattr(hist, "_buckets", None)
    upper = getattr(hist, "_upper_bounds", None)
    total = getattr(hist, "_sum", None)
    if buckets is None or upper is None or total is None:  # internals changed: slow path
        for value in values.tolist():
            hist.observe(value)
        return
    index = np.searchsorted(np.asarray(upper, dtype=float), values, side="left")
    for i, n in zip(*np.unique(index, return_counts=True), strict=True):
        buckets[int(i)].inc(int(n))
    total.inc(float(values.sum()))
