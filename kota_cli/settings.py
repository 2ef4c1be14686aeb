"""Server settings from the environment, validated with one clear error line each.

| variable | meaning | default |
|---|---|---|
| KOTA_DATABASE_URL | PostgreSQL URL (postgresql://user@host:port/db) | none (the demo starts its own) |
| KOTA_MQTT_URL | broker URL, mqtt://host:port or mqtts://host:port | none (the demo starts its own) |
| KOTA_MQTT_USERNAME / KOTA_MQTT_PASSWORD_FILE | broker credentials for server processes | anonymous |
| KOTA_MQTT_CA_FILE | CA bundle for mqtts:// | system CAs |
| KOTA_GATEWAY_GROUP | shared-subscription group of gateway workers | kota-gateway |
| KOTA_METRICS_PORT | Prometheus endpoint port of a gateway worker | off (compose: 9108) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from kota_cli.errors import ConfigError


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(value: str, setting: str = "KOTA_MQTT_URL") -> MqttUrl:
    """mqtt://host[:1883] or mqtts://host[:8883]; anything else is a one-line ConfigError."""
    parts = urlsplit(value)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(
            f"{setting}: scheme {parts.scheme or '(none)'!r} not supported (use mqtt:// or mqtts://), got {value!r}"
        )
    if not parts.hostname:
        raise ConfigError(f"{setting}: no host in {value!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"{setting}: bad port in {value!r}") from None
    return MqttUrl(parts.hostname, port, parts.scheme == "mqtts")


def check_database_url(value: str, setting: str = "KOTA_DATABASE_URL") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{setting}: expected postgresql://user@host:port/dbname, got {value!r}")
    return value


def database_url(override: str | None = None, *, required: bool = True) -> str | None:
    """The database URL from an option or KOTA_DATABASE_URL."""
    value = override or os.environ.get("KOTA_DATABASE_URL")
    if not value:
        if required:
            raise ConfigError("KOTA_DATABASE_URL: not set (export it or pass --database-url)")
        return None
    return check_database_url(value)


def mqtt_url(override: str | None = None, *, required: bool = True) -> MqttUrl | None:
    """The broker URL from an option or KOTA_MQTT_URL."""
    value = override or os.environ.get("KOTA_MQTT_URL")
    if not value:
        if required:
            raise ConfigError("KOTA_MQTT_URL: not set (export it or pass --mqtt-url)")
        return None
    return parse_mqtt_url(value)
