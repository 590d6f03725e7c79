"""The stub broker (``memory://``): the full contract in this process's memory, no server, no persistence.

It behaves as the server brokers do where the contract says how (tests/integration/test_broker_conformance.py runs
on it too): priorities, FIFO within a priority, delays, leases fenced by the delivery count, fair service of several
queues, dead letters. Brokers made with the same named URL (``memory://name``) in one process share their queues, as
clients of one server do; a bare ``memory://`` broker has queues of its own.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from taskfleet.brokers.base import Broker, DeadLetter, Delivery, QueueDepth, check_priority, fair_order
from taskfleet.settings import BrokerSettings, PublishRetry, validate_queue_name

_PRIORITY_SPAN = 2**40
_SCHEME = "memory://"


@dataclass
class _Queue:
    ready: dict[str, int] = field(default_factory=dict)  # id -> rank (lower first)
    inflight: dict[str, float] = field(default_factory=dict)  # id -> lease deadline
    delayed: dict[str, float] = field(default_factory=dict)  # id -> due time
    data: dict[str, bytes] = field(default_factory=dict)
    priority: dict[str, int] = field(default_factory=dict)
    rank: dict[str, int] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    seq: int = 0

    def next_rank(self, priority: int) -> int:
        self.seq += 1
        return (9 - priority) * _PRIORITY_SPAN + self.seq

    def forget(self, message_id: str) -> None:
        for table in (self.ready, self.inflight, self.delayed, self.data, self.priority, self.rank, self.deliveries):
            table.pop(message_id, None)

    def holds(self, delivery: Delivery) -> bool:
        """Whether ``delivery``'s lease still holds: in flight, with the delivery count its consumer was given."""
        return (delivery.message_id in self.inflight
                and self.deliveries.get(delivery.message_id) == delivery.delivery_count)


class _Store:
    """What the brokers of one URL share: their queues, and the condition that wakes their blocked fetches."""

    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        #: Queues a message was enqueued to (``Broker.queues``), in no order.
        self.seen: set[str] = set()
        self.cond = threading.Condition()


#: Named stores, alive while a broker uses them.
_STORES: weakref.WeakValueDictionary[str, _Store] = weakref.WeakValueDictionary()
_STORES_LOCK = threading.Lock()


def _store_for(url: str) -> _Store:
    name = url[len(_SCHEME):] if url.lower().startswith(_SCHEME) else ""
    if not name:
        return _Store()
    with _STORES_LOCK:
        store = _STORES.get(name)
        if store is None:
            store = _STORES[name] = _Store()
        return store


