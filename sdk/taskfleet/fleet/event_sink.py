"""Where a process's events go (a worker child's, a worker's, a publisher's): its own fleet store, opened on first
use (so after any fork), written best effort.

Events are observability, never part of running a task: a failure to open the store or to emit is logged (at most
once per ``LOG_EVERY_S``, with how many events were dropped since the last warning), the events are dropped, and
the caller goes on. After a failure the store is closed and not tried again for ``RETRY_AFTER_S``, so a broker
that is down costs one failed call per interval, not one per batch.

Not thread-safe, as a fleet store is not: one thread emits through a sink (a child's background thread, the
supervisor's heartbeat thread), or the caller holds a lock (``taskfleet.fleet.sent_events``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskfleet.brokers.fleet_store import FleetStore

log = logging.getLogger("taskfleet.events")

#: Seconds between two warnings about events that could not be emitted.
LOG_EVERY_S = 30.0
#: Seconds a sink waits after a failure before it opens the store again.
RETRY_AFTER_S = 5.0


class EventSink:
    """Emits batches of encoded events (``FleetEvent.to_json``) through the store ``open_store`` returns, opened
    on the first ``emit``."""

    def __init__(self, open_store: Callable[[], FleetStore], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._open_store = open_store
        self._clock = clock
        self._store: FleetStore | None = None
        self._retry_at = 0.0
        self._logged_at: float | None = None
        #: Events dropped since the last warning (and in all, for tests and stats).
        self.dropped_unlogged = 0
        self.dropped = 0
        self.emitted = 0

    def emit(self, events: Sequence[bytes]) -> bool:
        """Append ``events`` to the stream in one call; False (and the events dropped) when that failed."""
        if not events:
            return True
        now = self._clock()
        if self._store is None:
            if now < self._retry_at:
                self._drop(len(events), None, now)
                return False
            try:
                self._store = self._open_store()
            except Exception as exc:  # noqa: BLE001 - any failure: events never stop a worker
                self._failed(len(events), exc, now)
                return False
        try:
            self._store.emit_events(events)
        except Exception as exc:  # noqa: BLE001 - as above
            self._failed(len(events), exc, now)
            return False
        self.emitted += len(events)
        return True

    def close(self) -> None:
        """Close the store, if open (errors ignored: the process is ending or the store is broken)."""
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):  # nothing more to do with a store that cannot close
                store.close()

    def drop(self, count: int, error: BaseException | None) -> None:
        """Count ``count`` events dropped before they reached ``emit`` (``error``: why, logged rate-limited)."""
        self._drop(count, error, self._clock())

    def _failed(self, count: int, exc: BaseException, now: float) -> None:
        self.close()
        self._retry_at = now + RETRY_AFTER_S
        self._drop(count, exc, now)

    def _drop(self, count: int, exc: BaseException | None, now: float) -> None:
        self.dropped += count
        self.dropped_unlogged += count
        if exc is not None and (self._logged_at is None or now - self._logged_at >= LOG_EVERY_S):
            log.warning("could not emit events, %d dropped (tasks are not affected; trying again in %.0f s): %s: %s",
                        self.dropped_unlogged, RETRY_AFTER_S, type(exc).__name__, exc)
            self._logged_at = now
            self.dropped_unlogged = 0
