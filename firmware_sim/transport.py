"""Expose simulated devices on pseudo-terminals, so the edge agent opens them like USB adapters.

One :class:`PtyBus` is one serial line: a pty whose slave side the edge opens with pyserial
(``serial.Serial(bus.path, 9600)``) and whose master side a background thread drives. Every
device on the bus gets every byte the host writes (``receive``) and the thread collects what
the devices send (``emit``) every ``tick_s``. Several Modbus slaves on one bus behave like
drops on one RS-485 line; UART sensors (PMS5003, SDS011, traffic counter) get a bus each.

``bus.path`` is a stable symlink (like ``/dev/serial/by-id/...``) in a private temp dir unless
``link=`` names one; it always points at the current pty. ``close()`` unplugs the device (the
edge's open port fails with an I/O error, the symlink disappears), ``reopen()`` plugs it back
(a NEW pty, the SAME symlink path). ``shutdown()`` (or leaving the ``with`` block) stops
everything and removes the temp dir; no thread or file descriptor is left behind.

    with PtyBus([PMS5003(source, "pm-1")]) as bus:
        port = serial.Serial(bus.path, 9600, timeout=2)
        frame = port.read(32)

Limits: bytes are delivered at once, not paced at the baud rate (the slave's termios carries
the baud rate so pyserial accepts it). While nobody reads the port, the kernel buffers a few
KB; beyond that (and beyond ``max_pending`` bytes here) bytes are dropped like a UART overrun
and counted in ``bytes_dropped``. pyserial flushes stale input when it opens the port.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from firmware_sim.base import SerialDevice


def _baud_constant(baudrate: int) -> int:
    try:
        return int(getattr(termios, f"B{baudrate}"))
    except AttributeError:
        raise ValueError(f"baud rate {baudrate} has no termios constant") from None


class PtyBus:
    """A serial line on a pty, driven by a background thread."""

    def __init__(
        self,
        devices: Sequence[SerialDevice],
        *,
        link: str | os.PathLike[str] | None = None,
        baudrate: int | None = None,
        tick_s: float = 0.005,
        clock: Callable[[], float] = time.time,
        name: str | None = None,
        max_pending: int = 65536,
        start: bool = True,
    ) -> None:
        if not devices:
            raise ValueError("a bus needs at least one device")
        self.devices = list(devices)
        self.name = name or self.devices[0].name
        if baudrate is None:
            settings = getattr(self.devices[0], "serial", None)
            baudrate = getattr(settings, "baudrate", 9600)
        self.baudrate = int(baudrate)
        _baud_constant(self.baudrate)
        self.tick_s = tick_s
        self.clock = clock
        self.max_pending = max_pending
        self._own_dir: str | None = None
        if link is None:
            self._own_dir = tempfile.mkdtemp(prefix="kota-sim-")
            link = os.path.join(self._own_dir, f"usb-kota-sim-{_safe(self.name)}-if00")
        self.link = Path(link)
        self._master: int | None = None
        self._slave: int | None = None
        self._pty_path = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.bytes_dropped = 0
        self.errors: list[str] = []
        if start:
            self.reopen()

    # -- public API -------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The stable path the edge opens (a symlink to the current pty)."""
        return str(self.link)

    @property
    def pty_path(self) -> str:
        """The current pty slave path (``/dev/pts/N``); '' while unplugged."""
        return self._pty_path

    @property
    def plugged(self) -> bool:
        return self._thread is not None

    def reopen(self) -> None:
        """Plug the device in: a new pty, the symlink pointed at it, the thread started."""
        with self._lock:
            if self._thread is not None:
                return
            master, slave = os.openpty()
            try:
                tty.setraw(slave)
                attrs = termios.tcgetattr(slave)
                attrs[4] = attrs[5] = _baud_constant(self.baudrate)
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
                os.set_blocking(master, False)
                pty_path = os.ttyname(slave)
                self.link.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.link.with_name(self.link.name + ".tmp")
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                os.symlink(pty_path, tmp)
                os.replace(tmp, self.link)
            except BaseException:
                os.close(master)
                os.close(slave)
                raise
            self._master, self._slave, self._pty_path = master, slave, pty_path
            self._pending.clear()
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"kota-sim-bus-{self.name}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Unplug: stop the thread, close the pty, remove the symlink."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._stop.set()
            thread.join(timeout=5)
            self._thread = None
            for fd in (self._master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = None
            self._pty_path = ""
            with contextlib.suppress(FileNotFoundError):
                if self.link.is_symlink():
                    self.link.unlink()

    def shutdown(self) -> None:
        """Close for good and remove the temp dir this bus created."""
        self.close()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def __enter__(self) -> PtyBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # -- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        master = self._master
        assert master is not None
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([master], [], [], self.tick_s)
            except (OSError, ValueError):
                return
            now = self.clock()
            if readable:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError as err:  # EIO: no process has the slave open right now
                    if err.errno != errno.EIO:
                        self.errors.append(str(err))
                    data = b""
                    self._stop.wait(self.tick_s)
                if data:
                    self.bytes_in += len(data)
                    for dev in self.devices:
                        self._guard(dev.receive, data, now)
            for dev in self.devices:
                out = self._guard(dev.emit, now)
                if out:
                    self._pending += out
            self._flush(master)

    def _guard(self, fn: Callable[..., bytes | None], *args: object) -> bytes | None:
        """A device bug is recorded, never fatal to the bus."""
        try:
            return fn(*args)
        except Exception as err:  # reported in self.errors, never fatal
            self.errors.append(f"{type(err).__name__}: {err}")
            return None

    def _flush(self, master: int) -> None:
        if not self._pending:
            return
        try:
            n = os.write(master, self._pending)
        except BlockingIOError:
            n = 0
        except OSError as err:
            self.errors.append(str(err))
            n = 0
        self.bytes_out += n
        del self._pending[:n]
        if len(self._pending) > self.max_pending:
            over = len(self._pending) - self.max_pending
            del self._pending[:over]
            self.bytes_dropped += over


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "device"
