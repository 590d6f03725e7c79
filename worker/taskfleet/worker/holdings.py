"""The deliveries a worker child holds: the one running and the prefetched ones waiting, numbered in fetch order."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskfleet.brokers.base import Delivery


@dataclass(frozen=True, slots=True)
class Held:
    """A delivery in a child, with its sequence number: 1, 2, 3... in the order the child fetched them. Events and
    ``Progress`` name deliveries by it (a message id may come back to the same child)."""

    seq: int
    delivery: Delivery


class Holdings:
    """The deliveries a child holds: the one running and the prefetched ones waiting. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[Held] = deque()
        self._running: Held | None = None
        self._running_since = 0.0
        self._last_seq = 0

    def add(self, batch: Sequence[Delivery], *, on_added: Callable[[list[Held]], None] | None = None) -> list[Held]:
        """Hold ``batch`` after the deliveries already waiting; returns them numbered. ``on_added`` is called with
        them before anything else may change the holdings (so they are reported before they can be given back)."""
        with self._lock:
            held = [Held(self._last_seq + i, d) for i, d in enumerate(batch, start=1)]
            self._last_seq += len(held)
            self._waiting.extend(held)
            if held and on_added is not None:
                on_added(held)
            return held

    def start_next(self) -> Held | None:
        with self._lock:
            self._running = self._waiting.popleft() if self._waiting else None
            self._running_since = time.monotonic()
            return self._running

    def finish(self) -> None:
        with self._lock:
            self._running = None

    def waiting(self) -> int:
        """How many unstarted deliveries wait."""
        with self._lock:
            return len(self._waiting)

    def running(self) -> Held | None:
        with self._lock:
            return self._running

    def all(self) -> list[Delivery]:
        with self._lock:
            return [h.delivery for h in (*self._waiting, *([self._running] if self._running else []))]

    def take_waiting(self, *, if_running_longer_than_s: float | None = None,
                     on_taken: Callable[[list[Held]], None] | None = None) -> list[Held]:
        """Remove and return the unstarted deliveries (only when a task has run that long, if given). ``on_taken``
        is called with them, if any, before anything else may change the holdings."""
        with self._lock:
            if if_running_longer_than_s is not None and (
                self._running is None or time.monotonic() - self._running_since < if_running_longer_than_s
            ):
                return []
            taken = list(self._waiting)
            self._waiting.clear()
            if taken and on_taken is not None:
                on_taken(taken)
            return taken
