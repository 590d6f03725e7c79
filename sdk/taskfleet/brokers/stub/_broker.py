"""An in-process broker for unit tests (``memory://``): the full contract, no server, no persistence, one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from taskfleet.brokers.base import Broker, DeadLetter, Delivery, QueueDepth
from taskfleet.settings import BrokerSettings

_PRIORITY_SPAN = 2**40


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


class StubBroker(Broker):
    """Thread-safe, in-memory implementation of ``Broker`` for unit tests."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._queues: dict[str, _Queue] = {}
        self._cond = threading.Condition()
        self._closed = False

    def _q(self, name: str) -> _Queue:
        return self._queues.setdefault(name, _Queue())

    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0) -> None:
        with self._cond:
            q = self._q(queue)
            q.forget(message_id)
            q.data[message_id] = data
            q.priority[message_id] = priority
            q.deliveries[message_id] = 0
            if delay_s > 0:
                q.delayed[message_id] = time.time() + delay_s
            else:
                q.rank[message_id] = q.ready[message_id] = q.next_rank(priority)
            self._cond.notify_all()

    def _maintain(self, q: _Queue, now: float) -> None:
        for mid, due in list(q.delayed.items()):
            if due <= now:
                del q.delayed[mid]
                q.rank[mid] = q.ready[mid] = q.next_rank(q.priority[mid])
        for mid, deadline in list(q.inflight.items()):
            if deadline <= now:
                del q.inflight[mid]
                q.ready[mid] = q.rank[mid]

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                got = self._take(queues, max_messages)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    return got
                self._cond.wait(min(remaining, 0.05))

    def _take(self, queues: Sequence[str], max_messages: int) -> list[Delivery]:
        now = time.time()
        out: list[Delivery] = []
        for name in queues:
            q = self._q(name)
            self._maintain(q, now)
            for mid in sorted(q.ready, key=q.ready.__getitem__):
                if len(out) >= max_messages:
                    return out
                del q.ready[mid]
                q.deliveries[mid] += 1
                count = q.deliveries[mid]
                if count > self.settings.max_deliveries:
                    reason = f"delivered {count} times without an ack (its worker died each time)"
                    q.dead.append(DeadLetter(name, mid, reason, q.data[mid], now))
                    q.forget(mid)
                    continue
                q.inflight[mid] = now + self.settings.visibility_timeout_s
                out.append(Delivery(name, mid, q.data[mid], count))
        return out

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._cond:
            for d in deliveries:
                q = self._q(d.queue)
                if d.message_id in q.inflight:
                    q.forget(d.message_id)

    def _give_back(self, deliveries: Sequence[Delivery], *, counted: bool) -> None:
        with self._cond:
            for d in deliveries:
                q = self._q(d.queue)
                if q.inflight.pop(d.message_id, None) is None:
                    continue
                if not counted:
                    q.deliveries[d.message_id] -= 1
                q.ready[d.message_id] = q.rank[d.message_id]
            self._cond.notify_all()

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._give_back(deliveries, counted=False)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        self._give_back(deliveries, counted=True)

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        with self._cond:
            deadline = time.time() + self.settings.visibility_timeout_s
            for d in deliveries:
                q = self._q(d.queue)
                if d.message_id in q.inflight:
                    q.inflight[d.message_id] = deadline

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        with self._cond:
            q = self._q(delivery.queue)
            q.forget(delivery.message_id)
            q.dead.append(DeadLetter(delivery.queue, delivery.message_id, reason, delivery.data, time.time()))

    def queue_depth(self, queue: str) -> QueueDepth:
        with self._cond:
            q = self._q(queue)
            return QueueDepth(ready=len(q.ready), in_flight=len(q.inflight), delayed=len(q.delayed),
                              dead=len(q.dead))

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        with self._cond:
            return list(self._q(queue).dead[:limit])

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
        with self._cond:
            return sorted(self._queues)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        self._closed = True

