"""Device registry: which devices exist, where they stand, what they report, their calibrations.

Two halves:

* Provisioning (``kota devices``): parse and validate a devices CSV or command-line spec into
  `DeviceSpec` records and upsert them into sites / devices / device_quantities / calibrations.
* `DeviceRegistry`: the gateway's cached, refreshable view of the same tables as small polars
  frames, joined against a whole batch at once by `gateway.normalize`. It loads from the
  database (reloaded every `refresh_s`, and early - at most every `min_reload_s` - when an
  unknown device shows up, so a freshly provisioned device is accepted within seconds), from
  a devices CSV (offline `kota gateway normalize --devices`), or from memory (tests).
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from gateway.schema.cities import load_cities
from gateway.schema.quantities import QUANTITIES
from gateway.schema.uplink import ID_RE, to_epoch_us
from gateway.units import conversion, resolve_unit

CSV_REQUIRED = ("device_id", "city", "site_id", "model", "driver")
CSV_OPTIONAL = ("site_name", "latitude", "longitude", "quantities", "calibrations", "installed_at")
MAX_FIELD = 200


class DeviceSpecError(ValueError):
    """Invalid provisioning input; the message names the row/field."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """Linear calibration ``value = raw * gain + offset`` (canonical unit), valid from a time."""

    quantity: str
    gain: float
    offset: float
    valid_from: datetime
    valid_to: datetime | None = None


@dataclass(slots=True)
class DeviceSpec:
    """One device to provision, with its site, declared quantities and calibrations."""

    device_id: str
    city: str
    site_id: str
    model: str
    driver: str
    site_name: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    quantities: dict[str, str] = field(default_factory=dict)  # quantity -> declared unit
    calibrations: list[Calibration] = field(default_factory=list)
    installed_at: datetime | None = None


# --------------------------------------------------------------------------- parsing


def parse_time(text: str, what: str = "time") -> datetime:
    """ISO 8601 date or date-time; naive values are taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DeviceSpecError(f"{what} {text!r} is not an ISO 8601 date/time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_quantities(text: str) -> dict[str, str]:
    """``pm2_5:ug/m3;pm10:ug/m3`` -> {quantity: unit}; every unit must convert."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, unit = item.partition(":")
        name, unit = name.strip(), unit.strip()
        if not sep or not unit:
            raise DeviceSpecError(f"quantity {item!r} must look like pm2_5:ug/m3")
        _check_quantity(name)
        result[name] = _check_unit(name, unit)
    return result


def parse_calibration(text: str) -> Calibration:
    """``pm2_5:gain:offset:valid_from`` (valid_from ISO 8601, may contain colons)."""
    parts = text.strip().split(":", 3)
    if len(parts) != 4:
        raise DeviceSpecError(f"calibration {text!r} must look like pm2_5:1.05:-0.8:2025-01-01")
    name, gain, offset, valid_from = parts
    try:
        gain_f, offset_f = float(gain), float(offset)
    except ValueError:
        raise DeviceSpecError(f"calibration {text!r}: gain and offset must be numbers") from None
    if not (gain_f == gain_f and offset_f == offset_f) or gain_f in (float("inf"), float("-inf")):
        raise DeviceSpecError(f"calibration {text!r}: gain and offset must be finite")
    if abs(gain_f) > 1e6 or abs(offset_f) > 1e9:
        raise DeviceSpecError(f"calibration {text!r}: gain/offset implausibly large")
    return Calibration(
        _check_quantity(name.strip()),
        gain_f,
        offset_f,
        parse_time(valid_from, "calibration valid_from"),
    )


def parse_calibrations(text: str) -> list[Calibration]:
    return [parse_calibration(item) for item in text.split(";") if item.strip()]


def _check_id(value: str, what: str) -> str:
    value = value.strip()
    if not ID_RE.match(value):
        raise DeviceSpecError(f"{what} {value[:80]!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def _check_quantity(name: str) -> str:
    if name not in QUANTITIES:
        raise DeviceSpecError(f"unknown quantity {name[:64]!r} (see `kota quantities`)")
    return name


def _check_unit(name: str, unit: str) -> str:
    if resolve_unit(unit) is None:
        raise DeviceSpecError(f"unknown unit {unit[:32]!r} for {name}")
    if conversion(name, unit) is None:
        raise DeviceSpecError(
            f"unit {unit!r} cannot express {name} (canonical {QUANTITIES[name].ucum})"
        )
    return unit


def _check_text(value: str, what: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_FIELD or any(ord(c) < 32 for c in value):
        raise DeviceSpecError(f"{what} must be 1-{MAX_FIELD} printable characters")
    return value


def validate_spec(spec: DeviceSpec) -> DeviceSpec:
    """Check every field; raises DeviceSpecError naming the bad one."""
    spec.device_id = _check_id(spec.device_id, "device_id")
    spec.site_id = _check_id(spec.site_id, "site_id")
    if spec.city not in load_cities():
        raise DeviceSpecError(f"city {spec.city[:16]!r} is not in the registry (see `kota cities`)")
    spec.model = _check_text(spec.model, "model")
    spec.driver = _check_id(spec.driver, "driver")
    if spec.site_name is not None:
        spec.site_name = _check_text(spec.site_name, "site_name")
    if (spec.latitude is None) != (spec.longitude is None):
        raise DeviceSpecError("give both latitude and longitude, or neither")
    if (
        spec.latitude is not None
        and spec.longitude is not None
        and not (-90 <= spec.latitude <= 90 and -180 <= spec.longitude <= 180)
    ):
        raise DeviceSpecError(f"latitude/longitude {spec.latitude},{spec.longitude} out of range")
    for name, unit in spec.quantities.items():
        _check_unit(_check_quantity(name), unit)
    for cal in spec.calibrations:
        if spec.quantities and cal.quantity not in spec.quantities:
            raise DeviceSpecError(
                f"calibration for {cal.quantity}, which the device does not declare"
            )
    return spec


def _float(value: str, what: str) -> float | None:
    if not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise DeviceSpecError(f"{what} {value[:20]!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise DeviceSpecError(f"{what} must be finite")
    return number


def parse_devices_csv(text: str, source: str = "devices.csv") -> list[DeviceSpec]:
    """Parse and validate a devices CSV; errors name file, line and problem."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or ()]
    missing = [c for c in CSV_REQUIRED if c not in fields]
    if missing:
        raise DeviceSpecError(
            f"{source}: missing columns {missing} (required: {', '.join(CSV_REQUIRED)})"
        )
    specs: list[DeviceSpec] = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "") for k, v in raw.items() if k is not None}
        where = f"{source}:{line}"
        try:
            spec = DeviceSpec(
                device_id=row["device_id"],
                city=row["city"].strip(),
                site_id=row["site_id"],
                model=row["model"],
                driver=row["driver"],
                site_name=row.get("site_name", "").strip() or None,
                latitude=_float(row.get("latitude", ""), "latitude"),
                longitude=_float(row.get("longitude", ""), "longitude"),
                quantities=parse_quantities(row.get("quantities", "")),
                calibrations=parse_calibrations(row.get("calibrations", "")),
                installed_at=(
                    parse_time(row["installed_at"], "installed_at")
                    if row.get("installed_at", "").strip()
                    else None
                ),
            )
            validate_spec(spec)
        except DeviceSpecError as err:
            raise DeviceSpecError(f"{where}: {err}") from None
        if spec.device_id in seen:
            raise DeviceSpecError(f"{where}: duplicate device_id {spec.device_id}")
        seen.add(spec.device_id)
        specs.append(spec)
    return specs


