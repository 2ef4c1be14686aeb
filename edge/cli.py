"""`kota edge`: run the agent, check a config on the Pi, decode captures, print a sample config.

Thin commands over `edge.agent` and `edge.config`; errors are `KotaError` lines (exit 2).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import click

from kota_cli.errors import KotaError

DEFAULT_CONFIG = "/etc/kota-edge/edge.toml"

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    envvar="KOTA_EDGE_CONFIG",
    help="Path of edge.toml (env KOTA_EDGE_CONFIG).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def group() -> None:
    """The Raspberry Pi edge agent: sensors -> durable outbox -> MQTT.

    \b
    Start here:
      kota edge sample-config > edge.toml   # then edit
      kota edge check --config edge.toml    # validate, open every serial port
      kota edge run --config edge.toml      # what systemd runs
    """


@group.command()
@config_option
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Override agent.log_level.",
)
def run(config_path: str, log_level: str | None) -> None:
    """Run the agent until SIGTERM/SIGINT (what kota-edge.service runs).

    Example: kota edge run --config /etc/kota-edge/edge.toml
    """
    from edge.agent import run_agent

    run_agent(config_path, log_level)


def _probe_serial(port: str, baudrate: Any) -> str:
    import serial

    ser = serial.serial_for_url(port, do_not_open=True, exclusive=True)
    if isinstance(baudrate, int) and not isinstance(baudrate, bool):
        ser.baudrate = baudrate
    try:
        ser.open()
    except (serial.SerialException, OSError, ValueError) as err:
        text = str(err)
        if "lock" in text.lower() or "busy" in text.lower():
            text += " (is kota-edge running? `systemctl stop kota-edge` first)"
        raise KotaError(f"{port}: {text}") from None
    ser.close()
    return f"{port} opened"


def _probe_tcp(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            return f"{host}:{port} reachable"
    except OSError as err:
        raise KotaError(f"{host}:{port}: {err.strerror or err}") from None


def probe_device(table: dict[str, Any], driver: Any) -> str:
    """Open what the device reads from, without reading: its serial port, or its TCP endpoint."""
    check: Callable[[], Any] | None = getattr(driver, "check", None)
    if callable(check):
        return str(check() or "ok")
    port, host = table.get("port"), table.get("host")
    url = table.get("url", table.get("broker"))
    if isinstance(port, str):
        return _probe_serial(port, table.get("baudrate"))
    if isinstance(host, str):
        return _probe_tcp(host, port if isinstance(port, int) else 502)
    if isinstance(url, str) and "://" in url:
        parts = urlsplit(url)
        if parts.hostname:
            default = 8883 if parts.scheme.endswith("s") else 1883
            return _probe_tcp(parts.hostname, parts.port or default)
    return "nothing to open"


@group.command()
@config_option
@click.option("--offline", is_flag=True, help="Do not test that the MQTT broker is reachable.")
def check(config_path: str, offline: bool) -> None:
    """Validate edge.toml and open every device port (nothing is published).

    Prints one OK/FAIL line per device (and for the broker); exits 1 if any FAIL,
    2 if the configuration itself is invalid.

    Example: sudo -u kota-edge kota edge check --config /etc/kota-edge/edge.toml
    """
    from edge.config import load_config

    config = load_config(config_path)
    click.echo(
        f"OK   config {config_path}: agent {config.agent.id} ({config.agent.city}/{config.agent.site}), "
        f"{len(config.devices)} devices"
    )
    failed = 0
    for entry in config.devices:
        name = f"devices[{entry.index}] {entry.driver.device_id} ({entry.kind})"
        if not entry.enabled:
            click.echo(f"SKIP {name}: enabled = false")
            continue
        try:
            detail = probe_device(dict(entry.table), entry.driver)
        except KotaError as err:
            failed += 1
            click.echo(f"FAIL {name}: {err}")
        else:
            click.echo(f"OK   {name}: {detail}")
    if not offline:
        try:
            detail = _probe_tcp(config.uplink.host, config.uplink.port)
        except KotaError as err:
            failed += 1
            click.echo(f"FAIL uplink {config.uplink.url}: {err}")
        else:
            click.echo(f"OK   uplink {config.uplink.url}: {detail}")
    outbox_dir = config.outbox.path.parent
    click.echo(
        f"INFO outbox {config.outbox.path} (max {config.outbox.max_bytes / 1e6:.0f} MB, "
        f"{config.outbox.max_age_days:g} days, sync={config.outbox.sync})"
        + ("" if outbox_dir.exists() else f"; {outbox_dir} will be created")
    )
    if failed:
        sys.exit(1)  # not click's Exit: `kota` runs click with standalone_mode=False


SAMPLE_HEADER = """\
# edge.toml: the Kota edge agent's configuration (`kota edge sample-config` prints this).
# A commented-out value (`# key = value`) shows the default. Validate with
# `kota edge check --config edge.toml`; unknown keys are errors.

