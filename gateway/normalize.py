"""Normalise a batch of uplink messages into canonical readings plus dead letters.

Pipeline (docs/gateway.md has the long version):

1. Decode every message with `decode_uplink` (orjson). A message that cannot be trusted
   becomes one dead letter with its raw payload; a bad row becomes one dead letter with the
   row; its batch-mates carry on.
2. Concatenate the decoded columns of all messages into ONE polars DataFrame. Everything after
   this is a columnar expression or a join: registry checks, unit conversion (a join against
   the handful of distinct (quantity, unit) pairs in the batch), time checks, calibration
   (an as-of join), the derived PurpleAir PM2.5 correction, and quality control.
3. Rows that fail a check leave as dead letters with a stable reason code; the rest come out
   with exactly `READING_COLUMNS` and the contract dtypes.

`Normalizer` keeps the QC state (spike/flat-line memory) across batches and is what the
gateway service uses; `normalize_batch` is the stateless one-shot form.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import polars as pl

from gateway.devices import DeviceRegistry
from gateway.qc import QcState, flag_range
from gateway.schema.deadletter import DeadLetter
from gateway.schema.flags import QualityFlag
from gateway.schema.quantities import QUANTITIES
from gateway.schema.reading import READING_COLUMNS
from gateway.schema.uplink import (
    UplinkBatch,
    UplinkError,
    decode_uplink,
    parse_topic,
    to_epoch_us,
    uplink_topic,
)
from gateway.units import conversion

READING_SCHEMA: dict[str, pl.DataType] = {
    "city": pl.Utf8(),
    "site": pl.Utf8(),
    "device": pl.Utf8(),
    "quantity": pl.Utf8(),
    "value": pl.Float64(),
    "unit": pl.Utf8(),
    "raw_value": pl.Float64(),
    "observed_at": pl.Datetime("us", "UTC"),
    "received_at": pl.Datetime("us", "UTC"),
    "flags": pl.Int16(),
    "source": pl.Utf8(),
}
assert tuple(READING_SCHEMA) == READING_COLUMNS

# Bits only the gateway may set: an edge cannot claim its value was calibrated or derived here.
GATEWAY_ONLY = int(QualityFlag.CALIBRATED | QualityFlag.DERIVED)
# Flags a derived reading inherits from its inputs.
INHERITED = int(QualityFlag.CLOCK_SUSPECT | QualityFlag.DEVICE_WARNING | QualityFlag.LATE)
_I64_SAFE = 2**62

# Barkjohn et al. (2021), US EPA correction for PurpleAir PM2.5 (CF=1, RH in %).
PA_SLOPE, PA_RH, PA_INTERCEPT = 0.524, -0.0862, 5.75
DERIVED_QUANTITY = "pm2_5_corrected"

REASON_DETAIL = {
    "unknown_device": "device is not registered (kota devices add/import)",
    "retired_device": "device was retired before this reading was observed",
    "device_city_mismatch": "topic city/site differ from the device's registered city/site",
    "unknown_quantity": "quantity is not in the catalogue (kota quantities)",
    "undeclared_quantity": "device does not declare this quantity",
    "incompatible_unit": "unit cannot be converted to the quantity's canonical unit",
    "future_timestamp": "observed_at is too far in the future",
    "ancient_timestamp": "observed_at is older than the accepted horizon",
}


class Message(Protocol):
    """What the MQTT consumer hands over: a topic and the raw payload."""

    @property
    def topic(self) -> str | None: ...

    @property
    def payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A plain Message (offline normalisation, tests, benchmarks)."""

    topic: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class NormalizeConfig:
    """Tunable rules; defaults documented in docs/gateway.md and docs/quality-flags.md."""

    future_s: float = 300.0  # reject more than this in the future
    horizon_days: float = 400.0  # reject older than this
    late_s: float = 3600.0  # LATE when received this long after observed
    clock_skew_s: float = 300.0  # CLOCK_SUSPECT tolerance between device, edge and gateway
    purpleair_correction: bool = True  # derive pm2_5_corrected


@dataclass(slots=True)
class NormalizedBatch:
    """Readings (READING_COLUMNS, contract dtypes), dead letters and counters."""

    readings: pl.DataFrame
    dead_letters: list[DeadLetter]
    stats: dict[str, Any] = field(default_factory=dict)


def empty_readings() -> pl.DataFrame:
    return pl.DataFrame(schema=READING_SCHEMA)