class StubBroker(Broker):
    """Thread-safe, in-memory implementation of ``Broker`` for unit tests."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._store = _store_for(settings.url)
        self._queues = self._store.queues
        self._cond = self._store.cond
        self._rotation = 0
        self._closed = False

    def _q(self, name: str) -> _Queue:
        return self._queues.setdefault(name, _Queue())

    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0,
                retry: PublishRetry | None = None) -> None:
        """Re-enqueueing a stored id replaces it and keeps its delivery count (a stale lease of it is lost). Nothing
        to retry: ``retry`` is unused."""
        check_priority(priority)
        validate_queue_name(queue)
        with self._cond:
            q = self._q(queue)
            self._store.seen.add(queue)
            deliveries = q.deliveries.get(message_id, 0)
            q.forget(message_id)
            q.data[message_id] = data
            q.priority[message_id] = priority
            q.deliveries[message_id] = deliveries
            if delay_s > 0:
                q.delayed[message_id] = time.time() + delay_s
            else:
                q.rank[message_id] = q.ready[message_id] = q.next_rank(priority)
            self._cond.notify_all()

    def _maintain(self, q: _Queue, now: float) -> None:
        for mid, due in sorted(q.delayed.items(), key=lambda item: item[1]):
            if due <= now:
                del q.delayed[mid]
                q.rank[mid] = q.ready[mid] = q.next_rank(q.priority[mid])
        for mid, deadline in list(q.inflight.items()):
            if deadline <= now:
                del q.inflight[mid]
                q.ready[mid] = q.rank[mid]

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Queues get an equal share first, then the rest is filled in order; the order rotates every fetch (as on
        Redis and SQLite)."""
        names = fair_order(queues, self._rotation)
        if not names or max_messages < 1:
            return []
        self._rotation += 1
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = self._take(names, max_messages)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                self._cond.wait(min(remaining, 0.05))

    def _take(self, names: Sequence[str], want: int) -> list[Delivery]:
        now = time.time()
        out: list[Delivery] = []
        for name in names:
            self._maintain(self._q(name), now)
        share = math.ceil(want / len(names))
        for limit in (share, want):
            for name in names:
                if len(out) < want:
                    self._take_from(name, min(limit, want - len(out)), now, out)
        return out

    def _take_from(self, name: str, limit: int, now: float, out: list[Delivery]) -> None:
        q = self._q(name)
        for mid in sorted(q.ready, key=q.ready.__getitem__)[:limit]:
            del q.ready[mid]
            q.deliveries[mid] += 1
            count = q.deliveries[mid]
            if count > self.settings.max_deliveries:
                reason = f"delivered {count - 1} times without an ack (its worker died each time)"
                q.dead.append(DeadLetter(name, mid, reason, q.data[mid], now))
                q.forget(mid)
                continue
            q.inflight[mid] = now + self.settings.visibility_timeout_s
            out.append(Delivery(name, mid, q.data[mid], count))

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._cond:
            for d in deliveries:
                q = self._q(d.queue)
                if q.holds(d):
                    q.forget(d.message_id)

    def _give_back(self, deliveries: Sequence[Delivery], *, counted: bool) -> None:
        with self._cond:
            for d in deliveries:
                q = self._q(d.queue)
                if not q.holds(d):
                    continue
                del q.inflight[d.message_id]
                if not counted:
                    q.deliveries[d.message_id] -= 1
                q.ready[d.message_id] = q.rank[d.message_id]
            self._cond.notify_all()

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._give_back(deliveries, counted=False)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        self._give_back(deliveries, counted=True)

    def extend(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Renews and returns the deliveries still held. See ``Broker.extend``."""
        renewed: list[Delivery] = []
        with self._cond:
            deadline = time.time() + self.settings.visibility_timeout_s
            for d in deliveries:
                q = self._q(d.queue)
                if q.holds(d):
                    q.inflight[d.message_id] = deadline
                    renewed.append(d)
        return renewed

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """No-op when the lease was lost. See ``Broker.dead_letter``."""
        with self._cond:
            q = self._q(delivery.queue)
            if not q.holds(delivery):
                return
            q.forget(delivery.message_id)
            q.dead.append(DeadLetter(delivery.queue, delivery.message_id, reason, delivery.data, time.time()))

    def queue_depth(self, queue: str) -> QueueDepth:
        """As on Redis: a due delayed message stays delayed until a fetch moves it to ready, so it counts as
        ``due`` meanwhile."""
        with self._cond:
            q = self._q(queue)
            now = time.time()
            due = sum(1 for at in q.delayed.values() if at <= now)
            return QueueDepth(ready=len(q.ready), in_flight=len(q.inflight), delayed=len(q.delayed) - due, due=due,
                              dead=len(q.dead))

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        with self._cond:
            return list(self._q(queue).dead[:max(0, limit)])

    def requeue_dead_letters(self, queue: str, *, message_ids: Sequence[str] | None = None) -> int:
        """Ready again at priority 0, oldest first at the tail, delivery count reset; an id still stored is replaced
        (as by ``enqueue``). One step under the lock. See ``Broker.requeue_dead_letters``."""
        wanted = None if message_ids is None else set(message_ids)
        with self._cond:
            q = self._q(queue)
            moving = [d for d in q.dead if wanted is None or d.message_id in wanted]
            q.dead = [d for d in q.dead if wanted is not None and d.message_id not in wanted]
            for letter in moving:
                q.forget(letter.message_id)
                q.data[letter.message_id] = letter.data
                q.priority[letter.message_id] = 0
                q.deliveries[letter.message_id] = 0
                q.rank[letter.message_id] = q.ready[letter.message_id] = q.next_rank(0)
            if moving:
                self._store.seen.add(queue)
            self._cond.notify_all()
            return len(moving)

    def purge(self, queue: str) -> int:
        with self._cond:
            q = self._q(queue)
            doomed = [*q.ready, *q.delayed]
            for mid in doomed:
                q.forget(mid)
            return len(doomed)

    def queues(self) -> list[str]:
        """Names of every queue a message was enqueued to, sorted."""
        with self._cond:
            return sorted(self._store.seen)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        self._closed = True
