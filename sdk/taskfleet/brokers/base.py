"""The broker contract: a small set of operations on opaque bytes, implemented once per broker.

Delivery is at-least-once with leases: ``fetch`` moves messages from *ready* to *in-flight* with a lease of
``visibility_timeout_s``; the consumer renews it with ``extend`` while it works and finishes with ``ack``. A message
whose lease expires (its worker was SIGKILLed) goes back to *ready* and is delivered again. Delayed messages wait in
a *delayed* set (never in a worker's memory) and move to *ready* when due. Priorities 0-9, higher first, FIFO within a
priority. Every queue has a dead-letter list that keeps the bytes and the reason.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from taskfleet.errors import BrokerConnectionError
from taskfleet.settings import BrokerSettings, PublishRetry
from taskfleet.urls import mask_secrets

MAX_PRIORITY = 9


def check_priority(priority: int) -> int:
    """``priority`` when it is 0-``MAX_PRIORITY``; anything else is a ``ValueError``."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be 0-{MAX_PRIORITY}, got {priority}")
    return priority


def fair_order(queues: Sequence[str], turn: int) -> list[str]:
    """``queues`` without duplicates, rotated to start ``turn`` places on: a broker that passes 0, 1, 2... on its
    successive fetches puts each queue first in turn, so one busy queue never starves the others."""
    names = list(dict.fromkeys(queues))
    if not names:
        return names
    start = turn % len(names)
    return names[start:] + names[:start]