def _catalogue_frame() -> pl.DataFrame:
    qs = list(QUANTITIES.values())
    return pl.DataFrame(
        {
            "quantity": [q.name for q in qs],
            "canon_unit": [q.ucum for q in qs],
            "q_min": [q.min for q in qs],
            "q_max": [q.max for q in qs],
            "max_step": [q.max_step for q in qs],
            "flatline_n": [q.flatline_n for q in qs],
        }
    )


_CATALOGUE = _catalogue_frame()


def _conversion_frame(pairs: pl.DataFrame) -> pl.DataFrame:
    """factor/offset for each distinct (quantity, unit) of the batch (a few dozen at most)."""
    qs, us, known, factors, offsets = [], [], [], [], []
    for q, u in pairs.iter_rows():
        conv = conversion(q, u)
        qs.append(q)
        us.append(u)
        known.append(q in QUANTITIES)
        factors.append(conv.factor if conv else None)
        offsets.append(conv.offset if conv else None)
    return pl.DataFrame(
        {"quantity": qs, "unit": us, "q_known": known, "factor": factors, "u_offset": offsets},
        schema={
            "quantity": pl.Utf8,
            "unit": pl.Utf8,
            "q_known": pl.Boolean,
            "factor": pl.Float64,
            "u_offset": pl.Float64,
        },
    )