[agent]
## Stable id of this agent (letters, digits, . _ -), also the MQTT client id suffix.
id = "pi-bkk-01"
## UN/LOCODE of the city: must be in the ASCN registry (`kota cities`).
city = "THBKK"
## Site id (the second level of the MQTT topic).
site = "bkk-sukhumvit"
## Where the outbox lives (writable by the kota-edge user; ReadWritePaths in the unit).
# state_dir = "/var/lib/kota-edge"
## Seconds between heartbeats on kota/v1/{city}/{site}/{agent}/heartbeat.
# heartbeat_s = 60
# log_level = "info"

[uplink]
## mqtt://host:1883 or mqtts://host:8883 (TLS).
url = "mqtts://mqtt.example.org:8883"
username = "pi-bkk-01"
## The password is never written here: a file readable only by kota-edge (mode 0600),
## or the KOTA_EDGE_PASSWORD environment variable.
password_file = "/etc/kota-edge/mqtt-password"
## TLS: CA bundle (default: the system's), client certificate and key for mutual TLS.
# ca_file = "/etc/kota-edge/ca.crt"
# cert_file = "/etc/kota-edge/client.crt"
# key_file = "/etc/kota-edge/client.key"
# client_id = "kota-edge-<agent.id>"
# keepalive = 60
## One MQTT message per device carries at most this many readings...
# batch_max_readings = 500
## ...and is sent at the latest this many seconds after its oldest reading was queued.
# batch_max_age_s = 5
## Messages sent and not yet acknowledged (flow control).
# max_inflight = 50
## The broker keeps the session this long across disconnects (MQTT v5 Session Expiry).
# session_expiry_s = 604800
## Reconnect backoff: doubles from min to max.
# reconnect_min_s = 1
# reconnect_max_s = 120
## Change only if the broker rewrites topics (the gateway expects kota/v1).
# topic_prefix = "kota/v1"

[outbox]
## Relative paths are inside agent.state_dir.
# path = "outbox.sqlite"
## Bounds: the oldest readings are dropped first, and every drop is counted
## (kota_edge_outbox_dropped_total{reason}, heartbeat outbox.dropped).
# max_bytes = 536870912
# max_age_days = 14
## "normal": fsync at checkpoints only (every checkpoint_s): a power cut can undo the last
## checkpoint_s seconds of readings, never corrupt the file. "full": fsync every commit.
# sync = "normal"
# checkpoint_s = 10

[metrics]
## Prometheus endpoint; keep it on localhost unless a scraper on the LAN needs it.
# enabled = true
# address = "127.0.0.1"
# port = 9110

# --------------------------------------------------------------------------- devices
# One [[devices]] table per device (or bus). Remove the ones you do not have.
"""


def sample_config_text() -> str:
    """The full commented edge.toml: the agent sections, then each driver's sample."""
    parts = [SAMPLE_HEADER]
    try:
        from edge.drivers import REGISTRY
    except ImportError:
        REGISTRY = {}
    for kind in sorted(REGISTRY):
        spec = REGISTRY[kind]
        parts.append(f"\n# ---- {kind}\n{spec.sample_config.rstrip()}\n")
    return "".join(parts)


@group.command("sample-config")
def sample_config() -> None:
    """Print a complete, commented edge.toml (agent, uplink, outbox, metrics, every driver).

    Example: kota edge sample-config > /etc/kota-edge/edge.toml
    """
    click.echo(sample_config_text(), nl=False)


def _decode_unavailable(err: ImportError) -> click.Command:
    def run(**_: Any) -> None:
        raise KotaError(f"`kota edge decode` is not available in this build ({err})")

    return click.Command(
        "decode",
        callback=run,
        help="Decode captured device bytes (not available in this build).",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


try:
    from edge.drivers.decode import decode_command
except ImportError as _err:  # the drivers' decoder is optional during development
    decode_command = _decode_unavailable(_err)
group.add_command(decode_command, "decode")