def publish_with_retry(send: Callable[[], object], retry: PublishRetry, *,
                       retry_on: tuple[type[Exception], ...], target: str) -> None:
    """Run ``send``; retry it after the connection errors ``retry_on`` per ``retry`` (exponential backoff), then
    raise ``BrokerConnectionError`` naming ``target`` (e.g. "redis broker redis://***@host/0"). Other errors pass
    through at once."""
    for attempt in range(1, retry.max_attempts + 1):
        try:
            send()
            return
        except retry_on as exc:
            if attempt == retry.max_attempts:
                raise BrokerConnectionError(
                    f"could not publish to {target} after {attempt} attempts: {mask_secrets(str(exc))}"
                ) from exc
            time.sleep(retry.delay_s(attempt))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A fetched message, held in-flight under a lease until acked, released, nacked or dead-lettered."""

    queue: str
    message_id: str
    data: bytes
    delivery_count: int = 1  # 1 on the first delivery
    #: What the broker that made this delivery needs to settle it (e.g. an AMQP delivery tag); opaque to everyone
    #: else. ``None`` on a delivery rebuilt elsewhere (a supervisor settling for a dead child).
    receipt: object = field(default=None, compare=False, repr=False)

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to enqueue (``enqueue_many`` takes a batch of these)."""

    queue: str
    message_id: str
    data: bytes
    priority: int = 0
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Counts of one queue. A stored message is counted once, in one of ``ready``, ``in_flight``, ``delayed`` and
    ``due``; dead letters are apart.

    - ``ready``: waiting in the queue; a fetch takes it now.
    - ``in_flight``: fetched and not yet acked (running or prefetched).
    - ``delayed``: waiting for its due time (a countdown, an ETA, a retry's backoff); not yet due.
    - ``due``: sent with a delay that has run out, but not moved to ready yet: on brokers where a fetch moves due
      messages to ready (Redis, the stub), they wait for a worker to fetch. Work to do now, like ``ready``. Always 0
      where a due message becomes ready by itself (SQLite: a due message *is* ready; RabbitMQ: the delay ladder
      dead-letters it into the queue), so it is never unknown.
    - ``dead``: in the queue's dead-letter list.

    ``in_flight_known`` / ``delayed_known`` are False when the broker could not count those (their count is 0)."""

    ready: int
    in_flight: int
    delayed: int = 0
    dead: int = 0
    due: int = 0
    in_flight_known: bool = True
    delayed_known: bool = True

    @property
    def total(self) -> int:
        """Work that needs a worker now: ready + in-flight + due (what the operator scales on)."""
        return self.ready + self.in_flight + self.due


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be processed, with the reason, as stored in a queue's dead-letter list."""

    queue: str
    message_id: str
    reason: str
    data: bytes
    dead_at: float  # Unix time, seconds


class Broker(ABC):
    """A connection to one broker. Not shared across ``fork()``: each process makes its own."""

    settings: BrokerSettings

    @abstractmethod
    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0,
                retry: PublishRetry | None = None) -> None:
        """Store ``data`` in ``queue``, ready now or after ``delay_s`` seconds. Re-enqueueing an id that is still
        stored replaces it (no duplicate). Retries connection errors per ``retry`` (None: ``settings.publish_retry``;
        a call's own policy, ``apply_async(retry=, retry_policy=)``), then raises ``BrokerConnectionError``."""

    def enqueue_many(self, items: Sequence[Outgoing], *, retry: PublishRetry | None = None) -> None:
        """Enqueue a batch; implementations pipeline it into as few round trips as they can. ``retry`` as for
        ``enqueue``."""
        for item in items:
            if retry is None:
                self.enqueue(item.queue, item.message_id, item.data, priority=item.priority, delay_s=item.delay_s)
            else:
                self.enqueue(item.queue, item.message_id, item.data, priority=item.priority, delay_s=item.delay_s,
                             retry=retry)

    def enqueue_nowait(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0,
                       retry: PublishRetry | None = None) -> None:
        """``enqueue`` for a single call (``delay``, ``send``) that may return before the broker confirmed the
        message, when the broker works that way (RabbitMQ's ``windowed`` confirms: ``flush`` waits for them and a
        refusal raises later). Default: ``enqueue``, stored on return."""
        if retry is None:
            self.enqueue(queue, message_id, data, priority=priority, delay_s=delay_s)
        else:
            self.enqueue(queue, message_id, data, priority=priority, delay_s=delay_s, retry=retry)

    def flush(self, *, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` seconds until every ``enqueue_nowait`` message is stored; raise
        ``PublishNotConfirmed`` for those that were not. Default: nothing to wait for."""
        return

    @abstractmethod
    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages from ``queues`` (highest priority first, queues served
        fairly), blocking up to ``timeout_s`` seconds when none is ready. Due delayed messages and expired leases are
        moved to ready on the way. A message delivered more than ``settings.max_deliveries`` times is dead-lettered
        instead of returned. Returns ``[]`` on timeout."""

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Done with these: delete them. Acking a message whose lease was lost is a no-op."""

    @abstractmethod
    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back messages that were fetched but never started: ready again at once, at the head of their
        priority, and the delivery is not counted against ``max_deliveries``."""

    @abstractmethod
    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Give back messages whose processing was interrupted (worker lost): ready again at once, delivery
        counted."""

    @abstractmethod
    def extend(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Renew the leases of messages still being worked on, to now + ``visibility_timeout_s``. Returns the ones
        still held, whose leases it renewed: a delivery whose lease was lost (delivered again to another consumer,
        or settled) is left out and its message left alone. One call for the whole batch."""

    @abstractmethod
    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Atomically remove an in-flight message and append it, with ``reason``, to its queue's dead-letter
        list."""

    @abstractmethod
    def queue_depth(self, queue: str) -> QueueDepth:
        """Ready, in-flight, delayed, due and dead counts of ``queue`` (see ``QueueDepth``), in one round trip."""

    @abstractmethod
    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` entries of ``queue``'s dead-letter list (not removed)."""

    @abstractmethod
    def requeue_dead_letters(self, queue: str, *, message_ids: Sequence[str] | None = None) -> int:
        """Move dead letters of ``queue`` (all of them, or only those whose id is in ``message_ids``; ids not found
        are ignored) back to its ready queue as fresh messages: delivery count reset (their next delivery is the
        first), oldest first, at the tail, at priority 0 (no broker keeps a message's priority in its dead-letter
        list). A dead letter whose id was enqueued again since replaces that message, as ``enqueue`` would. Dead
        letters not selected stay in the list, in their order. Returns how many were moved. Never loses one: a
        crash midway may at worst leave a message both ready and dead-lettered, never neither."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete ready and delayed messages of ``queue``; in-flight ones are left to their workers. Returns the
        number deleted."""

    @abstractmethod
    def queues(self) -> list[str]:
        """Names of the queues this broker has seen messages for."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the broker answers; raise ``BrokerConnectionError`` when it does not."""

    def fetch_buffered(self, max_messages: int, *, read_socket: bool = True) -> list[Delivery]:
        """Up to ``max_messages`` deliveries the broker has already pushed to this connection for the consumers of
        the last ``fetch`` and that no ``fetch`` has returned yet (RabbitMQ's prefetch), counted as ``fetch`` counts
        them; without waiting and without a round trip to the broker (a redelivery aside). A worker child takes them
        while a task runs, so that its supervisor knows every delivery the child's connection holds. With
        ``read_socket=False`` only what this process has already read off the connection (with a fetch's batch, or
        during another call): no system call when there is none, so a child can ask before every task. ``[]`` on
        brokers whose ``fetch`` leases only what it returns (the default)."""
        return []

    def unread_deliveries(self, data: bytes) -> list[Delivery]:
        """The deliveries in ``data``: what was left unread in a dead child's broker connection (one handed over by
        ``watch_connections``), read by its supervisor before it lets the connection close. The child never read
        them, so they never started; each as the supervisor knows a child's delivery (queue, message id, delivery
        count, no body), to be given back uncounted (``release``). ``[]`` by default."""
        return []

    def watch_connections(self, hand_over: Callable[[int], None]) -> None:
        """Call ``hand_over(fd)`` with the socket of each broker connection whose loss gives its deliveries back
        (RabbitMQ), as it is opened. A worker child hands them to its supervisor, which keeps a copy open until it
        has settled a dead child's deliveries, so the broker takes them back only then. Nothing on brokers whose
        deliveries are leases (the default)."""
        return

    @abstractmethod
    def close(self) -> None:
        """Close connections. The broker object must not be used afterwards."""
