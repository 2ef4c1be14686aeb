"""Helpers to run a driver in tests and demos: a collecting sink and a driver thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from edge.drivers.base import Driver
from gateway.schema import Sample


class CollectingSink:
    """A thread-safe sink that keeps every batch: ``batches`` = [(device_id, samples)]."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[Sample]]] = []
        self._cond = threading.Condition()

    def __call__(self, device_id: str, samples: Sequence[Sample]) -> None:
        with self._cond:
            self.batches.append((device_id, list(samples)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` (checked after every batch) or the timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def values(self, device_id: str | None = None) -> list[dict[str, float]]:
        """One {quantity: value} dict per batch."""
        with self._cond:
            return [
                {s.quantity: s.value for s in samples}
                for dev, samples in self.batches
                if device_id is None or dev == device_id
            ]


@contextlib.contextmanager
def running(
    driver: Driver, sink: Callable[[str, Sequence[Sample]], None]
) -> Iterator[threading.Event]:
    """Run ``driver`` in a thread for the ``with`` block; stop and join it afterwards."""
    stop = threading.Event()
    thread = threading.Thread(
        target=driver.run, args=(sink, stop), daemon=True, name=f"driver-{driver.device_id}"
    )
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=10)
        if thread.is_alive():  # pragma: no cover - a test failure, not a hang
            raise RuntimeError(f"driver {driver.device_id} did not stop within 10 s")
