"""`edge.toml`: load and validate the whole agent configuration before anything starts.

Every problem is one `ConfigError` line naming the file and the field, e.g.
``edge.toml: uplink.url: scheme 'http' not supported (use mqtt:// or mqtts://)``.
Unknown keys are errors (with a "did you mean" hint) so a typo never passes silently.
Devices are validated by their driver's own factory, ``edge.drivers.REGISTRY[kind].build``;
``driver = "python:package.module:factory"`` (or the same string as ``kind``) loads a
driver from any importable module (tests, load generators, site one-offs); the factory has
the ``build(table, ctx)`` signature or is a DriverSpec. ``enabled = false`` keeps a device
validated but not running.

Secrets are never inline: the MQTT password comes from ``uplink.password_file`` or the
``KOTA_EDGE_PASSWORD`` environment variable.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from gateway.schema import MAX_UPLINK_BYTES, load_cities
from gateway.schema.uplink import ID_RE, TOPIC_PREFIX
from kota_cli.errors import ConfigError, KotaError

if TYPE_CHECKING:
    from edge.drivers.base import AgentContext, Driver

PASSWORD_ENV = "KOTA_EDGE_PASSWORD"
DEFAULT_STATE_DIR = "/var/lib/kota-edge"
PYTHON_KIND = "python:"
TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
#: Largest batch whose columnar JSON stays well under MAX_UPLINK_BYTES (~100 B a reading).
MAX_BATCH_READINGS = min(2000, MAX_UPLINK_BYTES // 128)
_REQUIRED: Any = object()


@dataclass(frozen=True)
class AgentSection:
    """[agent]: who this agent is and where it keeps its state."""

    id: str
    city: str
    site: str
    state_dir: Path
    heartbeat_s: float = 60.0
    log_level: str = "info"


@dataclass(frozen=True)
class UplinkConfig:
    """[uplink]: the MQTT broker connection and how readings are batched."""

    url: str
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str = ""
    keepalive: int = 60
    batch_max_readings: int = 500
    batch_max_age_s: float = 5.0
    topic_prefix: str = TOPIC_PREFIX
    max_inflight: int = 50
    session_expiry_s: int = 7 * 86_400
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 120.0


@dataclass(frozen=True)
class OutboxConfig:
    """[outbox]: the durable queue on the SD card."""

    path: Path
    max_bytes: int = 512 * 1024 * 1024
    max_age_days: float = 14.0
    sync: str = "normal"
    checkpoint_s: float = 10.0


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: the Prometheus endpoint."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9110


@dataclass(frozen=True)
class DeviceEntry:
    """One validated [[devices]] table and the driver built from it."""

    index: int
    kind: str
    table: Mapping[str, Any]
    driver: Driver
    enabled: bool = True


@dataclass(frozen=True)
class EdgeConfig:
    """The whole validated `edge.toml`."""

    path: Path
    agent: AgentSection
    uplink: UplinkConfig
    outbox: OutboxConfig
    metrics: MetricsConfig
    devices: tuple[DeviceEntry, ...] = ()

    def context(self) -> AgentContext:
        return agent_context(self.agent)


def agent_context(agent: AgentSection) -> AgentContext:
    from edge.drivers.base import AgentContext

    return AgentContext(agent_id=agent.id, city=agent.city, site=agent.site)


# --------------------------------------------------------------------------- helpers


class _Table:
    """Typed access to one TOML table; every error names `file: section.key`."""

    def __init__(self, file: str, name: str, table: Any, allowed: tuple[str, ...]) -> None:
        self.file, self.name = file, name
        if not isinstance(table, dict):
            self.fail_at(name, "must be a table")
        self.table: dict[str, Any] = table
        for key in table:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                extra = (
                    f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(allowed)})"
                )
                self.fail(key, f"unknown key{extra}")

    def fail_at(self, where: str, message: str) -> NoReturn:
        raise ConfigError(f"{self.file}: {where}: {message}")

    def fail(self, key: str, message: str) -> NoReturn:
        self.fail_at(f"{self.name}.{key}" if self.name else key, message)

    def _get(self, key: str, default: Any) -> Any:
        if key in self.table:
            return self.table[key]
        if default is _REQUIRED:
            self.fail(key, "required")
        return default

    def text(
        self, key: str, default: Any = _REQUIRED, *, pattern: re.Pattern[str] | None = None
    ) -> Any:
        value = self._get(key, default)
        if key not in self.table:
            return value
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"{value!r} is not a valid id (letters, digits, '.', '_', '-'; 1-64)")
        return value

    def number(self, key: str, default: Any, *, lo: float, hi: float, integer: bool = False) -> Any:
        value = self._get(key, default)
        if key not in self.table:
            return value
        ok = type(value) is int if integer else type(value) in (int, float)
        if not ok:
            self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
        if not lo <= value <= hi:
            self.fail(key, f"{value} out of range [{lo:g}, {hi:g}]")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if type(value) is not bool:
            self.fail(key, f"expected true or false, got {value!r}")
        return value

    def path(self, key: str, default: Any, base: Path, *, must_exist: bool = False) -> Path | None:
        value = self.text(key, default)
        if value is None:
            return None
        path = Path(os.path.expanduser(str(value)))
        path = path if path.is_absolute() else base / path
        if must_exist and not path.is_file():
            self.fail(key, f"file not found: {path}")
        return path


def _parse_url(t: _Table, url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        t.fail(
            "url", f"scheme {parts.scheme or '(none)'!r} not supported (use mqtt:// or mqtts://)"
        )
    try:
        host, port = parts.hostname, parts.port
    except ValueError as err:
        t.fail("url", f"{err} in {url!r}")
    if not host:
        t.fail("url", f"no host in {url!r} (expected mqtt://host:port)")
    if parts.username or parts.password:
        t.fail("url", "credentials in the URL are not allowed (use username and password_file)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        t.fail("url", f"unexpected path or query in {url!r} (expected mqtt://host:port)")
    tls = parts.scheme == "mqtts"
    return host, port or (8883 if tls else 1883), tls


# --------------------------------------------------------------------------- sections

_TOP = ("agent", "uplink", "outbox", "metrics", "devices")
_AGENT = ("id", "city", "site", "state_dir", "heartbeat_s", "log_level")
_UPLINK = (
    "url",
    "username",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "client_id",
    "keepalive",
    "batch_max_readings",
    "batch_max_age_s",
    "topic_prefix",
    "max_inflight",
    "session_expiry_s",
    "reconnect_min_s",
    "reconnect_max_s",
)
_OUTBOX = ("path", "max_bytes", "max_age_days", "sync", "checkpoint_s")
_METRICS = ("enabled", "address", "port")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _agent(file: str, raw: Any, base: Path) -> AgentSection:
    t = _Table(file, "agent", raw, _AGENT)
    city = t.text("city")
    if city not in load_cities():
        t.fail("city", f"{city!r} is not an ASCN city in the registry (see `kota cities`)")
    level = t.text("log_level", "info")
    if level not in _LOG_LEVELS:
        t.fail("log_level", f"{level!r} not one of {', '.join(_LOG_LEVELS)}")
    state_dir = t.path("state_dir", DEFAULT_STATE_DIR, base)
    assert state_dir is not None
    return AgentSection(
        id=t.text("id", pattern=ID_RE),
        city=city,
        site=t.text("site", pattern=ID_RE),
        state_dir=state_dir,
        heartbeat_s=float(t.number("heartbeat_s", 60.0, lo=1, hi=86_400)),
        log_level=level,
    )


def _uplink(file: str, raw: Any, base: Path, agent: AgentSection) -> UplinkConfig:
    if "password" in (raw if isinstance(raw, dict) else {}):
        raise ConfigError(
            f"{file}: uplink.password: inline passwords are not allowed "
            f"(use password_file or the {PASSWORD_ENV} environment variable)"
        )
    t = _Table(file, "uplink", raw, _UPLINK)
    url = t.text("url")
    host, port, tls = _parse_url(t, url)
    password: str | None = None
    password_file = t.path("password_file", None, base)
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            t.fail("password_file", f"cannot read {password_file}: {err.strerror or err}")
        if not password:
            t.fail("password_file", f"{password_file} is empty")
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    username = t.text("username", None)
    if password is not None and username is None:
        t.fail("username", "required when a password is given")
    ca_file = t.path("ca_file", None, base, must_exist=True)
    cert_file = t.path("cert_file", None, base, must_exist=True)
    key_file = t.path("key_file", None, base, must_exist=True)
    if (cert_file is None) != (key_file is None):
        t.fail(
            "key_file" if key_file is None else "cert_file", "cert_file and key_file go together"
        )
    if not tls:
        for key in ("ca_file", "cert_file", "key_file"):
            if key in t.table:
                t.fail(key, "TLS files need an mqtts:// url")
    prefix = t.text("topic_prefix", TOPIC_PREFIX)
    if not TOPIC_PREFIX_RE.match(prefix):
        t.fail(
            "topic_prefix", f"{prefix!r} is not a plain topic prefix (no wildcards, no leading /)"
        )
    lo = float(t.number("reconnect_min_s", 1.0, lo=0.1, hi=3600))
    hi = float(t.number("reconnect_max_s", 120.0, lo=0.1, hi=86_400))
    if hi < lo:
        t.fail("reconnect_max_s", f"{hi:g} is less than reconnect_min_s {lo:g}")
    client_id = t.text("client_id", f"kota-edge-{agent.id}")
    if len(client_id) > 128:
        t.fail("client_id", "longer than 128 characters")
    return UplinkConfig(
        url=url,
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        client_id=client_id,
        keepalive=t.number("keepalive", 60, lo=5, hi=65_535, integer=True),
        batch_max_readings=t.number(
            "batch_max_readings", 500, lo=1, hi=MAX_BATCH_READINGS, integer=True
        ),
        batch_max_age_s=float(t.number("batch_max_age_s", 5.0, lo=0, hi=3600)),
        topic_prefix=prefix,
        max_inflight=t.number("max_inflight", 50, lo=1, hi=1000, integer=True),
        session_expiry_s=t.number("session_expiry_s", 7 * 86_400, lo=0, hi=2**32 - 1, integer=True),
        reconnect_min_s=lo,
        reconnect_max_s=hi,
    )


def _outbox(file: str, raw: Any, agent: AgentSection) -> OutboxConfig:
    t = _Table(file, "outbox", raw, _OUTBOX)
    path = t.path("path", "outbox.sqlite", agent.state_dir)
    assert path is not None
    sync = t.text("sync", "normal")
    if sync not in ("normal", "full"):
        t.fail("sync", f"{sync!r} not one of normal, full")
    return OutboxConfig(
        path=path,
        max_bytes=t.number("max_bytes", 512 * 1024 * 1024, lo=1024 * 1024, hi=2**50, integer=True),
        max_age_days=float(t.number("max_age_days", 14.0, lo=0.001, hi=3650)),
        sync=sync,
        checkpoint_s=float(t.number("checkpoint_s", 10.0, lo=0.1, hi=3600)),
    )


def _metrics(file: str, raw: Any) -> MetricsConfig:
    t = _Table(file, "metrics", raw, _METRICS)
    return MetricsConfig(
        enabled=t.flag("enabled", True),
        address=t.text("address", "127.0.0.1"),
        port=t.number("port", 9110, lo=0, hi=65_535, integer=True),
    )


def resolve_kind(kind: str) -> Any:
    """The DriverSpec registered as `kind`, or the factory named by ``python:module:attr``."""
    if kind.startswith(PYTHON_KIND):
        target = kind[len(PYTHON_KIND) :]
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise KotaError(f"kind {kind!r}: expected python:package.module:factory")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise KotaError(f"kind {kind!r}: cannot import {module_name}: {err}") from None
        factory = getattr(module, attr, None)
        if factory is None:
            raise KotaError(f"kind {kind!r}: {module_name} has no attribute {attr!r}")
        return factory
    from edge.drivers import REGISTRY

    if kind not in REGISTRY:
        hint = difflib.get_close_matches(kind, list(REGISTRY), n=1)
        extra = f"did you mean '{hint[0]}'?" if hint else f"known: {', '.join(sorted(REGISTRY))}"
        raise KotaError(f"unknown driver kind {kind!r} ({extra})")
    return REGISTRY[kind]


def _devices(file: str, raw: Any, ctx: AgentContext) -> tuple[DeviceEntry, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{file}: devices: must be an array of tables ([[devices]])")
    entries: list[DeviceEntry] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(raw):
        where = f"devices[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {where}: must be a table")
        kind = table.get("kind")
        factory = table.get("driver")
        spec = factory if isinstance(factory, str) and factory.startswith(PYTHON_KIND) else kind
        if not isinstance(spec, str) or not spec:
            raise ConfigError(f"{file}: {where}.kind: required (see `kota edge sample-config`)")
        try:
            target = resolve_kind(spec)
        except KotaError as err:
            field_name = "kind" if spec is kind else "driver"
            raise ConfigError(f"{file}: {where}.{field_name}: {err}") from None
        kind = kind if isinstance(kind, str) and kind else spec
        build = getattr(target, "build", target)
        try:
            driver = build(table, ctx)
        except KotaError as err:
            message = str(err)
            if message.startswith("devices["):
                message = re.sub(r"^devices\[[^\]]*\]", where, message)
            else:
                message = f"{where}.{message}"
            raise ConfigError(f"{file}: {message}") from None
        device_id = getattr(driver, "device_id", None)
        if not isinstance(device_id, str) or not ID_RE.match(device_id):
            raise ConfigError(f"{file}: {where}.device_id: {device_id!r} is not a valid id")
        if device_id in seen:
            raise ConfigError(
                f"{file}: {where}.device_id: {device_id!r} already used by devices[{seen[device_id]}]"
            )
        seen[device_id] = i
        enabled = table.get("enabled", True)
        if type(enabled) is not bool:
            raise ConfigError(f"{file}: {where}.enabled: expected true or false, got {enabled!r}")
        entries.append(DeviceEntry(index=i, kind=kind, table=table, driver=driver, enabled=enabled))
    return tuple(entries)


def parse_config(
    data: Mapping[str, Any], path: Path | str, *, build_devices: bool = True
) -> EdgeConfig:
    """Validate an already-parsed `edge.toml` document (relative paths from its folder)."""
    path = Path(path)
    file = str(path)
    base = path.parent if path.parent != Path("") else Path(".")
    top = _Table(file, "", dict(data), _TOP)
    if "agent" not in top.table:
        top.fail_at("agent", "required table missing")
    if "uplink" not in top.table:
        top.fail_at("uplink", "required table missing")
    agent = _agent(file, top.table["agent"], base.resolve())
    uplink = _uplink(file, top.table["uplink"], base.resolve(), agent)
    outbox = _outbox(file, top.table.get("outbox", {}), agent)
    metrics = _metrics(file, top.table.get("metrics", {}))
    devices = (
        _devices(file, top.table.get("devices"), agent_context(agent)) if build_devices else ()
    )
    return EdgeConfig(
        path=path, agent=agent, uplink=uplink, outbox=outbox, metrics=metrics, devices=devices
    )


def load_config(path: Path | str, *, build_devices: bool = True) -> EdgeConfig:
    """Read and validate `edge.toml`; raises ConfigError with one line naming file and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found (create one with `kota edge sample-config`)"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    return parse_config(data, path, build_devices=build_devices)