def load_devices_csv(path: Path) -> list[DeviceSpec]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DeviceSpecError(f"{path}: {err}") from None
    return parse_devices_csv(text, str(path))


# --------------------------------------------------------------------------- database


def upsert_devices(conninfo: str, specs: Sequence[DeviceSpec]) -> int:
    """Insert or update sites, devices, declared quantities and calibrations in one transaction.

    A new calibration closes the previous open one of the same device and quantity
    (its valid_to becomes the new valid_from). Returns the number of devices written.
    """
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        for spec in specs:
            cur.execute("SELECT city FROM sites WHERE site_id = %s", (spec.site_id,))
            site = cur.fetchone()
            if site is not None and site[0] != spec.city:
                raise DeviceSpecError(f"site {spec.site_id} belongs to {site[0]}, not {spec.city}")
            if spec.latitude is not None:
                cur.execute(
                    "INSERT INTO sites (site_id, city, name, latitude, longitude) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (site_id) DO UPDATE SET "
                    "name = EXCLUDED.name, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude",
                    (
                        spec.site_id,
                        spec.city,
                        spec.site_name or spec.site_id,
                        spec.latitude,
                        spec.longitude,
                    ),
                )
            elif site is None:
                raise DeviceSpecError(
                    f"site {spec.site_id} does not exist: give latitude and longitude to create it"
                )
            cur.execute(
                "INSERT INTO devices (device_id, city, site_id, model, driver, status, installed_at) "
                "VALUES (%s, %s, %s, %s, %s, 'active', %s) "
                "ON CONFLICT (device_id) DO UPDATE SET city = EXCLUDED.city, "
                "site_id = EXCLUDED.site_id, model = EXCLUDED.model, driver = EXCLUDED.driver, "
                "installed_at = COALESCE(%s, devices.installed_at)",
                (
                    spec.device_id,
                    spec.city,
                    spec.site_id,
                    spec.model,
                    spec.driver,
                    spec.installed_at,
                    spec.installed_at,
                ),
            )
            for name, unit in spec.quantities.items():
                cur.execute(
                    "INSERT INTO device_quantities (device_id, quantity, unit) VALUES (%s, %s, %s) "
                    "ON CONFLICT (device_id, quantity) DO UPDATE SET unit = EXCLUDED.unit",
                    (spec.device_id, name, unit),
                )
            for cal in spec.calibrations:
                cur.execute(
                    "UPDATE calibrations SET valid_to = %s WHERE device_id = %s AND quantity = %s "
                    "AND valid_to IS NULL AND valid_from < %s",
                    (cal.valid_from, spec.device_id, cal.quantity, cal.valid_from),
                )
                cur.execute(
                    'INSERT INTO calibrations (device_id, quantity, valid_from, valid_to, gain, "offset") '
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id, quantity, valid_from) "
                    'DO UPDATE SET gain = EXCLUDED.gain, "offset" = EXCLUDED."offset", '
                    "valid_to = EXCLUDED.valid_to",
                    (
                        spec.device_id,
                        cal.quantity,
                        cal.valid_from,
                        cal.valid_to,
                        cal.gain,
                        cal.offset,
                    ),
                )
    return len(specs)