def _safe(value: Any, depth: int = 0) -> Any:
    """A JSON/jsonb-safe copy of a rejected row: no NaN/Inf, long strings cut."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
        return str(value)[:40]
    if isinstance(value, str):
        return value[:200]
    if depth > 3:
        return repr(value)[:200]
    if isinstance(value, dict):
        return {str(k)[:64]: _safe(v, depth + 1) for k, v in list(value.items())[:20]}
    if isinstance(value, list):
        return [_safe(v, depth + 1) for v in value[:20]]
    return value


def _us_to_iso(us: int) -> str:
    try:
        return datetime.fromtimestamp(us / 1e6, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(us)


class _Columns:
    """Decoded columns of all messages, concatenated (plain lists, extended per message)."""

    def __init__(self) -> None:
        self.city: list[str] = []
        self.site: list[str] = []
        self.device: list[str] = []
        self.source: list[str] = []
        self.sent_us: list[int | None] = []
        self.quantity: list[str] = []
        self.value: list[float] = []
        self.unit: list[str] = []
        self.observed_us: list[int] = []
        self.flags: list[int] = []

    def add(self, b: UplinkBatch) -> None:
        n = len(b)
        self.city += [b.city] * n
        self.site += [b.site] * n
        self.device += [b.device] * n
        self.source += [b.driver] * n
        self.sent_us += [b.sent_us if b.sent_us is None or abs(b.sent_us) < _I64_SAFE else None] * n
        self.quantity += b.quantity
        self.value += b.value
        self.unit += b.unit
        self.observed_us += b.observed_us
        self.flags += b.flags

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "city": self.city,
                "site": self.site,
                "device": self.device,
                "source": self.source,
                "sent_us": self.sent_us,
                "quantity": self.quantity,
                "value": self.value,
                "unit": self.unit,
                "observed_us": self.observed_us,
                "flags": self.flags,
            },
            schema={
                "city": pl.Utf8,
                "site": pl.Utf8,
                "device": pl.Utf8,
                "source": pl.Utf8,
                "sent_us": pl.Int64,
                "quantity": pl.Utf8,
                "value": pl.Float64,
                "unit": pl.Utf8,
                "observed_us": pl.Int64,
                "flags": pl.Int32,
            },
        )


class Normalizer:
    """Stateful normaliser: one per gateway process (QC memory across batches)."""

    def __init__(self, registry: DeviceRegistry, config: NormalizeConfig | None = None) -> None:
        self.registry = registry
        self.config = config or NormalizeConfig()
        self.qc = QcState()

    def normalize(
        self, messages: Sequence[Message], *, now: datetime | None = None
    ) -> NormalizedBatch:
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        now_us = to_epoch_us(now)
        dead: list[DeadLetter] = []
        cols = _Columns()
        rejected_messages = 0
        for msg in messages:
            batch = self._decode(msg, now, dead)
            if batch is None:
                rejected_messages += 1
                continue
            if batch.observed_us and (
                min(batch.observed_us) < -_I64_SAFE or max(batch.observed_us) > _I64_SAFE
            ):
                batch = self._drop_out_of_range_times(batch, now, now_us, dead)
            cols.add(batch)
        rows_in = len(cols.quantity)
        if rows_in == 0:
            readings = empty_readings()
            derived = duplicates = 0
        else:
            readings, derived, duplicates = self._frame_pipeline(cols.frame(), now, now_us, dead)
        reasons = Counter(d.reason for d in dead)
        stats = {
            "messages": len(messages),
            "rejected_messages": rejected_messages,
            "rows": rows_in,
            "readings": readings.height,
            "derived": derived,
            "duplicates": duplicates,
            "dead_letters": len(dead),
            "reasons": dict(reasons),
        }
        return NormalizedBatch(readings, dead, stats)

    # ------------------------------------------------------------------ per message
    def _decode(self, msg: Message, now: datetime, dead: list[DeadLetter]) -> UplinkBatch | None:
        topic = getattr(msg, "topic", None)
        payload: Any = getattr(msg, "payload", b"")
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "replace")
        elif not isinstance(payload, bytes):
            payload = bytes(payload) if isinstance(payload, (bytearray, memoryview)) else b""
        if topic is not None and not isinstance(topic, str):
            topic = str(topic)
        try:
            batch = decode_uplink(payload, topic, loads=orjson.loads)
        except UplinkError as err:
            reason, detail = err.reason, err.detail or err.reason
        except (ValueError, OverflowError, TypeError, RecursionError) as err:
            # decode_uplink raises only UplinkError by contract; keep the gateway alive anyway
            reason, detail = "invalid_uplink", f"{type(err).__name__}: {str(err)[:160]}"
        else:
            for _index, reason, row in batch.rejects:
                dead.append(
                    DeadLetter(
                        received_at=now,
                        reason=reason,
                        detail=f"row {_index}: {reason.replace('_', ' ')}",
                        topic=topic,
                        city=batch.city,
                        site=batch.site,
                        device=batch.device,
                        row=_safe(row),
                    )
                )
            return batch
        where = parse_topic(topic) if topic else None
        city, site, device = where if where else (None, None, None)
        dead.append(
            DeadLetter(
                received_at=now,
                reason=reason,
                detail=detail[:300],
                topic=topic[:256] if topic else None,
                city=city[:64] if city else None,
                site=site[:64] if site else None,
                device=device[:64] if device else None,
                payload=DeadLetter.cut(payload),
            )
        )
        return None

    def _drop_out_of_range_times(
        self, b: UplinkBatch, now: datetime, now_us: int, dead: list[DeadLetter]
    ) -> UplinkBatch:
        """Slow path for absurd integer timestamps that do not even fit 64 bits."""
        keep = [abs(t) < _I64_SAFE for t in b.observed_us]
        for i, ok in enumerate(keep):
            if not ok:
                t = b.observed_us[i]
                reason = "future_timestamp" if t > now_us else "ancient_timestamp"
                dead.append(
                    DeadLetter(
                        received_at=now,
                        reason=reason,
                        detail=REASON_DETAIL[reason],
                        city=b.city,
                        site=b.site,
                        device=b.device,
                        row={
                            "quantity": b.quantity[i],
                            "value": b.value[i],
                            "unit": b.unit[i],
                            "observed_at": str(t)[:40],
                            "flags": b.flags[i],
                        },
                    )
                )
        for name in ("quantity", "value", "unit", "observed_us", "flags", "local_time"):
            column = getattr(b, name)
            setattr(b, name, [x for x, ok in zip(column, keep, strict=False) if ok])
        return b

    # ------------------------------------------------------------------ columnar
    def _frame_pipeline(
        self, df: pl.DataFrame, now: datetime, now_us: int, dead: list[DeadLetter]
    ) -> tuple[pl.DataFrame, int, int]:
        cfg = self.config
        frames = self.registry.frames()
        if not self.registry.accept_unknown:
            unknown = (
                df.select("device")
                .unique()
                .join(frames.devices.select("device"), on="device", how="anti")
            )
            if unknown.height and self.registry.unknown_seen():
                frames = self.registry.frames()
        pairs = df.select("quantity", "unit").unique()
        df = df.join(frames.devices, on="device", how="left").join(
            _conversion_frame(pairs), on=["quantity", "unit"], how="left"
        )
        declared = frames.declared
        if declared.height:
            df = df.join(
                declared.select("device").unique().with_columns(has_decl=pl.lit(True)),
                on="device",
                how="left",
            ).join(
                declared.select("device", "quantity").with_columns(declared=pl.lit(True)),
                on=["device", "quantity"],
                how="left",
            )
        else:
            df = df.with_columns(
                has_decl=pl.lit(None, pl.Boolean), declared=pl.lit(None, pl.Boolean)
            )

        t = pl.col("observed_us")
        registered = pl.col("reg_city").is_not_null()
        reason = (
            pl.when(~registered & (not self.registry.accept_unknown))
            .then(pl.lit("unknown_device"))
            .when(
                registered
                & ((pl.col("reg_city") != pl.col("city")) | (pl.col("reg_site") != pl.col("site")))
            )
            .then(pl.lit("device_city_mismatch"))
            .when(pl.col("retired_us").is_not_null() & (pl.col("retired_us") <= t))
            .then(pl.lit("retired_device"))
            .when(~pl.col("q_known"))
            .then(pl.lit("unknown_quantity"))
            .when(pl.col("has_decl").fill_null(False) & pl.col("declared").is_null())
            .then(pl.lit("undeclared_quantity"))
            .when(pl.col("factor").is_null())
            .then(pl.lit("incompatible_unit"))
            .when(t > now_us + int(cfg.future_s * 1e6))
            .then(pl.lit("future_timestamp"))
            .when(t < now_us - int(cfg.horizon_days * 86_400e6))
            .then(pl.lit("ancient_timestamp"))
        )
        df = df.with_columns(reason=reason)
        bad = df.filter(pl.col("reason").is_not_null())
        if bad.height:
            self._row_dead_letters(bad, now, dead)
            df = df.filter(pl.col("reason").is_null())

        raw = pl.col("value") * pl.col("factor") + pl.col("u_offset")
        late = (now_us - t) > int(cfg.late_s * 1e6)
        skew = int(cfg.clock_skew_s * 1e6)
        clock = pl.col("sent_us").is_not_null() & (
            (pl.col("sent_us") > now_us + skew) | (t > pl.col("sent_us") + skew)
        )
        df = df.with_columns(
            raw_value=raw,
            flags=(pl.col("flags") & ~GATEWAY_ONLY)
            | pl.when(late).then(int(QualityFlag.LATE)).otherwise(0)
            | pl.when(clock).then(int(QualityFlag.CLOCK_SUSPECT)).otherwise(0),
        ).select(
            "city", "site", "device", "source", "quantity", "raw_value", "observed_us", "flags"
        )
        df = self._calibrate(df, frames.calibrations)

        before = df.height
        df = df.unique(["device", "quantity", "observed_us"], keep="first", maintain_order=True)
        duplicates = before - df.height
        derived = 0
        if cfg.purpleair_correction:
            extra = _purpleair(df)
            if extra.height:
                extra = extra.join(
                    df.select("device", "quantity", "observed_us"),
                    on=["device", "quantity", "observed_us"],
                    how="anti",
                )
                derived = extra.height
                df = pl.concat([df, extra], how="vertical")

        df = df.join(_CATALOGUE, on="quantity", how="left")
        df = flag_range(df)
        df = self.qc.apply(df)
        received = pl.lit(now).cast(pl.Datetime("us", "UTC"))
        out = df.select(
            pl.col("city"),
            pl.col("site"),
            pl.col("device"),
            pl.col("quantity"),
            pl.col("value"),
            pl.col("canon_unit").alias("unit"),
            pl.col("raw_value"),
            pl.col("observed_us")
            .cast(pl.Datetime("us"))
            .dt.replace_time_zone("UTC")
            .alias("observed_at"),
            received.alias("received_at"),
            pl.col("flags").cast(pl.Int16),
            pl.col("source"),
        )
        return out, derived, duplicates

    @staticmethod
    def _calibrate(df: pl.DataFrame, cals: pl.DataFrame) -> pl.DataFrame:
        """value = raw_value * gain + offset for the calibration valid at observed_at."""
        if cals.height == 0:
            return df.with_columns(value=pl.col("raw_value"))
        df = df.sort("observed_us").join_asof(
            cals,
            left_on="observed_us",
            right_on="cal_from_us",
            by=["device", "quantity"],
            strategy="backward",
            check_sortedness=False,
        )
        valid = pl.col("gain").is_not_null() & (
            pl.col("cal_to_us").is_null() | (pl.col("observed_us") < pl.col("cal_to_us"))
        )
        return df.with_columns(
            value=pl.when(valid)
            .then(pl.col("raw_value") * pl.col("gain") + pl.col("cal_offset"))
            .otherwise(pl.col("raw_value")),
            flags=pl.col("flags") | pl.when(valid).then(int(QualityFlag.CALIBRATED)).otherwise(0),
        ).drop("cal_from_us", "cal_to_us", "gain", "cal_offset")

    @staticmethod
    def _row_dead_letters(bad: pl.DataFrame, now: datetime, dead: list[DeadLetter]) -> None:
        """One DeadLetter per rejected row (python objects only for the rejects)."""
        for r in bad.select(
            "reason",
            "city",
            "site",
            "device",
            "quantity",
            "value",
            "unit",
            "observed_us",
            "flags",
            "reg_city",
            "reg_site",
        ).iter_rows(named=True):
            detail = REASON_DETAIL[r["reason"]]
            if r["reason"] == "device_city_mismatch":
                detail += f" (registered {r['reg_city']}/{r['reg_site']})"
            elif r["reason"] == "incompatible_unit" and r["quantity"] in QUANTITIES:
                detail += f" ({r['unit']!s:.32} -> {QUANTITIES[r['quantity']].ucum})"
            dead.append(
                DeadLetter(
                    received_at=now,
                    reason=r["reason"],
                    detail=detail,
                    topic=uplink_topic(r["city"], r["site"], r["device"]),
                    city=r["city"],
                    site=r["site"],
                    device=r["device"],
                    row=_safe(
                        {
                            "quantity": r["quantity"],
                            "value": r["value"],
                            "unit": r["unit"],
                            "observed_at": _us_to_iso(r["observed_us"]),
                            "flags": r["flags"],
                        }
                    ),
                )
            )


def _purpleair(df: pl.DataFrame) -> pl.DataFrame:
    """US EPA PurpleAir correction (Barkjohn et al. 2021) as the derived pm2_5_corrected.

    Needs pm2_5_cf1 and relative_humidity of the same device at the same observed_at. Uses the
    uncalibrated CF=1 value (the formula is itself the calibration) and the calibrated RH.
    """
    keys = ["device", "observed_us"]
    cf1 = df.filter(pl.col("quantity") == "pm2_5_cf1")
    if cf1.height == 0:
        return df.clear()
    rh = df.filter(pl.col("quantity") == "relative_humidity").select(
        *keys, rh=pl.col("value"), rh_flags=pl.col("flags")
    )
    joined = cf1.join(rh, on=keys, how="inner")
    corrected = (PA_SLOPE * pl.col("raw_value") + PA_RH * pl.col("rh") + PA_INTERCEPT).clip(
        lower_bound=0.0
    )
    return joined.select(
        "city",
        "site",
        "device",
        (pl.col("source") + "+epa_pa_2021").alias("source"),
        pl.lit(DERIVED_QUANTITY).alias("quantity"),
        corrected.alias("raw_value"),
        "observed_us",
        (((pl.col("flags") | pl.col("rh_flags")) & INHERITED) | int(QualityFlag.DERIVED))
        .cast(pl.Int32)
        .alias("flags"),
        corrected.alias("value"),
    ).select(df.columns)


def normalize_batch(
    messages: Sequence[Message],
    registry: DeviceRegistry,
    *,
    now: datetime | None = None,
    config: NormalizeConfig | None = None,
    qc_state: QcState | None = None,
) -> NormalizedBatch:
    """Normalise one batch (stateless unless a `qc_state` is passed in)."""
    normalizer = Normalizer(registry, config)
    if qc_state is not None:
        normalizer.qc = qc_state
    return normalizer.normalize(messages, now=now)


def readings_to_jsonl(readings: pl.DataFrame) -> bytes:
    """reading-v1 JSON Lines (timestamps ISO 8601 UTC with microseconds and 'Z')."""
    if readings.height == 0:
        return b""
    rows = (
        readings.with_columns(
            pl.col("observed_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.col("received_at").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ"),
            pl.col("flags").cast(pl.Int64),
        )
        .select(READING_COLUMNS)
        .to_dicts()
    )
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def dead_letter_json(d: DeadLetter) -> dict[str, Any]:
    """A dead letter as a JSON-able dict (payload as text, cut)."""
    return {
        "received_at": d.received_at.isoformat(),
        "reason": d.reason,
        "detail": d.detail,
        "topic": d.topic,
        "city": d.city,
        "site": d.site,
        "device": d.device,
        "payload": d.payload.decode("utf-8", "replace")[:2000] if d.payload is not None else None,
        "row": d.row,
    }
