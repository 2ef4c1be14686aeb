"""Acknowledged MQTT consumption: QoS 1, persistent session, PUBACK only after the commit.

`MqttBatchConsumer` subscribes (MQTT v5, QoS 1, optionally `$share/<group>/<filter>`) with a
persistent session (clean_start=False + Session Expiry Interval) and manual acknowledgements.
Messages are collected into batches (`batch_max` messages or `batch_max_age_s` seconds); the
handler is called with a batch and, only once it has returned (the write transaction has
committed), every message of the batch is acknowledged. Therefore:

- a crash (SIGKILL, power loss) at any point loses nothing: the broker redelivers every
  unacknowledged message to the persistent session on reconnect, and the idempotent writer
  collapses what had already been committed;
- a failing handler (database down) is retried with capped exponential backoff on the SAME
  batch, nothing is acknowledged meanwhile, and once `receive_maximum` messages are
  unacknowledged the broker stops sending and queues the backlog (backpressure).

Throughput: see docs/ingest.md ("The QoS 1 hazard"). The two things that matter are the
Receive Maximum we announce (the broker never has more than that many unacknowledged
messages in flight to us: with mosquitto's default of 20 and acks only after a commit
every 0.5 s, a consumer gets 40 msg/s) and paho's reader, which handles one packet per
select() wake-up with three recv() calls each; `_FastClient` drains the socket per wake-up
through a 64 KiB buffer.

Run a demo consumer (prints counts, or writes reading-v1 JSON Lines to a database):
    python -m ingest.consumer --url mqtt://127.0.0.1:1883 --topic 'kota/v1/normalized/#'
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.metrics import IngestMetrics
from kota_cli.errors import ConfigError, KotaError

log = logging.getLogger("kota.ingest.consumer")

DEFAULT_SESSION_EXPIRY_S = 7 * 24 * 3600  # keep the backlog across a week-long consumer outage
MAX_RECEIVE_MAXIMUM = 65535


@dataclass(frozen=True, slots=True)
class ConsumedMessage:
    """One received message as handed to the handler (gateway.normalize.Message compatible)."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    received_at: float  # time.time() when it was read from the socket
    generation: int  # connection it arrived on: acks are only valid on that connection


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def parse_mqtt_url(url: str, setting: str = "KOTA_MQTT_URL") -> BrokerAddress:
    """mqtt://[user[:password]@]host[:port] or mqtts://... (TLS, default port 8883)."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(f"{setting}: {url!r} is not an mqtt:// or mqtts:// URL")
    tls = parsed.scheme in ("mqtts", "ssl")
    if not parsed.hostname:
        raise ConfigError(f"{setting}: {url!r} has no host")
    try:
        port = parsed.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"{setting}: {url!r} has an invalid port") from None
    return BrokerAddress(
        parsed.hostname,
        port,
        tls,
        unquote(parsed.username) if parsed.username else None,
        unquote(parsed.password) if parsed.password else None,
    )


class _FastClient(mqtt.Client):
    """paho Client whose reader drains every complete packet per select() wake-up.

    Stock paho 2.x reads ONE packet per wake-up of its loop (max_packets is recomputed from
    the outgoing queue, i.e. 1 for a subscriber) with recv(1), recv(1), recv(n) per packet.
    Here `_sock_recv` serves those small reads from a 64 KiB buffer and `loop_read` keeps
    reading until the socket would block, which removes most syscalls and select() calls.
    Falls back to stock behaviour if paho's internals are not the expected ones.
    """

    _BURST = 20000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kota_buf = bytearray()
        self._kota_fast = hasattr(self, "_packet_read") and hasattr(self, "_loop_rc_handle")

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._kota_fast:
            return super()._sock_recv(bufsize)
        buf = self._kota_buf
        if not buf:
            chunk = super()._sock_recv(65536)  # raises BlockingIOError when nothing is there
            if not chunk:
                return b""
            buf += chunk
        out = bytes(buf[:bufsize])
        del buf[:bufsize]
        return out

    def _sock_close(self) -> None:
        self._kota_buf.clear()
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        if not self._kota_fast:
            return super().loop_read(max_packets)
        if self._sock is None:
            return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
        for _ in range(self._BURST):
            if self._sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        # Bytes left in our buffer would not wake select(): parse them now (each packet is
        # complete or waits for more bytes, which will wake select()).
        while self._kota_buf and self._sock is not None:
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


Handler = Callable[[Sequence[ConsumedMessage]], Any]


class MqttBatchConsumer:
    """MQTT v5 shared-subscription consumer that acknowledges a batch after its handler returns.

    `start()` connects (raising KotaError when the broker is unreachable or refuses us) and
    starts the network and batch threads; `run()` blocks until `stop()`; `error` holds a
    fatal exception (e.g. the broker refused the credentials later on) for supervisors.
    The handler runs on the batch thread, one batch at a time.
    """

    def __init__(
        self,
        url: str,
        topic_filter: str,
        handler: Handler,
        *,
        client_id: str,
        group: str | None = None,
        batch_max: int = 5000,
        batch_max_age_s: float = 0.5,
        username: str | None = None,
        password: str | None = None,
        tls: bool | ssl.SSLContext | None = None,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        receive_maximum: int | None = None,
        keepalive: int = 30,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 15.0,
        connect_timeout_s: float = 10.0,
        metrics: IngestMetrics | None = None,
        fast_reader: bool = True,
    ) -> None:
        if batch_max < 1:
            raise ConfigError("batch_max must be at least 1")
        if not client_id:
            raise ConfigError("client_id is required (the persistent session is keyed by it)")
        self.address = parse_mqtt_url(url)
        self.topic_filter = topic_filter
        self.subscription = f"$share/{group}/{topic_filter}" if group else topic_filter
        self.handler = handler
        self.client_id = client_id
        self.batch_max = batch_max
        self.batch_max_age_s = batch_max_age_s
        # Pipelining: while one batch is being written the next one keeps arriving.
        self.receive_maximum = min(MAX_RECEIVE_MAXIMUM, receive_maximum or max(2 * batch_max, 100))
        self.session_expiry_s = session_expiry_s
        self.keepalive = keepalive
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connect_timeout_s = connect_timeout_s
        self.metrics = metrics
        self.error: BaseException | None = None
        # counters (read by tests, stats lines)
        self.received = 0
        self.acked = 0
        self.batches = 0
        self.handler_failures = 0
        self.reconnects = 0

        self._cond = threading.Condition()
        self._pending: list[ConsumedMessage] = []
        self._generation = 0
        self._unacked = 0
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._attempted = threading.Event()
        self._connect_error: str | None = None
        self._batch_thread: threading.Thread | None = None
        self._started = False

        client_cls = _FastClient if fast_reader else mqtt.Client
        self._client = client_cls(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        user = username if username is not None else self.address.username
        secret = password if password is not None else self.address.password
        if user is not None:
            self._client.username_pw_set(user, secret)
        use_tls = self.address.tls if tls is None else tls
        if isinstance(use_tls, ssl.SSLContext):
            self._client.tls_set_context(use_tls)
        elif use_tls:
            self._client.tls_set_context(ssl.create_default_context())
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        if reason.is_failure:
            self._connect_error = f"broker refused the connection: {reason}"
            if self._started and str(reason) in ("Not authorized", "Bad user name or password"):
                self.error = KotaError(f"MQTT {self.address.host}:{self.address.port}: {reason}")
            log.warning("MQTT connect refused: %s", reason)
            self._attempted.set()
            return
        with self._cond:
            self._generation += 1
            if self._generation > 1:
                self.reconnects += 1
            if flags.session_present:
                # Unacknowledged messages of the old connection will be redelivered: drop
                # our copies not yet handed to the handler.
                self._pending = [m for m in self._pending if m.generation == self._generation]
            elif self._generation > 1:
                log.warning(
                    "MQTT session was not present on reconnect: the broker lost our "
                    "queue (session expired or broker without persistence)"
                )
            self._unacked = len(self._pending)
            self._set_unacked_gauge()
        client.subscribe(self.subscription, qos=1)
        self._connected.set()
        self._attempted.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._connect_error = "connection refused or unreachable"
        self._attempted.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any = None
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("MQTT connection lost (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        message = ConsumedMessage(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            mid=msg.mid,
            dup=bool(msg.dup),
            received_at=time.time(),
            generation=self._generation,
        )
        with self._cond:
            self._pending.append(message)
            self.received += 1
            if msg.qos > 0:
                self._unacked += 1
            if len(self._pending) >= self.batch_max or len(self._pending) == 1:
                self._cond.notify()

    def _set_unacked_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.unacked.set(self._unacked)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Connect (waiting up to connect_timeout_s) and start consuming in the background."""
        if self._started:
            return
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        try:
            self._client.connect_async(
                self.address.host,
                self.address.port,
                self.keepalive,
                clean_start=False,
                properties=props,
            )
        except (OSError, ValueError) as err:
            raise KotaError(f"MQTT {self.address.host}:{self.address.port}: {err}") from None
        self._client.loop_start()
        self._attempted.wait(self.connect_timeout_s)
        if not self._connected.is_set():
            self._client.loop_stop()
            reason = self._connect_error or f"no answer within {self.connect_timeout_s:.0f} s"
            raise KotaError(
                f"KOTA_MQTT_URL: could not connect to {self.address.host}:{self.address.port}: {reason}"
            )
        self._started = True
        self._batch_thread = threading.Thread(
            target=self._batch_loop, daemon=True, name=f"kota-batches-{self.client_id}"
        )
        self._batch_thread.start()

    def run(self, timeout: float | None = None) -> None:
        """start() if needed, then block until stop() (or `timeout` seconds)."""
        self.start()
        self._stopping.wait(timeout)
        self.stop()

    def stop(self) -> None:
        """Stop after the batch in progress (if any) is handled and acknowledged."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        thread = self._batch_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)
        if self._started:
            self._started = False
            self._flush_and_disconnect()

    close = stop

    def _flush_and_disconnect(self) -> None:
        # give the network thread a moment to write the last PUBACKs before DISCONNECT
        deadline = time.monotonic() + 2.0
        while getattr(self._client, "_out_packet", None) and time.monotonic() < deadline:
            time.sleep(0.01)
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        self._client.disconnect(properties=props)
        self._client.loop_stop()

    # ------------------------------------------------------------------ batches
    def _next_batch(self) -> list[ConsumedMessage] | None:
        with self._cond:
            while True:
                if self._stopping.is_set():
                    return None
                if self._pending:
                    oldest = self._pending[0].received_at
                    wait = oldest + self.batch_max_age_s - time.time()
                    if len(self._pending) >= self.batch_max or wait <= 0:
                        batch = self._pending[: self.batch_max]
                        del self._pending[: self.batch_max]
                        return batch
                    self._cond.wait(wait)
                else:
                    self._cond.wait(1.0)

    def _batch_loop(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if not self._handle_with_retry(batch):
                    return  # stopping: leave the batch unacknowledged, it will be redelivered
                self._ack(batch)
        except BaseException as err:  # a bug: make it visible to supervisors
            log.exception("ingest batch loop died")
            self.error = err

    def _handle_with_retry(self, batch: list[ConsumedMessage]) -> bool:
        delay = self.backoff_initial_s
        while True:
            try:
                self.handler(batch)
                self.batches += 1
                return True
            except Exception as err:
                self.handler_failures += 1
                log.warning(
                    "batch of %d failed (%s: %s); retrying in %.1f s",
                    len(batch),
                    type(err).__name__,
                    str(err).strip().splitlines()[0] if str(err).strip() else "",
                    delay,
                )
                if self._stopping.wait(delay):
                    return False
                delay = min(delay * 2, self.backoff_max_s)

    def _ack(self, batch: list[ConsumedMessage]) -> None:
        with self._cond:
            generation = self._generation
        n = 0
        for message in batch:
            # An ack on a newer connection would name a packet id the broker may have reused.
            if message.qos > 0 and message.generation == generation:
                self._client.ack(message.mid, message.qos)
                n += 1
        with self._cond:
            if generation == self._generation:
                self._unacked = max(0, self._unacked - n)
            self.acked += n
            self._set_unacked_gauge()


# ---------------------------------------------------------------------- python -m entry
def _main() -> None:  # pragma: no cover - exercised by the subprocess tests through the CLI
    import click

    @click.command()
    @click.option("--url", envvar="KOTA_MQTT_URL", required=True)
    @click.option("--topic", default="kota/v1/normalized/#", show_default=True)
    @click.option("--client-id", default="kota-ingest-demo", show_default=True)
    @click.option("--group", default=None)
    @click.option(
        "--database-url",
        envvar="KOTA_DATABASE_URL",
        default=None,
        help="Write reading-v1 JSON Lines payloads here (else just count).",
    )
    def demo(
        url: str, topic: str, client_id: str, group: str | None, database_url: str | None
    ) -> None:
        """Demo consumer: count messages, or write normalised readings to a database."""
        if database_url:
            from ingest.service import ReadingsHandler
            from ingest.writer import ReadingWriter

            handler: Handler = ReadingsHandler(ReadingWriter(database_url))
        else:

            def handler(batch: Sequence[ConsumedMessage]) -> None:
                click.echo(f"batch of {len(batch)}")

        MqttBatchConsumer(url, topic, handler, client_id=client_id, group=group).run()

    demo()


if __name__ == "__main__":
    _main()
