"""A serial port that survives being unplugged: reopened with capped exponential backoff.

USB-serial adapters disappear (a loose cable, a brown-out, a kernel re-enumeration that turns
``/dev/ttyUSB0`` into ``/dev/ttyUSB1``). Configure ports by their stable udev names,
``/dev/serial/by-id/usb-<vendor>_<product>_<serial>-if00-port0``, or by the symlinks of
``edge/deploy/99-kota-serial.rules`` (``/dev/kota/pms-1``), never by ``ttyUSB<n>``.

Every open attempt after the first is counted in ``kota_edge_port_reopens_total{device}``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, ClassVar

import serial

from edge.drivers.base import (
    AgentContext,
    Backoff,
    DeviceStats,
    Frame,
    Sink,
    StreamParser,
    deliver,
    now_us,
    samples_from,
)
from edge.drivers.metrics import DriverMetrics

log = logging.getLogger("kota.edge.drivers.serial")

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class SerialPort:
    """pyserial wrapper: ``read``/``write`` never raise; a lost port is closed and reopened."""

    def __init__(
        self,
        url: str,
        stats: DeviceStats,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        read_timeout: float = 0.1,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        exclusive: bool = True,
    ) -> None:
        self.url = url
        self.stats = stats
        self.settings: dict[str, Any] = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": PARITIES[parity],
            "stopbits": stopbits,
            "timeout": read_timeout,
            "write_timeout": 2.0,
        }
        self.exclusive = exclusive
        self.backoff = Backoff(backoff_initial, backoff_max)
        self.ser: serial.Serial | None = None
        self.state = "closed"  # closed | ok | reopening
        self.opens = 0  # successful opens (a new session starts each time)
        self._attempts = 0

    @property
    def is_open(self) -> bool:
        return self.ser is not None

    def open(self, stop: threading.Event) -> bool:
        """Open the port, or wait the backoff delay and return False (call again)."""
        if self.ser is not None:
            return True
        if self._attempts:
            self.stats.reopen()
        self._attempts += 1
        try:
            ser = serial.serial_for_url(self.url, do_not_open=True, **self.settings)
            if self.exclusive and hasattr(ser, "exclusive"):
                ser.exclusive = True
            ser.open()  # pyserial flushes the input buffer on open: bytes queued while closed are lost
        except (serial.SerialException, OSError, ValueError) as err:
            self.state = "reopening"
            self.stats.last_error = f"open {self.url}: {err}"
            delay = self.backoff.next()
            log.warning(
                "%s: cannot open %s (%s); retry in %.1f s", self.stats.device, self.url, err, delay
            )
            stop.wait(delay)
            return False
        self.ser = ser
        self.state = "ok"
        self.opens += 1
        self.backoff.reset()
        log.info("%s: opened %s", self.stats.device, self.url)
        return True

    def lost(self, err: BaseException) -> None:
        """The port failed: close it; the next open() reopens it."""
        self.stats.last_error = f"{self.url}: {err}"
        log.warning("%s: port %s lost (%s); reopening", self.stats.device, self.url, err)
        self.close()
        self.state = "reopening"

    def read(self) -> bytes:
        """What arrived within the read timeout (``b""`` on timeout or a lost port)."""
        if self.ser is None:
            return b""
        try:
            data = self.ser.read(1)
            if data:
                waiting = self.ser.in_waiting
                if waiting:
                    data += self.ser.read(waiting)
            return bytes(data)
        except (serial.SerialException, OSError, TypeError, AttributeError) as err:
            # pyserial raises TypeError/AttributeError when the fd vanishes mid-call
            self.lost(err)
            return b""

    def write(self, data: bytes) -> bool:
        if self.ser is None:
            return False
        try:
            self.ser.write(data)
            self.ser.flush()
            return True
        except (serial.SerialException, OSError, TypeError, AttributeError) as err:
            self.lost(err)
            return False

    def close(self) -> None:
        if self.ser is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self.ser.close()
            self.ser = None
        self.state = "closed"


class SerialDriver:
    """The read loop shared by the UART drivers (pms5003, sds011, traffic_nmea).

    Subclasses set ``kind`` and implement ``new_parser()``, ``on_open()`` (mode commands),
    ``tick(port, now)`` (scheduled commands; ``now`` is monotonic) and ``on_frame()``.
    """

    kind = "serial"

    def __init__(
        self,
        device_id: str,
        ctx: AgentContext,
        *,
        port: str,
        baudrate: int,
        reopen_max_delay: float = 30.0,
        metrics: DriverMetrics | None = None,
    ) -> None:
        self.device_id = device_id
        self.ctx = ctx
        self.port_url = port
        self.baudrate = baudrate
        self.reopen_max_delay = reopen_max_delay
        self.stats = DeviceStats(self.kind, device_id, metrics)
        self.port: SerialPort | None = None
        self.parser: StreamParser = self.new_parser()
        self._state = "starting"

    # -- hooks -------------------------------------------------------------------------
    def new_parser(self) -> StreamParser:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_open(self, port: SerialPort) -> None:
        """Called after every (re)open, before reading."""

    def tick(self, port: SerialPort, now: float) -> None:
        """Called between reads (about every read timeout)."""

    def on_frame(self, frame: Frame, sink: Sink) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- Driver ------------------------------------------------------------------------
    def run(self, sink: Sink, stop: threading.Event) -> None:
        port = self.port = SerialPort(
            self.port_url, self.stats, baudrate=self.baudrate, backoff_max=self.reopen_max_delay
        )
        crashes = Backoff(1.0, 60.0)
        try:
            while not stop.is_set():
                try:
                    self._session(port, sink, stop)
                except Exception as err:
                    self.stats.last_error = f"internal: {err!r}"
                    self._state = "error"
                    log.exception("%s: driver loop failed; restarting", self.device_id)
                    port.close()
                    stop.wait(crashes.next())
        finally:
            port.close()
            self._state = "stopped"

    def _session(self, port: SerialPort, sink: Sink, stop: threading.Event) -> None:
        if not port.open(stop):
            self._state = "reopening"
            return
        self._state = "ok"
        self.parser = self.new_parser()
        self.on_open(port)
        while not stop.is_set() and port.is_open:
            self.tick(port, time.monotonic())
            data = port.read()
            if data:
                for frame in self.parser.feed(data):
                    self.on_frame(frame, sink)
        if not stop.is_set():
            self._state = "reopening"

    def health(self) -> dict[str, object]:
        out = self.stats.snapshot(self._state)
        out["port"] = self.port_url
        return out


class PolledSerialDriver(SerialDriver):
    """A particulate sensor read once per ``interval``: streaming, polled or duty-cycled.

    * streaming mode (the sensor sends by itself): the first valid frame after each due time
      is emitted (``interval = 0``: every frame);
    * polled mode (``polled_mode``): a read command each interval, ``no_response`` counted when
      no frame comes within ``reply_timeout``;
    * ``duty_cycle``: wake, discard ``warmup`` seconds of frames, take one reading, sleep.

    Subclasses define ``units``, ``polled_mode`` and the command bytes.
    """

    polled_mode = "passive"
    units: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        device_id: str,
        ctx: AgentContext,
        *,
        port: str,
        baudrate: int,
        mode: str,
        interval: float = 60.0,
        duty_cycle: bool = False,
        warmup: float = 30.0,
        reply_timeout: float = 3.0,
        reopen_max_delay: float = 30.0,
        metrics: DriverMetrics | None = None,
    ) -> None:
        super().__init__(
            device_id,
            ctx,
            port=port,
            baudrate=baudrate,
            reopen_max_delay=reopen_max_delay,
            metrics=metrics,
        )
        self.mode = mode
        self.interval = interval
        self.duty_cycle = duty_cycle
        self.warmup = warmup
        self.reply_timeout = reply_timeout
        self._phase = "skip"  # skip | want | warming | asleep
        self._next_due = 0.0
        self._deadline = 0.0

    @property
    def polled(self) -> bool:
        return self.mode == self.polled_mode

    # -- commands (subclasses) ---------------------------------------------------------
    def open_commands(self) -> list[bytes]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_command(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def sleep_command(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def wake_command(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- scheduling --------------------------------------------------------------------
    def on_open(self, port: SerialPort) -> None:
        # the sensor keeps its mode and sleep state while the port is closed: set both
        if self.duty_cycle:
            port.write(self.wake_command())
        for cmd in self.open_commands():
            port.write(cmd)
        self._phase = "asleep" if self.duty_cycle else "skip"
        self._next_due = 0.0  # first reading at once

    def tick(self, port: SerialPort, now: float) -> None:
        due = now >= self._next_due
        if self.duty_cycle:
            if self._phase == "asleep" and due:
                port.write(self.wake_command())
                self._phase, self._deadline = "warming", now + self.warmup
                self._schedule(now)
            elif self._phase == "warming" and now >= self._deadline:
                self._request(port, now)
            elif self._phase == "want" and now >= self._deadline:
                self.stats.reject("no_response")
                self._after_reading(port)
            return
        if self._phase == "want" and self.polled and now >= self._deadline:
            self.stats.reject("no_response")
            self._phase = "skip"
        if self._phase == "skip" and due:
            self._schedule(now)
            self._request(port, now)

    def _schedule(self, now: float) -> None:
        self._next_due = now + self.interval if self.interval else now

    def _request(self, port: SerialPort, now: float) -> None:
        if self.polled:
            port.write(self.read_command())
        self._phase = "want"
        # a streaming sensor sends every 1-2.3 s: give it that much more
        self._deadline = now + self.reply_timeout + (0.0 if self.polled else 2.5)

    def _after_reading(self, port: SerialPort | None) -> None:
        if self.duty_cycle and port is not None:
            port.write(self.sleep_command())
            self._phase = "asleep"
        else:
            self._phase = "skip"

    def on_frame(self, frame: Frame, sink: Sink) -> None:
        if frame.kind != "data":
            return
        every_frame = self.interval == 0 and not self.duty_cycle and not self.polled
        if self._phase != "want" and not every_frame:
            self.stats.ok(0)  # a valid frame between readings (or during warm-up)
            return
        observed_us, flags = now_us(self.ctx.clock)
        samples = samples_from(frame.values, self.units, observed_us, flags)
        if deliver(sink, self.device_id, samples, self.stats):
            self.stats.ok(len(samples))
        self._after_reading(self.port)
