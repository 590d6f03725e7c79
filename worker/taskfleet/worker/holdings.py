"""The deliveries a worker child holds: the one running and the prefetched ones waiting, numbered in fetch order,
and when each one's lease was last confirmed.

A lease is confirmed when its delivery is fetched and each time a renewal (``Broker.extend``) reports it still held.
It is *certain* for ``SAFE_LEASE_FRACTION`` of the visibility timeout after that, by the local ``lease_clock``,
which keeps counting while the process is stopped (SIGSTOP, a long GC pause): a stall past that fraction shows up as
elapsed time. The background thread renews every third of the visibility timeout, so in the normal case every lease
is certain when its delivery starts; otherwise the child asks the broker first (taskfleet.worker.child).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from taskfleet.brokers.base import Delivery

#: A lease confirmed less than this fraction of the visibility timeout ago is certainly still held. Renewals come
#: every third of it; the rest is margin for a late renewal thread and the latency of the call that confirmed it.
SAFE_LEASE_FRACTION = 0.5

#: Seconds on a clock that never goes back and keeps counting while this process is stopped (and, where the system
#: has one, while the machine sleeps).
_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def lease_clock() -> float:
    return time.clock_gettime(_CLOCK)


def lease_certain(confirmed_at: float | None, now: float, visibility_timeout_s: float) -> bool:
    """Whether a lease confirmed at ``confirmed_at`` (``lease_clock``; ``None``: never, or a renewal failed since)
    is certainly still held at ``now``, with no need to ask the broker."""
    return confirmed_at is not None and 0.0 <= now - confirmed_at < SAFE_LEASE_FRACTION * visibility_timeout_s


class Lease(enum.Enum):
    """What a child knows about the lease of a delivery it holds."""

    CERTAIN = "certain"  # confirmed recently enough (``lease_certain``)
    UNCERTAIN = "uncertain"  # ask the broker before starting it
    LOST = "lost"  # the broker said it no longer holds it: delivered again elsewhere


@dataclass(frozen=True, slots=True)
class Held:
    """A delivery in a child, with its sequence number: 1, 2, 3... in the order the child fetched them. Events and
    ``Progress`` name deliveries by it (a message id may come back to the same child)."""

    seq: int
    delivery: Delivery


class Holdings:
    """The deliveries a child holds: the one running and the prefetched ones waiting, and when their leases were
    last confirmed. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[Held] = deque()
        self._running: Held | None = None
        #: An async child's deliveries in progress at once (taskfleet.worker.async_loop), by seq; ``_running`` is
        #: then the sync task among them running inline, if any.
        self._active: dict[int, Held] = {}
        self._last_seq = 0
        #: seq -> when it was added (``time.monotonic``), for every held delivery
        self._added_at: dict[int, float] = {}
        #: seq -> when its lease was last confirmed (``lease_clock``), None when uncertain; for every held delivery
        self._confirmed: dict[int, float | None] = {}
        self._lost: set[int] = set()

    def add(self, batch: Sequence[Delivery], *, confirmed_at: float | None = None,
            on_added: Callable[[list[Held]], None] | None = None) -> list[Held]:
        """Hold ``batch`` after the deliveries already waiting, their leases confirmed at ``confirmed_at`` (when
        the fetch returned; None: uncertain); returns them numbered. ``on_added`` is called with them before
        anything else may change the holdings (so they are reported before they can be given back)."""
        with self._lock:
            held = [Held(self._last_seq + i, d) for i, d in enumerate(batch, start=1)]
            self._last_seq += len(held)
            self._waiting.extend(held)
            now = time.monotonic()
            for h in held:
                self._confirmed[h.seq] = confirmed_at
                self._added_at[h.seq] = now
            if held and on_added is not None:
                on_added(held)
            return held

    def start_next(self) -> Held | None:
        with self._lock:
            self._running = self._waiting.popleft() if self._waiting else None
            return self._running

    def finish(self) -> None:
        with self._lock:
            if self._running is not None:
                self._forget(self._running.seq)
            self._running = None

    def start_concurrent(self) -> Held | None:
        """The next waiting delivery, started beside those in progress (an async child): held until
        ``finish_concurrent``; ``running`` names it only while ``run_inline`` says it runs inline."""
        with self._lock:
            if not self._waiting:
                return None
            held = self._waiting.popleft()
            self._active[held.seq] = held
            return held

    def run_concurrently(self) -> None:
        """The running delivery (started by the sync loop) goes on as one of several in progress (an async child)."""
        with self._lock:
            if self._running is not None:
                self._active[self._running.seq] = self._running
            self._running = None

    def run_inline(self, held: Held) -> None:
        """``held``, in progress, runs a sync task inline now: it is ``running`` (its hard time limit, a terminate
        and the give-back of prefetched messages work as in a sync child) until ``finish_concurrent``."""
        with self._lock:
            self._running = held

    def finish_concurrent(self, seq: int) -> int:
        """Delivery ``seq`` is settled. Returns the highest seq up to which every delivery is finished or no longer
        held (what ``Progress.finish`` may say: a dead child's supervisor acks what is at or below it)."""
        with self._lock:
            if self._active.pop(seq, None) is not None:
                self._forget(seq)
            if self._running is not None and self._running.seq == seq:
                self._running = None
            unfinished = [h.seq for h in self._waiting] + list(self._active)
            return min(unfinished) - 1 if unfinished else self._last_seq

    def waiting(self) -> int:
        """How many unstarted deliveries wait."""
        with self._lock:
            return len(self._waiting)

    def running(self) -> Held | None:
        with self._lock:
            return self._running

    def all(self) -> list[Delivery]:
        return [h.delivery for h in self.held()]

    def held(self) -> list[Held]:
        """The waiting deliveries, then those in progress (the running one; an async child's several)."""
        with self._lock:
            running = [self._running] if self._running and self._running.seq not in self._active else []
            return [*self._waiting, *self._active.values(), *running]

    def take_waiting(self, *, if_waiting_longer_than_s: float | None = None,
                     on_taken: Callable[[list[Held]], None] | None = None) -> list[Held]:
        """Remove and return the unstarted deliveries; given a threshold, only while a task runs (``running``) and
        the oldest of them has waited that long, however many tasks ran meanwhile. ``on_taken`` is called with them,
        if any, before anything else may change the holdings."""
        with self._lock:
            if if_waiting_longer_than_s is not None and (
                self._running is None or not self._waiting
                or time.monotonic() - self._added_at[self._waiting[0].seq] < if_waiting_longer_than_s
            ):
                return []
            taken = list(self._waiting)
            self._waiting.clear()
            for h in taken:
                self._forget(h.seq)
            if taken and on_taken is not None:
                on_taken(taken)
            return taken

    # -- leases --------------------------------------------------------------------------------------------------

    def lease(self, seq: int, now: float, visibility_timeout_s: float) -> Lease:
        """What is known of the lease of held delivery ``seq`` at ``now`` (``lease_clock``)."""
        with self._lock:
            if seq in self._lost:
                return Lease.LOST
            certain = lease_certain(self._confirmed.get(seq), now, visibility_timeout_s)
            return Lease.CERTAIN if certain else Lease.UNCERTAIN

    def confirm(self, asked: Collection[Held], renewed: Collection[Delivery], *, at: float) -> list[Held]:
        """A renewal sent at ``at`` for ``asked`` reported ``renewed`` still held: their leases are confirmed, the
        others of ``asked`` lost. Deliveries no longer held meanwhile are left out. Returns the newly lost."""
        kept = {(d.queue, d.message_id, d.delivery_count) for d in renewed}
        newly_lost: list[Held] = []
        with self._lock:
            for h in asked:
                if h.seq not in self._confirmed or h.seq in self._lost:
                    continue
                d = h.delivery
                if (d.queue, d.message_id, d.delivery_count) in kept:
                    before = self._confirmed[h.seq]
                    self._confirmed[h.seq] = at if before is None else max(before, at)
                else:
                    self._lost.add(h.seq)
                    newly_lost.append(h)
        return newly_lost

    def unconfirm(self, asked: Collection[Held]) -> None:
        """A renewal of ``asked`` failed: it confirms nothing, and for all we know the leases are gone (a lost
        connection, a broker that restarted), so they are uncertain until the broker says otherwise."""
        with self._lock:
            for h in asked:
                if h.seq in self._confirmed:
                    self._confirmed[h.seq] = None

    def _forget(self, seq: int) -> None:
        self._confirmed.pop(seq, None)
        self._added_at.pop(seq, None)
        self._lost.discard(seq)
