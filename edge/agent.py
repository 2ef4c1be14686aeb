"""The agent process: drivers (one thread each) -> outbox -> uplink, plus metrics.

Start order: outbox (so nothing is ever produced without a place to go), metrics, uplink,
drivers. Stop order (SIGTERM/SIGINT): drivers, a short flush of the uplink, retained
`offline` status, outbox checkpoint and close. A driver that raises or returns is logged,
counted (`kota_edge_driver_restarts_total`) and restarted with backoff: one bad device
never takes the others down. Under systemd (`Type=notify`) the agent reports READY and
pings the watchdog while its threads are alive.

Run: ``kota edge run --config edge.toml`` or ``python -m edge.agent --config edge.toml``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import FrameType
from typing import Any

from edge.config import EdgeConfig, load_config
from edge.metrics import DRIVER_RESTARTS, MetricsServer, start_metrics
from edge.outbox import Outbox
from edge.uplink import Uplink
from gateway.schema import Sample
from kota_cli.errors import KotaError

log = logging.getLogger("kota.edge")

HEARTBEAT_SCHEMA = "kota.heartbeat/1"
EXPIRE_EVERY_S = 60.0
DRAIN_ON_STOP_S = 5.0


def agent_version() -> str:
    try:
        return version("kota-iot")
    except PackageNotFoundError:
        return "0+unknown"


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


@dataclass
class _DriverThread:
    driver: Any
    kind: str
    thread: threading.Thread | None = None
    restarts: int = 0
    last_error: str | None = None
    readings: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Agent:
    """One edge agent. `start()` and `stop()` for embedding; `run()` blocks until a signal."""

    def __init__(self, config: EdgeConfig, *, drivers: Sequence[Any] | None = None) -> None:
        self.config = config
        if drivers is None:
            drivers = [(d.driver, d.kind) for d in config.devices if d.enabled]
        else:
            drivers = [(d, getattr(d, "kind", "unknown")) for d in drivers]
        self._drivers = [_DriverThread(driver, kind) for driver, kind in drivers]
        self.stop_event = threading.Event()
        self._drivers_stop = threading.Event()
        self.version = agent_version()
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.metrics: MetricsServer | None = None
        self._maintenance: threading.Thread | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config
        self.outbox = Outbox(
            cfg.outbox.path,
            max_bytes=cfg.outbox.max_bytes,
            max_age_s=cfg.outbox.max_age_days * 86_400,
            sync=cfg.outbox.sync,
            on_put=self._on_put,
            max_row_readings=cfg.uplink.batch_max_readings,
        )
        stats = self.outbox.stats()
        if stats.rows:
            log.info(
                "outbox: %d readings waiting from before the restart (oldest %.0f s)",
                stats.readings,
                stats.oldest_age_s,
            )
        try:
            self.uplink = Uplink(
                cfg.uplink, cfg.agent, self.outbox, version=self.version, heartbeat=self.heartbeat
            )
            if cfg.metrics.enabled:
                self.metrics = start_metrics(
                    self.outbox,
                    address=cfg.metrics.address,
                    port=cfg.metrics.port,
                    inflight=lambda: self.uplink.inflight if self.uplink else 0,
                )
            self.uplink.start()
        except BaseException:
            self.outbox.close()
            raise
        for slot in self._drivers:
            slot.thread = threading.Thread(
                target=self._supervise,
                args=(slot,),
                name=f"driver-{slot.driver.device_id}",
                daemon=True,
            )
            slot.thread.start()
        self._maintenance = threading.Thread(
            target=self._maintain, name="kota-maintenance", daemon=True
        )
        self._maintenance.start()
        log.info(
            "agent %s (%s/%s) started: %d devices, uplink %s",
            cfg.agent.id,
            cfg.agent.city,
            cfg.agent.site,
            len(self._drivers),
            cfg.uplink.url,
        )
        sd_notify("READY=1")

    def stop(self, drain_s: float = DRAIN_ON_STOP_S) -> None:
        """Stop drivers, flush for up to `drain_s`, say offline, close the outbox. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        sd_notify("STOPPING=1")
        self.stop_event.set()
        self._drivers_stop.set()
        for slot in self._drivers:
            if slot.thread is not None:
                slot.thread.join(5)
                if slot.thread.is_alive():
                    log.warning("driver %s did not stop within 5 s", slot.driver.device_id)
        if self._maintenance is not None:
            self._maintenance.join(5)
        if self.uplink is not None:
            self.uplink.stop(drain_s)
        if self.metrics is not None:
            self.metrics.stop()
        if self.outbox is not None:
            stats = self.outbox.stats()
            self.outbox.close()
            log.info(
                "agent stopped; %d readings stay in the outbox for the next start", stats.readings
            )

    def run(self, *, install_signals: bool = True) -> None:
        """Start, block until SIGTERM/SIGINT (or `stop_event`), then stop."""
        if install_signals:

            def on_signal(signum: int, _frame: FrameType | None) -> None:
                log.info("received %s, stopping", signal.Signals(signum).name)
                self.stop_event.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        self.start()
        try:
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self.stop()

    # ------------------------------------------------------------------ drivers

    def _on_put(self, device_id: str, pending: int, first: bool) -> None:
        """Wake the uplink when a device's batch starts (to time its age) or is full."""
        if self.uplink is not None and (first or pending >= self.config.uplink.batch_max_readings):
            self.uplink.wake()

    def _sink_for(self, slot: _DriverThread) -> Any:
        outbox, site = self.outbox, self.config.agent.site
        assert outbox is not None

        def sink(device_id: str, samples: Sequence[Sample]) -> None:
            if outbox.put(device_id, site, slot.kind, samples) is not None:
                slot.readings += len(samples)

        return sink

    def _supervise(self, slot: _DriverThread) -> None:
        sink = self._sink_for(slot)
        delay = 1.0
        device = slot.driver.device_id
        while not self._drivers_stop.is_set():
            started = time.monotonic()
            try:
                slot.driver.run(sink, self._drivers_stop)
                if self._drivers_stop.is_set():
                    return
                slot.last_error = "run() returned"
                log.error("driver %s returned unexpectedly; restarting in %.0f s", device, delay)
            except Exception as err:  # one bad driver must not stop the agent
                slot.last_error = f"{type(err).__name__}: {err}"
                log.exception("driver %s failed; restarting in %.0f s", device, delay)
            slot.restarts += 1
            DRIVER_RESTARTS.labels(device).inc()
            if time.monotonic() - started > 300:
                delay = 1.0
            if self._drivers_stop.wait(delay):
                return
            delay = min(delay * 2, 60.0)

    # ------------------------------------------------------------------ maintenance

    def _maintain(self) -> None:
        """Checkpoint the WAL (bounds power-loss exposure), expire old rows, feed the watchdog."""
        assert self.outbox is not None
        checkpoint_s = self.config.outbox.checkpoint_s
        watchdog_s = int(os.environ.get("WATCHDOG_USEC", "0") or 0) / 1e6
        tick = min(checkpoint_s, watchdog_s / 3 if watchdog_s else checkpoint_s, 5.0)
        next_checkpoint = time.monotonic() + checkpoint_s
        next_expire = time.monotonic()
        while not self.stop_event.wait(tick):
            now = time.monotonic()
            try:
                if now >= next_expire:
                    self.outbox.expire()
                    next_expire = now + EXPIRE_EVERY_S
                if now >= next_checkpoint:
                    self.outbox.checkpoint()
                    next_checkpoint = now + checkpoint_s
            except Exception:  # keep maintaining
                log.exception("outbox maintenance failed")
            if watchdog_s and self._healthy():
                sd_notify("WATCHDOG=1")

    def _healthy(self) -> bool:
        return self.uplink is not None and self.uplink.alive

    # ------------------------------------------------------------------ reporting

    def heartbeat(self) -> dict[str, Any]:
        """The heartbeat message body (docs/edge.md, "Heartbeat")."""
        cfg = self.config
        body: dict[str, Any] = {
            "schema": HEARTBEAT_SCHEMA,
            "agent": cfg.agent.id,
            "city": cfg.agent.city,
            "site": cfg.agent.site,
            "version": self.version,
            "sent_at": time.time_ns() // 1000,
            "started_at": int(self.started_at * 1_000_000),
            "uptime_s": round(time.monotonic() - self._started_mono, 1),
        }
        if self.outbox is not None:
            stats = self.outbox.stats()
            body["outbox"] = {
                "depth": stats.readings,
                "rows": stats.rows,
                "bytes": stats.bytes,
                "oldest_s": round(stats.oldest_age_s, 1),
                "inflight_rows": stats.inflight_rows,
                "dropped": stats.dropped,
            }
        if self.uplink is not None:
            up = self.uplink.stats()
            body["uplink"] = {
                "connects": up.connects,
                "inflight": up.inflight,
                "published_messages": up.published_messages,
                "published_readings": up.published_readings,
                "rejected": up.rejected,
            }
        body["drivers"] = {
            slot.driver.device_id: self._driver_health(slot) for slot in self._drivers
        }
        return body

    def _driver_health(self, slot: _DriverThread) -> dict[str, Any]:
        health: dict[str, Any] = {}
        try:
            health.update(slot.driver.health())
        except Exception as err:  # report, don't fail the heartbeat
            health["health_error"] = f"{type(err).__name__}: {err}"
        health.update(
            {
                "kind": slot.kind,
                "alive": bool(slot.thread and slot.thread.is_alive()),
                "restarts": slot.restarts,
                "queued_readings": slot.readings,
            }
        )
        if slot.last_error:
            health["agent_error"] = slot.last_error
        return health


def configure_logging(level: str = "info") -> None:
    """Plain lines on stderr; journald adds its own timestamps."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO), format=fmt, stream=sys.stderr
    )


def run_agent(config_path: str, log_level: str | None = None) -> None:
    """Load the config, run the agent until SIGTERM/SIGINT."""
    config = load_config(config_path)
    configure_logging(log_level or config.agent.log_level)
    Agent(config).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.agent", description="Run the Kota edge agent."
    )
    parser.add_argument(
        "--config", "-c", default="/etc/kota-edge/edge.toml", help="path of edge.toml"
    )
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    args = parser.parse_args(argv)
    try:
        run_agent(args.config, args.log_level)
    except KotaError as err:
        print(f"kota: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
