"""Uplink wire format v1: one MQTT message per device batch, edge agent -> gateway.

Topic: ``kota/v1/{city}/{site}/{device}/up``. Payload: UTF-8 JSON, columnar so a batch is
decoded with a handful of list operations instead of one object per reading::

    {"schema": "kota.uplink/1", "city": "THBKK", "site": "bkk-sukhumvit",
     "device": "bkk-pms-01", "driver": "pms5003", "agent": "pi-bkk-01", "seq": 42,
     "sent_at": 1763794800000000,
     "readings": {"quantity": ["pm2_5", "pm10"], "value": [12.0, 20.0],
                  "unit": ["ug/m3", "ug/m3"],
                  "observed_at": [1763794799123456, 1763794799123456],
                  "flags": [0, 0]}}

`observed_at` items are epoch microseconds UTC (what the edge sends) or ISO 8601 strings;
a string without an offset is local time in the city's IANA zone. `flags` is optional.
The JSON Schema (uplink-v1.schema.json, copied to docs/schemas/) says the same; tests keep
the two in agreement.

Decoding separates two kinds of failure: a message that cannot be trusted at all (bad JSON,
wrong schema, header fields) raises UplinkError; a single bad reading is returned in
`rejects` with its reason and never takes its batch-mates down.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.schema.cities import load_cities

UPLINK_SCHEMA = "kota.uplink/1"
TOPIC_PREFIX = "kota/v1"
MAX_UPLINK_BYTES = 256 * 1024
MAX_READINGS = 10_000
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
HEADER_IDS = ("city", "site", "device", "driver")
COLUMNS = ("quantity", "value", "unit", "observed_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UplinkError(ValueError):
    """The whole message is rejected; `reason` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Sample:
    """A device reading before normalisation (what an edge driver produces)."""

    quantity: str
    value: float
    unit: str
    observed_us: int
    flags: int = 0


@dataclass(slots=True)
class UplinkBatch:
    """A decoded uplink: header plus the valid rows as parallel columns."""

    city: str
    site: str
    device: str
    driver: str
    agent: str | None
    seq: int | None
    sent_us: int | None
    quantity: list[str] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    unit: list[str] = field(default_factory=list)
    observed_us: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    local_time: list[bool] = field(default_factory=list)
    rejects: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.quantity)


