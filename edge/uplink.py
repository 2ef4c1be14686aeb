"""MQTT v5 uplink: empties the outbox into the broker, deleting rows only on PUBACK.

One paho client for the life of the process, persistent session (clean_start=False,
Session Expiry Interval 7 days by default), QoS 1 for readings and status. paho keeps the
messages it has sent and re-sends the un-acknowledged ones itself after a reconnect, so the
outbox rows they carry stay "in flight" across a broker outage; after a process restart
every row still in the outbox is sent again. At-least-once: duplicates are possible (a
PUBACK lost with the connection) and collapse downstream on (device, quantity, observed_at).

Topics (prefix `kota/v1` by default):
- `{prefix}/{city}/{site}/{device}/up`: one message per device batch (gateway.schema
  `encode_uplink`, seq = first outbox row id, user property `kota-rows` = "first-last").
- `{prefix}/{city}/{site}/{agent}/status`: retained `{"state":"online",...}` on connect,
  the Last Will `{"state":"offline","reason":"connection_lost",...}`, and a retained
  `offline` with reason `shutdown` on a clean stop.
- `{prefix}/{city}/{site}/{agent}/heartbeat`: every `agent.heartbeat_s` (QoS 0).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import AgentSection, UplinkConfig
from edge.metrics import (
    PUBLISH_LATENCY,
    PUBLISH_REJECTED,
    PUBLISHED_MESSAGES,
    PUBLISHED_READINGS,
    UPLINK_CONNECTED,
    UPLINK_CONNECTS,
)
from edge.outbox import Outbox, Row
from gateway.schema import MAX_UPLINK_BYTES, encode_uplink

log = logging.getLogger("kota.edge.uplink")

#: A device whose message the broker refused is held back this long before retrying.
REJECT_HOLD_S = 30.0
#: MQTT v5 PUBACK 0x10 "No matching subscribers": the broker accepted the message but nobody
#: will receive it (e.g. Mosquitto 2.0 restarted and the gateway's $share subscription is not
#: back yet). The readings stay in the outbox and are retried after this hold.
NO_SUBSCRIBERS = 0x10
NO_SUBSCRIBERS_HOLD_S = 2.0
#: paho's own in-flight window is ours plus room for status messages.
PAHO_INFLIGHT_MARGIN = 10


@dataclass
class _InFlight:
    device: str
    row_ids: list[int]
    enqueued: list[float]
    readings: int


@dataclass
class UplinkStats:
    connected: bool
    connects: int
    inflight: int
    published_messages: int
    published_readings: int
    last_error: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)


def _now_us() -> int:
    return time.time_ns() // 1000


class Uplink:
    """Publishes due outbox rows, processes PUBACKs, keeps status and heartbeat current."""

    def __init__(
        self,
        config: UplinkConfig,
        agent: AgentSection,
        outbox: Outbox,
        *,
        version: str,
        heartbeat: Callable[[], dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.agent = agent
        self.outbox = outbox
        self.version = version
        self.heartbeat = heartbeat
        self.clock = clock
        self._prefix = config.topic_prefix
        self.status_topic = f"{self._prefix}/{agent.city}/{agent.site}/{agent.id}/status"
        self.heartbeat_topic = f"{self._prefix}/{agent.city}/{agent.site}/{agent.id}/heartbeat"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acks: collections.deque[tuple[int, int, str, float]] = collections.deque()
        self._inflight: dict[int, _InFlight] = {}
        self._window = config.max_inflight
        self._hold: dict[str, float] = {}
        self._connected = False
        self._connects = 0
        self._published_messages = 0
        self._published_readings = 0
        self._rejected: dict[str, int] = {}
        self._last_error: str | None = None
        self._started_us = _now_us()
        self._next_heartbeat = 0.0
        self._thread: threading.Thread | None = None
        self._accepting = True
        self.client = self._make_client()

    # ------------------------------------------------------------------ client

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
        )
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
            )
        client.will_set(
            self.status_topic, self._status("offline", reason="connection_lost"), qos=1, retain=True
        )
        client.max_inflight_messages_set(cfg.max_inflight + PAHO_INFLIGHT_MARGIN)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(
            max(1, round(cfg.reconnect_min_s)), max(1, round(cfg.reconnect_max_s))
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _status(self, state: str, **extra: Any) -> bytes:
        body = {
            "state": state,
            "agent": self.agent.id,
            "city": self.agent.city,
            "site": self.agent.site,
            "version": self.version,
            "since": self._started_us,
            **extra,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start publishing."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
        self.client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="kota-uplink", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 5.0) -> None:
        """Flush what is pending for up to `drain_s`, publish `offline`, disconnect."""
        deadline = time.monotonic() + drain_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        while self._connected and time.monotonic() < deadline:
            self._process_acks()
            self._publish_due(flush=True)
            if not self._inflight and not self.outbox.due(self.clock(), 1, 0, flush=True):
                break
            self._wake.wait(0.05)
            self._wake.clear()
        self._accepting = False
        self._process_acks()
        if self._connected:
            info = self.client.publish(
                self.status_topic,
                self._status("offline", reason="shutdown", at=_now_us()),
                qos=1,
                retain=True,
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.5, min(2.0, deadline - time.monotonic() + 1)))
        self.client.disconnect()
        self.client.loop_stop()
        self._connected = False
        UPLINK_CONNECTED.set(0)

    # ------------------------------------------------------------------ callbacks (paho thread)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._last_error = f"connect refused: {reason}"
            log.error(
                "uplink: %s:%d refused the connection: %s",
                self.config.host,
                self.config.port,
                reason,
            )
            return
        # MQTT v5 Receive Maximum: the broker disconnects a client that has more QoS 1
        # messages un-acknowledged than this (Mosquitto's default is 20); paho does not
        # enforce it, so the publisher's window does (one slot kept for the status message).
        receive_max = getattr(properties, "ReceiveMaximum", None)
        if isinstance(receive_max, int) and receive_max > 0:
            self._window = max(1, min(self.config.max_inflight, receive_max - 1))
        self._connected = True
        self._connects += 1
        self._last_error = None
        UPLINK_CONNECTED.set(1)
        UPLINK_CONNECTS.inc()
        log.info(
            "uplink: connected to %s:%d (session present: %s)",
            self.config.host,
            self.config.port,
            flags.session_present,
        )
        client.publish(self.status_topic, self._status("online", at=_now_us()), qos=1, retain=True)
        self._next_heartbeat = 0.0
        self._wake.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was = self._connected
        self._connected = False
        UPLINK_CONNECTED.set(0)
        if was and self._accepting:
            self._last_error = f"disconnected: {reason}"
            log.warning(
                "uplink: disconnected (%s); %d messages in flight will be re-sent",
                reason,
                len(self._inflight),
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        # Called with paho's message lock held: only hand the ack over, never touch the outbox.
        self._acks.append((mid, int(getattr(reason, "value", 0)), str(reason), self.clock()))
        self._wake.set()

    # ------------------------------------------------------------------ publisher thread

    def wake(self) -> None:
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def alive(self) -> bool:
        """The publisher thread is running."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._process_acks()
                if self._connected:
                    self._publish_due()
                    self._maybe_heartbeat()
            except Exception:  # the publisher must outlive any one bad batch
                log.exception("uplink: publisher error")
                self._stop.wait(1.0)
            self._wake.wait(self._timeout())
            self._wake.clear()

    def _timeout(self) -> float:
        timeout = 1.0
        if self._connected and len(self._inflight) < self._window:
            due = self.outbox.next_due_in(self.clock(), self.config.batch_max_age_s)
            if due is not None:
                timeout = min(timeout, due + 0.01)
        return max(0.05, timeout)

    def _process_acks(self) -> None:
        if not self._acks:
            return
        done: list[int] = []
        while self._acks:
            mid, code, text, at = self._acks.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # a status message
            if code == NO_SUBSCRIBERS:
                self._rejected[text] = self._rejected.get(text, 0) + 1
                PUBLISH_REJECTED.labels(text).inc()
                self._hold[entry.device] = time.monotonic() + NO_SUBSCRIBERS_HOLD_S
                self.outbox.release(entry.device, entry.row_ids[0])
                log.info(
                    "uplink: no subscriber for %s yet; keeping %d readings, retrying in %.0f s",
                    entry.device,
                    entry.readings,
                    NO_SUBSCRIBERS_HOLD_S,
                )
                continue
            if code >= 0x80:
                self._rejected[text] = self._rejected.get(text, 0) + 1
                PUBLISH_REJECTED.labels(text).inc()
                self._hold[entry.device] = time.monotonic() + REJECT_HOLD_S
                self.outbox.release(entry.device, entry.row_ids[0])
                log.warning(
                    "uplink: broker refused %d readings of %s (%s); retrying in %.0f s",
                    entry.readings,
                    entry.device,
                    text,
                    REJECT_HOLD_S,
                )
                continue
            done.extend(entry.row_ids)
            self._published_messages += 1
            self._published_readings += entry.readings
            PUBLISHED_MESSAGES.inc()
            PUBLISHED_READINGS.inc(entry.readings)
            for enqueued in entry.enqueued:
                PUBLISH_LATENCY.observe(max(0.0, at - enqueued))
        if done:
            self.outbox.ack(done)

    def _publish_due(self, *, flush: bool = False) -> None:
        cfg = self.config
        while len(self._inflight) < self._window and self._connected:
            now = self.clock()
            held = {d for d, until in self._hold.items() if until > time.monotonic()}
            devices = [
                d
                for d in self.outbox.due(
                    now, cfg.batch_max_readings, cfg.batch_max_age_s, flush=flush
                )
                if d not in held
            ]
            if not devices:
                return
            for device in devices:
                if len(self._inflight) >= self._window or not self._connected:
                    return
                rows = self.outbox.take(device, cfg.batch_max_readings)
                if rows:
                    self._send(device, rows)

    def _send(self, device: str, rows: list[Row]) -> None:
        first = rows[0]
        samples = [s for row in rows for s in row.samples]
        payload = encode_uplink(
            self.agent.city,
            first.site,
            device,
            first.driver,
            samples,
            agent=self.agent.id,
            seq=first.id,
            sent_us=_now_us(),
        )
        if len(payload) > MAX_UPLINK_BYTES and len(rows) > 1:
            half = len(rows) // 2
            self._send(device, rows[:half])
            self._send(device, rows[half:])
            return
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("kota-rows", f"{first.id}-{rows[-1].id}")]
        topic = f"{self._prefix}/{self.agent.city}/{first.site}/{device}/up"
        info = self.client.publish(topic, payload, qos=1, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("uplink: publish of %s failed locally (%s); will retry", device, info.rc)
            self.outbox.release(device, first.id)
            return
        # NO_CONN: paho keeps the message and sends it on reconnect, so it is in flight too.
        self._inflight[info.mid] = _InFlight(
            device,
            [row.id for row in rows],
            [row.enqueued_at for row in rows],
            len(samples),
        )

    def _maybe_heartbeat(self) -> None:
        if self.heartbeat is None:
            return
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.agent.heartbeat_s
        try:
            body = self.heartbeat()
        except Exception:  # a heartbeat bug must not stop the uplink
            log.exception("uplink: building the heartbeat failed")
            return
        self.client.publish(
            self.heartbeat_topic,
            json.dumps(body, separators=(",", ":"), default=str).encode(),
            qos=0,
        )

    def stats(self) -> UplinkStats:
        return UplinkStats(
            connected=self._connected,
            connects=self._connects,
            inflight=len(self._inflight),
            published_messages=self._published_messages,
            published_readings=self._published_readings,
            last_error=self._last_error,
            rejected=dict(self._rejected),
        )
