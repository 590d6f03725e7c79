"""Per-worker rate limits, shared by the worker's children, that never hold a prefetch slot.

Celery holds a message over its task's rate limit in the worker until a token frees up, so the prefetch slot it
occupies is lost to every other task (celery#8119). Here a child asks the limiter for the message's slot instead
(``RateLimiter.reserve``): 0 means "run it now"; a positive delay means the slot that far ahead is now reserved for
it, and the executor publishes the message again with that delay (same task id, not counted as a retry) and acks
it, so the child takes the next message at once.

Reserving slots spreads the deferred messages one interval apart: a burst of 100 messages of a ``"10/s"`` task
comes back as one message every 0.1 s, not as a herd at the same instant. Reservations reach at most
``horizon_s`` ahead; a message beyond it is deferred by a random time in ``[horizon_s, 2 * horizon_s)`` without a
reservation and asks again when it returns, so the table of reservations stays bounded in time.

A broker delivers a delayed message on time or a little late (RabbitMQ's delay ladder, up to a second), so deferred
messages may come back bunched. The starts themselves are therefore spaced too (``claim_start``): a message whose
start would come too soon after the last one waits for it in the child when that is short (``MAX_START_WAIT_S``,
bounded, so no slot is held for long), else it is deferred again, still holding its reserved slot.

The maths is GCRA (the generic cell rate algorithm): per task name the theoretical arrival time (TAT) of the next
free slot to reserve, and the earliest time of the next start. ``LocalRateLimiter`` keeps them in memory shared by
the worker's processes (made before the fork), under a lock. A limiter shared by all workers (a later issue)
implements ``RateLimiter`` on the broker with the same maths; the executor and ``rate_gate`` do not change.
"""

from __future__ import annotations

import hashlib
import mmap
import random
import struct
import time
from abc import ABC, abstractmethod
from multiprocessing.synchronize import Lock

from taskfleet.rates import Rate

#: How far ahead (seconds) slots are reserved; beyond it a message is deferred without one and asks again.
DEFAULT_HORIZON_S = 60.0
#: Task names with a live reservation that the shared table holds at once; a name beyond that is not limited.
DEFAULT_TABLE_SIZE = 256
#: A child killed while holding the lock must not stall its siblings: past this wait they go on without it (two
#: children may then take one slot: the limit is briefly loose, never stuck).
_LOCK_WAIT_S = 0.5
#: A start may wait this long (seconds) in the child for its turn; a longer wait is a deferral.
MAX_START_WAIT_S = 0.25
#: One entry: key (8 bytes of the task name's BLAKE2b digest; 0: free), TAT of reservations and earliest next start
#: (Unix seconds).
_ENTRY = struct.Struct("Qdd")


def gcra_reserve(tat: float, now: float, interval_s: float, horizon_s: float) -> tuple[float, float | None]:
    """One GCRA step with reservation: the delay until this message's slot and the new TAT (None: unchanged, the
    slot is beyond ``horizon_s`` and not reserved). ``tat``: the next free slot (0: none taken yet)."""
    slot = max(tat, now)
    delay = slot - now
    if delay > horizon_s:
        return delay, None
    return delay, slot + interval_s


class RateLimiter(ABC):
    """Where a child asks for a task's next slot under its rate limit."""

    #: How far ahead (seconds) slots are reserved: a delay up to it is a reserved slot, beyond it is not.
    horizon_s: float

    @abstractmethod
    def reserve(self, key: str, rate: Rate, *, now: float | None = None) -> float:
        """Seconds until the slot of one start of ``key`` (a task name) at ``rate``: 0, run now; more, the slot
        that far ahead is reserved for it (run it then), or, beyond the horizon, ask again after that long."""

    @abstractmethod
    def claim_start(self, key: str, rate: Rate, *, max_wait_s: float, now: float | None = None) -> tuple[float, bool]:
        """A start of ``key`` at ``rate`` whose slot is granted (``reserve`` said 0, or it comes back for its
        reserved slot): ``(wait, True)`` when it may start after ``wait`` seconds (at most ``max_wait_s``; that
        start is now taken), ``(wait, False)`` when its turn is further than that (nothing taken: defer it)."""


class LocalRateLimiter(RateLimiter):
    """GCRA slots in memory shared by a worker's processes: make it in the supervisor before forking the children.
    ``lock``: a lock of the fork context (``multiprocessing.get_context("fork").Lock()``)."""

    def __init__(self, lock: Lock, *, horizon_s: float = DEFAULT_HORIZON_S,
                 table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.horizon_s = horizon_s
        self._lock = lock
        self._size = table_size
        self._table = mmap.mmap(-1, _ENTRY.size * table_size)  # zeroed: every entry free

    def reserve(self, key: str, rate: Rate, *, now: float | None = None) -> float:
        now = time.time() if now is None else now
        locked = self._lock.acquire(timeout=_LOCK_WAIT_S)
        try:
            index, tat, next_start = self._find(_key_of(key), now)
            if index is None:
                return 0.0  # the table is full of live reservations of other names: not limited
            delay, new_tat = gcra_reserve(tat, now, rate.interval_s, self.horizon_s)
            if new_tat is None:
                return self.horizon_s * (1 + random.random())  # spread: they do not all return at once
            _ENTRY.pack_into(self._table, index * _ENTRY.size, _key_of(key), new_tat, next_start)
            return delay
        finally:
            if locked:
                self._lock.release()

    def claim_start(self, key: str, rate: Rate, *, max_wait_s: float, now: float | None = None) -> tuple[float, bool]:
        now = time.time() if now is None else now
        locked = self._lock.acquire(timeout=_LOCK_WAIT_S)
        try:
            index, tat, next_start = self._find(_key_of(key), now)
            if index is None:
                return 0.0, True
            wait, new_next = gcra_reserve(next_start, now, rate.interval_s, max_wait_s)
            if new_next is None:
                return wait, False
            _ENTRY.pack_into(self._table, index * _ENTRY.size, _key_of(key), tat, new_next)
            return wait, True
        finally:
            if locked:
                self._lock.release()

    def _find(self, key: int, now: float) -> tuple[int | None, float, float]:
        """The entry of ``key`` with its TAT and next start; or a free one (never used, or both its times passed:
        nothing reserved) with zeros; or (None, 0, 0) when every entry holds another name's live reservations."""
        free = None
        for index in range(self._size):
            entry_key, tat, next_start = _ENTRY.unpack_from(self._table, index * _ENTRY.size)
            if entry_key == key:
                return index, tat, next_start
            if free is None and (entry_key == 0 or max(tat, next_start) <= now):
                free = index
        return free, 0.0, 0.0


def _key_of(name: str) -> int:
    """A non-zero 64-bit key for a task name, the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") or 1