def uplink_topic(city: str, site: str, device: str) -> str:
    return f"{TOPIC_PREFIX}/{city}/{site}/{device}/up"


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """(city, site, device) of an uplink topic, or None when it is not one."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != "kota" or parts[1] != "v1" or parts[5] != "up":
        return None
    return parts[2], parts[3], parts[4]


def to_epoch_us(moment: datetime) -> int:
    """Exact integer microseconds since the epoch (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_uplink(
    city: str,
    site: str,
    device: str,
    driver: str,
    samples: Sequence[Sample],
    *,
    agent: str | None = None,
    seq: int | None = None,
    sent_us: int | None = None,
) -> bytes:
    """Serialise one device batch (stdlib json: runs on the edge)."""
    message: dict[str, Any] = {
        "schema": UPLINK_SCHEMA,
        "city": city,
        "site": site,
        "device": device,
        "driver": driver,
    }
    if agent is not None:
        message["agent"] = agent
    if seq is not None:
        message["seq"] = seq
    if sent_us is not None:
        message["sent_at"] = sent_us
    message["readings"] = {
        "quantity": [s.quantity for s in samples],
        "value": [s.value for s in samples],
        "unit": [s.unit for s in samples],
        "observed_at": [s.observed_us for s in samples],
        "flags": [s.flags for s in samples],
    }
    return json.dumps(message, separators=(",", ":"), allow_nan=True).encode()


def _load_json(payload: bytes, loads: Callable[[bytes], Any] | None) -> Any:
    if len(payload) > MAX_UPLINK_BYTES:
        raise UplinkError("oversized", f"{len(payload)} bytes > {MAX_UPLINK_BYTES}")
    if loads is not None:
        try:
            return loads(payload)
        except Exception:
            pass
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UplinkError("invalid_utf8", str(err)) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise UplinkError("invalid_json", "nested too deeply") from None
    except ValueError as err:
        raise UplinkError("invalid_json", str(err)[:200]) from None


def _header_id(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if value is None:
        raise UplinkError(f"missing_{name}")
    if not isinstance(value, str) or not ID_RE.match(value):
        raise UplinkError(f"bad_{name}", repr(value)[:80])
    return value


def _optional_int(message: dict[str, Any], name: str) -> int | None:
    value = message.get(name)
    if value is None:
        return None
    if type(value) is not int:
        raise UplinkError(f"bad_{name}", repr(value)[:80])
    return value


def _columns(message: dict[str, Any]) -> tuple[list[Any], ...]:
    readings = message.get("readings")
    if not isinstance(readings, dict):
        raise UplinkError("missing_readings")
    cols = []
    for name in COLUMNS:
        col = readings.get(name)
        if not isinstance(col, list):
            raise UplinkError("bad_readings", f"column {name} missing or not a list")
        cols.append(col)
    flags = readings.get("flags")
    if flags is None:
        flags = [0] * len(cols[0])
    if not isinstance(flags, list):
        raise UplinkError("bad_readings", "column flags not a list")
    cols.append(flags)
    lengths = {len(c) for c in cols}
    if len(lengths) != 1:
        raise UplinkError("column_length_mismatch", f"lengths {sorted(lengths)}")
    if len(cols[0]) > MAX_READINGS:
        raise UplinkError("too_many_readings", f"{len(cols[0])} > {MAX_READINGS}")
    return tuple(cols)


def _parse_time(item: Any, zone: ZoneInfo | None) -> tuple[int, bool] | str:
    """(epoch µs, was_local) or a reject reason."""
    if type(item) is int:
        return item, False
    if not isinstance(item, str) or len(item) > 40:
        return "bad_observed_at"
    try:
        moment = datetime.fromisoformat(item)
    except ValueError:
        return "bad_observed_at"
    if moment.tzinfo is not None:
        return to_epoch_us(moment), False
    if zone is None:
        return "unknown_city_zone"
    return to_epoch_us(moment.replace(tzinfo=zone)), True


FLOAT_LIMIT = 1e300  # ints beyond this cannot become a finite float64 reading


def _good_value(v: Any) -> bool:
    return (type(v) is float and math.isfinite(v)) or (
        type(v) is int and -FLOAT_LIMIT < v < FLOAT_LIMIT
    )


def _reject_reason(q: Any, v: Any, u: Any, f: Any) -> str | None:
    if not isinstance(q, str) or not q or len(q) > 64:
        return "bad_quantity"
    if type(v) is not float and type(v) is not int:
        return "bad_value"
    if not _good_value(v):
        return "non_finite_value" if type(v) is float else "bad_value"
    if not isinstance(u, str) or not u or len(u) > 32:
        return "bad_unit"
    if type(f) is not int or not 0 <= f < 2**15:
        return "bad_flags"
    return None


def _all_clean(q: list[Any], v: list[Any], u: list[Any], t: list[Any], f: list[Any]) -> bool:
    """True when every row passes every row check, with epoch-µs times (no time parsing)."""
    return (
        all(type(x) is str and 0 < len(x) <= 64 for x in q)
        and all(map(_good_value, v))
        and all(type(x) is str and 0 < len(x) <= 32 for x in u)
        and all(type(x) is int for x in t)
        and all(type(x) is int and 0 <= x < 32768 for x in f)
    )


def decode_uplink(
    payload: bytes,
    topic: str | None = None,
    *,
    loads: Callable[[bytes], Any] | None = None,
) -> UplinkBatch:
    """Decode and validate one uplink message.

    `loads` may be a faster JSON parser (orjson.loads on the server); on any failure the
    stdlib parser is tried so the reason reported is precise. Raises UplinkError for a
    message that must be dead-lettered whole.
    """
    message = _load_json(payload, loads)
    if not isinstance(message, dict):
        raise UplinkError("not_an_object")
    if message.get("schema") != UPLINK_SCHEMA:
        raise UplinkError("unsupported_schema", repr(message.get("schema"))[:80])
    city, site, device, driver = (_header_id(message, name) for name in HEADER_IDS)
    if topic is not None and parse_topic(topic) != (city, site, device):
        raise UplinkError(
            "topic_mismatch", f"topic {topic[:120]} vs payload {city}/{site}/{device}"
        )
    agent = message.get("agent")
    if agent is not None and (not isinstance(agent, str) or not ID_RE.match(agent)):
        raise UplinkError("bad_agent", repr(agent)[:80])
    batch = UplinkBatch(
        city=city,
        site=site,
        device=device,
        driver=driver,
        agent=agent,
        seq=_optional_int(message, "seq"),
        sent_us=_optional_int(message, "sent_at"),
    )
    columns = _columns(message)
    if _all_clean(*columns):
        # Fast path (the edge's own output): whole columns checked at once, no per-row loop.
        batch.quantity, batch.unit, batch.observed_us, batch.flags = (
            columns[0],
            columns[2],
            columns[3],
            columns[4],
        )
        batch.value = [float(v) for v in columns[1]]
        batch.local_time = [False] * len(batch.quantity)
        return batch
    city_info = load_cities().get(city)
    zone = city_info.zone if city_info else None
    for i, (q, v, u, t, f) in enumerate(zip(*columns, strict=True)):
        reason = _reject_reason(q, v, u, f)
        parsed = _parse_time(t, zone) if reason is None else reason
        if isinstance(parsed, str):
            row = {"quantity": q, "value": v, "unit": u, "observed_at": t, "flags": f}
            batch.rejects.append((i, reason or parsed, row))
            continue
        batch.quantity.append(q)
        batch.value.append(float(v))
        batch.unit.append(u)
        batch.observed_us.append(parsed[0])
        batch.local_time.append(parsed[1])
        batch.flags.append(f)
    return batch
