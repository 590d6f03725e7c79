"""``RabbitMQBroker`` (pika): durable queues, persistent messages, publisher confirms, a delay ladder.

Layout of queues and exchanges: ``_topology``. Threading: ``_link`` (one connection per process, driven by the
thread that needs it, or by an I/O thread that keeps heartbeats flowing while tasks run). Pipelined publishing:
``_publisher``. Browsing and requeueing dead letters: ``_dead_letters``.

How the ``Broker`` contract maps onto AMQP:

- ``enqueue`` returns once RabbitMQ has confirmed the message (publisher confirms; a nack or an unroutable message
  raises ``BrokerError``). ``enqueue_many`` writes its whole batch, then waits for all the confirms at once, and
  returns only when every message is confirmed (refused ones raise, named). Connection errors are retried per
  ``publish_retry`` (for a batch, the messages not confirmed yet). AMQP cannot replace a message by id, so a publish
  retried after a lost confirm may store it twice (at-least-once).
- ``fetch`` consumes with ``basic.qos`` prefetch = ``max_messages``: at most that many unacked messages per
  consumer connection, all counted as in-flight by RabbitMQ. ``ack`` of several deliveries is one ``basic.ack``
  with ``multiple`` when no other delivery of the connection below them is still held.
- Leases are the connection itself: RabbitMQ gives a connection's unacked messages back the moment it closes or its
  heartbeat stops, so ``extend`` has nothing to do. Consumers ask for the longest ``x-consumer-timeout`` so that
  RabbitMQ's ``consumer_timeout`` does not close the channel under a long task (servers older than 3.11.15 ignore
  it: raise ``consumer_timeout`` there; docs/brokers.md).
- Delivery counting: AMQP only flags a redelivery. A redelivered message is republished with its count of lost
  deliveries in the ``x-taskfleet-lost`` header and acked, so the count survives; past ``max_deliveries`` it goes to
  the dead-letter queue instead. ``release`` also republishes (not counted), so a released message goes to the tail
  of its priority, not the head.
- A delivery can only be settled on the connection that received it; settling one from another process (a
  supervisor for a dead child) is a no-op because RabbitMQ already gave the dead connection's messages back.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions

from taskfleet.brokers.base import (
    Broker,
    DeadLetter,
    Delivery,
    Outgoing,
    QueueDepth,
    check_priority,
    publish_with_retry,
)
from taskfleet.brokers.rabbitmq import _dead_letters as dead
from taskfleet.brokers.rabbitmq import _topology as topo
from taskfleet.brokers.rabbitmq._dead_letters import DEAD_AT_HEADER, QUEUE_HEADER, REASON_HEADER
from taskfleet.brokers.rabbitmq._link import AmqpLink, Channels, RawDelivery
from taskfleet.brokers.rabbitmq._management import ManagementApi
from taskfleet.brokers.rabbitmq._publisher import RETURNED, Publish, describe_refusals
from taskfleet.errors import BrokerConnectionError, BrokerError
from taskfleet.settings import BrokerSettings
from taskfleet.urls import mask_url

LOST_HEADER = "x-taskfleet-lost"
#: Per-consumer delivery-acknowledgement timeout (RabbitMQ >= 3.11.15 honours it, older servers ignore it): the
#: longest RabbitMQ accepts, so its ``consumer_timeout`` never closes the channel under a long task. Stuck tasks
#: are the worker's business (hard time limits, liveness probe), not the broker's.
CONSUMER_TIMEOUT_MS = 2**31 - 1


@dataclass(frozen=True, slots=True)
class _Receipt:
    """Which connection of which broker object delivered a message, and its delivery tag there."""

    link: AmqpLink
    generation: int
    tag: int
    properties: pika.BasicProperties


@dataclass(slots=True)
class _Consuming:
    generation: int
    queues: tuple[str, ...]
    prefetch: int
    tags: dict[str, str]  # consumer tag -> queue
    stale: bool = False  # RabbitMQ cancelled one of them: start over


class RabbitMQBroker(Broker):
    """A ``Broker`` on RabbitMQ (``amqp://user:pass@host:5672/vhost`` or ``amqps://``). Thread-safe."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._masked_url = mask_url(settings.url)
        self._link = AmqpLink(settings.url, socket_timeout_s=settings.socket_timeout_s)
        self._consuming: _Consuming | None = None
        self._declared: tuple[int, set[str]] = (0, set())
        self._ladder_generation = 0
        self._cancel_hooked = 0
        #: consumer tag -> queue, for every consumer of this connection (buffered deliveries may outlive theirs)
        self._tag_queues: dict[str, str] = {}
        self._known_queues: set[str] = set()
        #: (generation, delivery tag) of deliveries not settled yet. Settling a tag twice would make RabbitMQ close
        #: the channel (and requeue everything on it), so every settle goes through ``_take_tag``. Only touched by the
        #: thread driving the connection.
        self._unsettled: set[tuple[int, int]] = set()
        self._management: ManagementApi | None = None
        if settings.management_url:
            parts = urlsplit(settings.url)
            vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
            self._management = ManagementApi(
                settings.management_url, vhost=vhost, timeout_s=settings.socket_timeout_s,
                fallback_user=unquote(parts.username or "guest"), fallback_password=unquote(parts.password or "guest"),
            )

    # -- publishing ---------------------------------------------------------------------------------------------

    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0) -> None:
        """Publish and wait for RabbitMQ's confirm. See ``Broker.enqueue`` and the module notes."""
        self.enqueue_many([Outgoing(queue, message_id, data, priority, delay_s)])

    def enqueue_many(self, items: Sequence[Outgoing]) -> None:
        """Publish a batch pipelined (all of it written, then every confirm awaited once) and return when RabbitMQ
        has confirmed every message. A refused one (nack, or unroutable) raises ``BrokerError`` naming the refused
        messages, once the whole batch is answered; the others are stored. After a lost connection only the
        messages not confirmed yet are sent again."""
        # Checked here, before anything is sent: a bad item fails the batch, not its publishing halfway through.
        messages: list[Publish] = []
        queues: dict[str, bool] = {}  # queue -> whether it needs the delay ladder
        for item in items:
            priority, queue, units = check_priority(item.priority), topo.task_queue_name(item.queue), \
                topo.delay_units(item.delay_s)
            if units:
                messages.append(Publish(topo.delay_level_name(topo.DELAY_LEVELS - 1),
                                        topo.delay_routing_key(units, queue), item.data, item.message_id, priority))
                queues[queue] = True
            else:
                messages.append(Publish("", queue, item.data, item.message_id, priority))
                queues.setdefault(queue, False)
        if not messages:
            return
        # Ladder users first: declaring the ladder makes the queues declared after it bind to its deliver exchange.
        declare = sorted(queues.items(), key=lambda entry: not entry[1])
        confirmed = [False] * len(messages)  # shared by the attempts: a retry resends only what was not confirmed
        publish_with_retry(lambda: self._link.call(partial(self._publish_batch, declare=declare, messages=messages,
                                                           confirmed=confirmed), action="publish"),
                           self.settings.publish_retry, retry_on=(BrokerConnectionError,),
                           target=f"rabbitmq broker {self._masked_url}")

    def _publish_batch(self, ch: Channels, *, declare: Sequence[tuple[str, bool]], messages: Sequence[Publish],
                       confirmed: list[bool]) -> None:
        for queue, ladder in declare:
            self._declare_queue(ch, queue, ladder=ladder)
        refused = ch.publisher.publish(messages, confirmed)
        if refused:
            raise self._refused(messages, refused)

    def _confirmed(self, ch: Channels, message: Publish) -> None:
        """Publish one message and wait for its confirm; ``BrokerError`` when RabbitMQ refuses it."""
        messages = [message]
        refused = ch.publisher.publish(messages, [False])
        if refused:
            raise self._refused(messages, refused)

    def _refused(self, messages: Sequence[Publish], refused: dict[int, str]) -> BrokerError:
        if RETURNED in refused.values():  # a queue was deleted behind our back: declare again on the next publish
            self._declared = (0, set())
        return BrokerError(f"rabbitmq broker {self._masked_url} {describe_refusals(messages, refused, _queue_of)}")

    def _declare_queue(self, ch: Channels, queue: str, *, ladder: bool) -> None:
        generation, declared = self._declared
        if generation != ch.generation:
            declared = set()
            self._declared = (ch.generation, declared)
        if ladder and self._ladder_generation != ch.generation:
            topo.declare_ladder(ch.admin)
            self._ladder_generation = ch.generation
            declared.clear()  # queues declared before the ladder need their deliver binding
        key = queue
        if key not in declared:
            topo.declare_task_queue(ch.admin, queue, ladder_ready=self._ladder_generation == ch.generation)
            declared.add(key)
            self._known_queues.add(queue)

    # -- consuming ----------------------------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Consume from ``queues`` with prefetch ``max_messages`` and return what has arrived, waiting up to
        ``timeout_s`` for the first. See ``Broker.fetch``."""
        names = tuple(dict.fromkeys(queues))
        if not names or max_messages < 1:
            return []
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            consuming = self._consuming
            if (consuming is None or consuming.stale or consuming.generation != self._link.generation
                    or consuming.queues != names or consuming.prefetch != max_messages):
                for name in names:  # checked when consumers start, not on every fetch of the hot loop
                    topo.task_queue_name(name)
                self._link.call(lambda ch: self._start_consuming(ch, names, max_messages), action="consume")
                consuming = self._consuming
            assert consuming is not None
            generation, raw = self._link.take(max_messages, deadline - time.monotonic())
            if generation != consuming.generation:
                raise BrokerConnectionError(f"rabbitmq broker {self._masked_url}: connection lost while fetching")
            fresh = [r for r in raw if not r.redelivered]
            again = [r for r in raw if r.redelivered]
            if again:
                self._link.call(partial(self._count_redeliveries, consuming=consuming, again=again),
                                action="redeliver")
            if fresh:
                return [self._delivery(consuming, r) for r in fresh]
            if time.monotonic() >= deadline:
                return []

    def _start_consuming(self, ch: Channels, names: tuple[str, ...], prefetch: int) -> None:
        self._stop_consuming(ch)
        for name in names:
            self._declare_queue(ch, name, ladder=False)
        # Each consumer gets an equal share of the prefetch window (rounded up), so one queue's backlog cannot take
        # it all: a channel-wide limit would let the first queue win every freed slot. The child holds at most
        # prefetch + len(queues) - 1 messages.
        ch.consume.basic_qos(prefetch_count=-(-prefetch // len(names)))
        tags: dict[str, str] = {}
        self._unsettled = {key for key in self._unsettled if key[0] == ch.generation}
        for name in names:
            tag = ch.consume.basic_consume(name, on_message_callback=self._on_message,
                                           arguments={"x-consumer-timeout": CONSUMER_TIMEOUT_MS})
            tags[tag] = name
            self._tag_queues[tag] = name
        if self._cancel_hooked != ch.generation:
            ch.consume.add_on_cancel_callback(lambda _frame: self._forget_consumers())
            self._cancel_hooked = ch.generation
        self._consuming = _Consuming(ch.generation, names, prefetch, tags)

    def _stop_consuming(self, ch: Channels) -> None:
        consuming, self._consuming = self._consuming, None
        if consuming is None or consuming.generation != ch.generation:
            self._tag_queues = {}
            return
        # Take in what has already arrived: pika nacks (requeues) deliveries still undispatched at cancel, and
        # those would come back flagged as redelivered and be counted.
        ch.connection.process_data_events(0)
        for tag in consuming.tags:
            ch.consume.basic_cancel(tag)

    def _on_message(self, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        self._unsettled.add((self._link.generation, method.delivery_tag))
        self._link.on_message(channel, method, properties, body)

    def _take_tag(self, ch: Channels, generation: int, tag: int) -> bool:
        """True (once) when this delivery may be settled now: same connection, not settled before."""
        if generation != ch.generation or (generation, tag) not in self._unsettled:
            return False
        self._unsettled.discard((generation, tag))
        return True

    def _forget_consumers(self) -> None:
        """RabbitMQ cancelled a consumer (its queue was deleted): declare again and start over on the next fetch
        (which cancels the consumers still running)."""
        if self._consuming is not None:
            self._consuming.stale = True
        self._declared = (0, set())

    def _delivery(self, consuming: _Consuming, raw: RawDelivery) -> Delivery:
        headers = raw.properties.headers or {}
        return Delivery(
            queue=self._tag_queues.get(raw.consumer_tag, consuming.queues[0]),
            message_id=raw.properties.message_id or f"amqp-{raw.generation}-{raw.delivery_tag}",
            data=raw.body,
            delivery_count=_int(headers.get(LOST_HEADER)) + 1,
            receipt=_Receipt(self._link, raw.generation, raw.delivery_tag, raw.properties),
        )

    def _count_redeliveries(self, ch: Channels, *, consuming: _Consuming, again: Sequence[RawDelivery]) -> None:
        """Republish each redelivered message with its lost-delivery count (or dead-letter it past
        ``max_deliveries``), then ack the redelivery."""
        for raw in again:
            if not self._take_tag(ch, raw.generation, raw.delivery_tag):
                continue
            delivery = self._delivery(consuming, raw)
            lost = delivery.delivery_count  # the previous delivery ended without an ack
            if lost >= self.settings.max_deliveries:
                self._to_dead_letters(ch, delivery,
                                      f"delivered {lost} times without an ack (max_deliveries="
                                      f"{self.settings.max_deliveries}): its worker died each time")
            else:
                self._confirmed(ch, _republish(delivery.queue, raw.body, raw.properties, {LOST_HEADER: lost}))
            ch.consume.basic_ack(raw.delivery_tag)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Ack deliveries of this connection; others are no-ops. Returns without waiting for a busy connection
        (an ack has no reply anyway; one lost with the connection means a redelivery). See ``Broker.ack``."""
        own = self._own(deliveries)
        if own:
            self._link.submit(lambda ch: self._ack_tags(ch, own))

    def _ack_tags(self, ch: Channels, receipts: Sequence[_Receipt]) -> None:
        tags = sorted(r.tag for r in receipts if self._take_tag(ch, r.generation, r.tag))
        # One basic.ack with ``multiple`` settles every delivery of the channel up to its tag, so it may cover the
        # tags below the oldest delivery still unsettled here (every delivery with a lower tag has reached
        # ``_on_message``: RabbitMQ numbers them in the order it sends them). The others are acked one by one.
        oldest = min((tag for generation, tag in self._unsettled if generation == ch.generation), default=None)
        covered = len(tags) if oldest is None else bisect.bisect_left(tags, oldest)
        if covered:
            ch.consume.basic_ack(tags[covered - 1], multiple=covered > 1)
        for tag in tags[covered:]:
            ch.consume.basic_ack(tag)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Stop consuming (so the messages are not pushed straight back to this connection), then give back
        these deliveries and whatever else arrived unstarted: republished uncounted, then acked."""
        own = [d for d in deliveries if self._receipt(d) is not None]
        if own:
            self._link.call(lambda ch: self._give_back(ch, own), action="release")

    def _give_back(self, ch: Channels, deliveries: Sequence[Delivery]) -> None:
        consuming = self._consuming
        self._stop_consuming(ch)
        for delivery in deliveries:
            receipt = self._receipt(delivery)
            if receipt is None or not self._take_tag(ch, receipt.generation, receipt.tag):
                continue
            self._requeue(ch, delivery.queue, delivery.data, receipt.properties, receipt.tag)
        for raw in self._link.drain_buffer():
            if consuming is not None and self._take_tag(ch, raw.generation, raw.delivery_tag):
                queue = self._tag_queues.get(raw.consumer_tag, consuming.queues[0])
                self._requeue(ch, queue, raw.body, raw.properties, raw.delivery_tag)

    def _requeue(self, ch: Channels, queue: str, body: bytes, props: pika.BasicProperties, tag: int) -> None:
        self._confirmed(ch, _republish(queue, body, props, {}))
        ch.consume.basic_ack(tag)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Give back interrupted deliveries of this connection (counted on their next delivery)."""
        own = self._own(deliveries)
        if own:
            self._link.call(lambda ch: [ch.consume.basic_nack(r.tag, requeue=True) for r in own
                                        if self._take_tag(ch, r.generation, r.tag)], action="nack")

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing to renew: a delivery stays ours while our connection lives (see the module notes)."""

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Copy the message to the queue's dead-letter queue with ``reason`` in its headers, then ack it. No-op for
        a delivery this connection no longer holds."""
        receipt = self._receipt(delivery)
        if receipt is None:
            return

        def move(ch: Channels) -> None:
            if not self._take_tag(ch, receipt.generation, receipt.tag):
                return
            self._to_dead_letters(ch, delivery, reason)
            ch.consume.basic_ack(receipt.tag)

        self._link.call(move, action="dead_letter")

    def _to_dead_letters(self, ch: Channels, delivery: Delivery, reason: str) -> None:
        self._declare_queue(ch, delivery.queue, ladder=False)
        headers = {REASON_HEADER: reason, QUEUE_HEADER: delivery.queue, DEAD_AT_HEADER: repr(time.time()),
                   LOST_HEADER: delivery.delivery_count}
        self._confirmed(ch, Publish("", topo.dead_queue_name(delivery.queue), delivery.data, delivery.message_id,
                                    None, headers))

    # -- inspection and administration -------------------------------------------------------------------------

    def queue_depth(self, queue: str) -> QueueDepth:
        """Ready and in-flight from the management API when configured (counters lag up to its statistics
        interval); otherwise ready only, from a passive declare (``in_flight_known=False``). Delayed messages
        sit in the shared ladder and cannot be counted per queue (``delayed_known=False``)."""
        topo.task_queue_name(queue)
        dead = self._passive_count(topo.dead_queue_name(queue))
        if self._management is not None:
            counts = self._management.queue_counts(queue)
            ready, unacked = (counts.ready, counts.unacked) if counts else (0, 0)
            return QueueDepth(ready=ready, in_flight=unacked, dead=dead, delayed_known=False)
        ready = self._passive_count(queue)
        return QueueDepth(ready=ready, in_flight=0, dead=dead, in_flight_known=False, delayed_known=False)

    def _passive_count(self, queue: str) -> int:
        return self._link.call(
            lambda ch: _message_count(lambda: ch.admin.queue_declare(queue, passive=True)), action="queue_depth")

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue``, read and put back in order (a temporary channel is
        closed unacked)."""
        if limit < 1:
            return []
        return dead.browse(self._link, queue, limit=limit)

    def requeue_dead_letters(self, queue: str, *, message_ids: Sequence[str] | None = None) -> int:
        """Republish the selected dead letters to ``queue``, oldest first at the tail, at priority 0 (dead letters
        do not keep it) and with no delivery counted; each dead letter is acked only once its publish is confirmed.
        Dead letters not selected go back to the dead-letter queue in their order. Dead letters added while it
        runs are left for the next call. AMQP cannot replace a message by id: a dead letter whose id was enqueued
        again is stored twice. See ``_dead_letters`` and ``Broker.requeue_dead_letters``."""
        wanted = None if message_ids is None else frozenset(message_ids)

        def publish(ch: Channels, message_id: str | None, body: bytes) -> None:
            self._declare_queue(ch, queue, ladder=False)  # it may have been deleted since
            self._confirmed(ch, Publish("", queue, body, message_id, 0))

        return dead.requeue(self._link, queue, wanted=wanted, publish=publish)

    def purge(self, queue: str) -> int:
        """Delete the ready messages of ``queue`` (delayed ones still in the ladder arrive later). Returns how
        many were deleted."""
        topo.task_queue_name(queue)

        return self._link.call(lambda ch: _message_count(lambda: ch.admin.queue_purge(queue)), action="purge")

    def queues(self) -> list[str]:
        """Task queues of the vhost (from the management API), or the ones this client declared without it."""
        if self._management is not None:
            return sorted(n for n in self._management.queue_names() if not n.startswith(topo.PREFIX))
        return sorted(self._known_queues)

    def ping(self) -> None:
        """One round trip to the broker; ``BrokerConnectionError`` when it does not answer."""
        self._link.call(lambda ch: ch.admin.exchange_declare("amq.direct", passive=True), action="ping")

    def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        self._link.close()

    # -- helpers ------------------------------------------------------------------------------------------------

    def _receipt(self, delivery: Delivery) -> _Receipt | None:
        receipt = delivery.receipt
        if isinstance(receipt, _Receipt) and receipt.link is self._link:
            return receipt
        return None

    def _own(self, deliveries: Sequence[Delivery]) -> list[_Receipt]:
        return [r for r in map(self._receipt, deliveries) if r is not None]


def _queue_of(message: Publish) -> str:
    """The task queue a published message is for (a delayed one names it at the end of its routing key)."""
    return message.routing_key.split(".", topo.DELAY_LEVELS)[-1] if message.exchange else message.routing_key


def _message_count(method: Callable[[], Any]) -> int:
    """The ``message_count`` of a queue method's reply (declare-ok, purge-ok); 0 when the queue does not exist."""
    try:
        return int(method().method.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:  # NOT_FOUND closed only the admin channel, which reopens on next use
            return 0
        raise


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _republish(queue: str, body: bytes, props: pika.BasicProperties, changes: dict[str, Any]) -> Publish:
    """A delivered message published again to ``queue``: its message id and priority, its headers with ``changes``
    and without the ``x-death`` trail of the delay ladder (none left: no headers)."""
    headers = {k: v for k, v in (props.headers or {}).items() if not k.startswith(("x-death", "x-first-death"))}
    headers.update(changes)
    return Publish("", queue, body, props.message_id, props.priority, headers or None)