def list_devices(conninfo: str, city: str | None = None) -> list[dict[str, Any]]:
    """Devices with their site and declared quantities, sorted by city and id."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(conninfo) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT d.device_id, d.city, d.site_id, s.name AS site_name, s.latitude, s.longitude, "
            "d.model, d.driver, d.status, d.installed_at, d.retired_at, "
            "COALESCE((SELECT string_agg(q.quantity || ':' || q.unit, ';' ORDER BY q.quantity) "
            "          FROM device_quantities q WHERE q.device_id = d.device_id), '') AS quantities "
            "FROM devices d LEFT JOIN sites s ON s.site_id = d.site_id "
            "WHERE (%s::text IS NULL OR d.city = %s) ORDER BY d.city, d.device_id",
            (city, city),
        )
        return list(cur.fetchall())


def retire_device(conninfo: str, device_id: str, at: datetime | None = None) -> bool:
    """Mark a device retired from `at` (default now); False if it does not exist."""
    import psycopg

    try:
        with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE devices SET status = 'retired', retired_at = COALESCE(%s, now()) "
                "WHERE device_id = %s",
                (at, device_id),
            )
            return cur.rowcount == 1
    except psycopg.errors.CheckViolation:
        raise DeviceSpecError(f"cannot retire {device_id} before its installed_at") from None


# --------------------------------------------------------------------------- registry

_DEVICE_SCHEMA = {
    "device": pl.Utf8,
    "reg_city": pl.Utf8,
    "reg_site": pl.Utf8,
    "retired_us": pl.Int64,
}
_DECL_SCHEMA = {"device": pl.Utf8, "quantity": pl.Utf8, "declared_unit": pl.Utf8}
_CAL_SCHEMA = {
    "device": pl.Utf8,
    "quantity": pl.Utf8,
    "cal_from_us": pl.Int64,
    "cal_to_us": pl.Int64,
    "gain": pl.Float64,
    "cal_offset": pl.Float64,
}
_RETIRED_ALWAYS = -(2**62)


@dataclass(frozen=True, slots=True)
class RegistryFrames:
    """The registry as three frames ready to join."""

    devices: pl.DataFrame  # device, reg_city, reg_site, retired_us (null = active)
    declared: pl.DataFrame  # device, quantity, declared_unit
    calibrations: pl.DataFrame  # device, quantity, cal_from_us, cal_to_us, gain, cal_offset

    @classmethod
    def build(
        cls,
        devices: Iterable[tuple[str, str, str, int | None]],
        declared: Iterable[tuple[str, str, str]] = (),
        calibrations: Iterable[tuple[str, str, int, int | None, float, float]] = (),
    ) -> RegistryFrames:
        return cls(
            pl.DataFrame(list(devices), schema=_DEVICE_SCHEMA, orient="row").unique(
                "device", keep="last"
            ),
            pl.DataFrame(list(declared), schema=_DECL_SCHEMA, orient="row").unique(
                ["device", "quantity"], keep="last"
            ),
            pl.DataFrame(list(calibrations), schema=_CAL_SCHEMA, orient="row").sort("cal_from_us"),
        )


def _us(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_epoch_us(moment)


def frames_from_specs(
    specs: Iterable[DeviceSpec], retired: dict[str, datetime] | None = None
) -> RegistryFrames:
    retired = retired or {}
    specs = list(specs)
    return RegistryFrames.build(
        [(s.device_id, s.city, s.site_id, _us(retired.get(s.device_id))) for s in specs],
        [(s.device_id, q, u) for s in specs for q, u in s.quantities.items()],
        [
            (s.device_id, c.quantity, _us(c.valid_from) or 0, _us(c.valid_to), c.gain, c.offset)
            for s in specs
            for c in s.calibrations
        ],
    )


def frames_from_db(conninfo: str) -> RegistryFrames:
    """Read the four registry tables (small: one row per device/quantity/calibration)."""
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute("SELECT device_id, city, site_id, status, retired_at FROM devices")
        devices = [
            (d, c, s, _us(r) if r is not None else (_RETIRED_ALWAYS if st == "retired" else None))
            for d, c, s, st, r in cur.fetchall()
        ]
        cur.execute("SELECT device_id, quantity, unit FROM device_quantities")
        declared = [tuple(row) for row in cur.fetchall()]
        cur.execute(
            'SELECT device_id, quantity, valid_from, valid_to, gain, "offset" FROM calibrations'
        )
        cals = [
            (d, q, _us(f) or 0, _us(t), float(g), float(o)) for d, q, f, t, g, o in cur.fetchall()
        ]
    return RegistryFrames.build(devices, declared, cals)


class DeviceRegistry:
    """Cached, refreshable device registry used by `normalize_batch`.

    `accept_unknown=True` lets devices that are not registered through with the city and
    site of their topic (for `kota gateway normalize --accept-unknown-devices`).
    """

    def __init__(
        self,
        loader: Callable[[], RegistryFrames] | None = None,
        *,
        frames: RegistryFrames | None = None,
        accept_unknown: bool = False,
        refresh_s: float = 30.0,
        min_reload_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if loader is None and frames is None:
            frames = RegistryFrames.build([])
        self._loader = loader
        self._frames = frames
        self.accept_unknown = accept_unknown
        self.refresh_s = refresh_s
        self.min_reload_s = min_reload_s
        self._clock = clock
        self._loaded_at = clock() if frames is not None else float("-inf")
        self._lock = threading.Lock()
        self.reloads = 0

    @classmethod
    def from_db(cls, conninfo: str, **kwargs: Any) -> DeviceRegistry:
        return cls(lambda: frames_from_db(conninfo), **kwargs)

    @classmethod
    def from_csv(cls, path: Path, **kwargs: Any) -> DeviceRegistry:
        return cls(frames=frames_from_specs(load_devices_csv(path)), **kwargs)

    @classmethod
    def from_specs(
        cls, specs: Iterable[DeviceSpec], retired: dict[str, datetime] | None = None, **kwargs: Any
    ) -> DeviceRegistry:
        return cls(frames=frames_from_specs(specs, retired), **kwargs)

    @classmethod
    def accept_all(cls) -> DeviceRegistry:
        return cls(frames=RegistryFrames.build([]), accept_unknown=True)

    def frames(self) -> RegistryFrames:
        """Current frames, reloading when older than `refresh_s`."""
        if self._loader is not None and self._clock() - self._loaded_at >= self.refresh_s:
            self.reload()
        assert self._frames is not None
        return self._frames

    def reload(self) -> None:
        if self._loader is None:
            return
        with self._lock:
            self._frames = self._loader()
            self._loaded_at = self._clock()
            self.reloads += 1

    def unknown_seen(self) -> bool:
        """An unknown device appeared: reload early if the last load is old enough.

        Returns True when the frames were reloaded (the caller then re-joins).
        """
        if self._loader is None or self._clock() - self._loaded_at < self.min_reload_s:
            return False
        self.reload()
        return True

    def known(self, device_ids: Sequence[str]) -> list[bool]:
        ids = set(self.frames().devices["device"].to_list())
        return [d in ids for d in device_ids]
