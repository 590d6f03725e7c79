"""The consuming side of ``RabbitMQBroker``: its consumers on the link's connection, the deliveries they receive, and
how each delivery is settled (ack, release, nack, dead letter) on the connection that received it.

How fetching, leases and delivery counting map onto AMQP: the notes of ``_broker``. Every method here that touches
the connection runs in the thread driving it (inside ``AmqpLink.call`` or ``submit``), except the public entry points,
which hand their work to the link.
"""

from __future__ import annotations

import bisect
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import pika
import pika.exceptions

from taskfleet.brokers.base import Delivery
from taskfleet.brokers.rabbitmq import _topology as topo
from taskfleet.brokers.rabbitmq._dead_letters import DEAD_AT_HEADER, QUEUE_HEADER, REASON_HEADER
from taskfleet.brokers.rabbitmq._link import AmqpLink, Channels, RawDelivery
from taskfleet.brokers.rabbitmq._publisher import Publish
from taskfleet.brokers.rabbitmq._unread import deliveries_in
from taskfleet.errors import BrokerConnectionError
from taskfleet.settings import BrokerSettings

LOST_HEADER = "x-taskfleet-lost"
#: Per-consumer delivery-acknowledgement timeout (RabbitMQ >= 3.11.15 honours it, older servers ignore it): the
#: longest RabbitMQ accepts, so its ``consumer_timeout`` never closes the channel under a long task. Stuck tasks
#: are the worker's business (hard time limits, liveness probe), not the broker's.
CONSUMER_TIMEOUT_MS = 2**31 - 1

#: Publishes one message and returns once RabbitMQ has confirmed it (``BrokerError`` when it refuses it).
PublishConfirmed = Callable[[Channels, Publish], None]


class _Receipt(NamedTuple):
    """Which connection of which broker object delivered a message, and its delivery tag there. A named tuple:
    immutable and cheap to build, one per delivery (see ``RawDelivery``)."""

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


class Consumer:
    """The consumers of one broker on ``link`` and the deliveries they hold. Thread-safe through the link.
    ``publish`` republishes (redelivery counts, releases, dead letters); ``declarations`` is the broker's."""

    def __init__(self, link: AmqpLink, declarations: topo.Declarations, publish: PublishConfirmed, *,
                 settings: BrokerSettings) -> None:
        self.settings = settings
        self._link = link
        self._declarations = declarations
        self._publish = publish
        self._consuming: _Consuming | None = None
        self._cancel_hooked = 0
        #: consumer tags of this connection that were cancelled or are being cancelled (``_keep_late_deliveries``)
        self._stopped_tags: set[str] = set()
        #: consumer tag -> queue, for every consumer of this connection (buffered deliveries may outlive theirs)
        self._tag_queues: dict[str, str] = {}
        #: (generation, delivery tag) of deliveries not settled yet. Settling a tag twice would make RabbitMQ close
        #: the channel (and requeue everything on it), so every settle goes through ``_take_tag``. Only touched by the
        #: thread driving the connection.
        self._unsettled: set[tuple[int, int]] = set()

    # -- consuming ----------------------------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """``RabbitMQBroker.fetch``: consume with prefetch ``max_messages``, return what has arrived."""
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
                raise BrokerConnectionError(f"rabbitmq broker {self._link.masked_url}: connection lost while fetching")
            fresh = self._accept(consuming, raw)
            if fresh:
                return fresh
            if time.monotonic() >= deadline:
                return []

    def fetch_buffered(self, max_messages: int, *, read_socket: bool = True) -> list[Delivery]:
        """``RabbitMQBroker.fetch_buffered``: what the consumers of the last ``fetch`` have received and no fetch
        returned. Nothing when another thread drives the connection (that thread buffers or returns them); else it
        reads the socket once without waiting (no round trip), or with ``read_socket=False`` only when something
        was read off it already: the link's buffer, or deliveries pika holds undispatched
        (``AmqpLink.take_buffered``)."""
        consuming = self._consuming
        if consuming is None or max_messages < 1:
            return []
        generation, raw = self._link.take_buffered(max_messages, read_socket=read_socket)
        if generation != consuming.generation:
            return []  # the connection was lost: RabbitMQ has given them back already
        return self._accept(consuming, raw)

    def _accept(self, consuming: _Consuming, raw: Sequence[RawDelivery]) -> list[Delivery]:
        """The deliveries to return of those taken from the buffer: a redelivery is counted (republished, so not
        returned) unless a credit says its previous delivery never started."""
        again = [r for r in raw if r.redelivered]
        if again:
            kept = self._link.call(partial(self._count_redeliveries, consuming=consuming, again=again),
                                   action="redeliver")
            raw = [r for r in raw if not r.redelivered or r.delivery_tag in kept]
        return [self._delivery(consuming, r) for r in raw]

    def _start_consuming(self, ch: Channels, names: tuple[str, ...], prefetch: int) -> None:
        self._stop_consuming(ch)
        for name in names:
            self._declarations.declare(ch, name, ladder=False)
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
            self._keep_late_deliveries(ch)
            self._cancel_hooked = ch.generation
        self._consuming = _Consuming(ch.generation, names, prefetch, tags)

    def _stop_consuming(self, ch: Channels) -> None:
        consuming, self._consuming = self._consuming, None
        if consuming is None or consuming.generation != ch.generation:
            self._tag_queues = {}
            return
        # Take in what has already arrived: pika rejects (requeues) a consumer's deliveries still undispatched at
        # cancel, and those would come back flagged as redelivered and be counted as lost.
        ch.connection.process_data_events(0)
        # What arrives for them from now on is taken in by ``_keep_late_deliveries``, not rejected or dropped.
        self._stopped_tags.update(consuming.tags)
        for tag in consuming.tags:
            ch.consume.basic_cancel(tag)

    def _keep_late_deliveries(self, ch: Channels) -> None:
        """Once per connection: a delivery for a consumer of ours that is being cancelled, or is cancelled (a quorum
        queue may deliver after the cancel's reply), is buffered and held like the rest. pika would reject it (to
        come back flagged as redelivered, counted as lost) or drop it unsettled (held until the connection closes,
        then counted). pika internals: ``Channel._on_deliver``, fenced by tests/unit/test_pika_internals.py."""
        impl = ch.consume._impl
        deliver = impl._on_deliver
        stopped = self._stopped_tags = set()

        def on_deliver(method_frame: Any, header_frame: Any, body: bytes) -> None:
            if method_frame.method.consumer_tag in stopped:
                self._on_message(ch.consume, method_frame.method, header_frame.properties, body)
            else:
                deliver(method_frame, header_frame, body)

        impl._on_deliver = on_deliver

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
        self._declarations.forget()

    def _delivery(self, consuming: _Consuming, raw: RawDelivery) -> Delivery:
        headers = raw.properties.headers or {}
        return Delivery(
            queue=self._tag_queues.get(raw.consumer_tag, consuming.queues[0]),
            message_id=raw.properties.message_id or f"amqp-{raw.generation}-{raw.delivery_tag}",
            data=raw.body,
            delivery_count=_delivery_count(headers),
            receipt=_Receipt(self._link, raw.generation, raw.delivery_tag, raw.properties),
        )

    def _count_redeliveries(self, ch: Channels, *, consuming: _Consuming,
                            again: Sequence[RawDelivery]) -> set[int]:
        """Republish each redelivered message with its lost-delivery count (or dead-letter it past
        ``max_deliveries``), then ack the redelivery. A redelivery whose previous delivery a supervisor vouched
        never started (a credit) is not counted: it is kept as it is, where RabbitMQ put it back, and returned
        (its delivery tag) to be delivered."""
        kept: set[int] = set()
        for raw in again:
            if raw.generation != ch.generation or (raw.generation, raw.delivery_tag) not in self._unsettled:
                continue
            delivery = self._delivery(consuming, raw)
            if self._take_credit(ch, delivery):
                kept.add(raw.delivery_tag)
                continue
            self._take_tag(ch, raw.generation, raw.delivery_tag)
            self._count_lost(ch, delivery, raw)
            ch.consume.basic_ack(raw.delivery_tag)
        return kept

    def _take_credit(self, ch: Channels, delivery: Delivery) -> bool:
        """True when a credit for this delivery was waiting (a supervisor released it for a dead child that never
        started it); the credit is used up. One round trip (two without a credit), on redeliveries only."""
        name = topo.credit_queue_name(delivery.queue, delivery.message_id)
        try:
            _method, _props, body = ch.admin.basic_get(name, auto_ack=True)
        except pika.exceptions.ChannelClosedByBroker:
            # No credit: NOT_FOUND (the usual case) closed only the admin channel, reopened on next use. Any other
            # refusal (say, no permission on taskfleet.unstarted.*) counts it too: raising here would strand the
            # deliveries being taken in (neither returned nor settled), and a count is never lost.
            return False
        if body is None:
            return False
        # Another credit for the same message id (two copies held by a dead child) keeps it (PRECONDITION_FAILED
        # closed only the admin channel); x-expires deletes an unused one.
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
            ch.admin.queue_delete(name, if_empty=True)
        # A credit names the count of the delivery it is for: one left over from an older delivery never matches.
        return _int(body) == delivery.delivery_count

    def credit(self, deliveries: Sequence[Delivery]) -> None:
        """Leave a credit for each delivery of another connection that was never started (a supervisor releasing
        a dead child's prefetched messages), so that its redelivery is not counted. Returns once RabbitMQ has
        confirmed them."""
        if deliveries:
            self._link.call(lambda ch: self._leave_credits(ch, deliveries), action="release")

    def _leave_credits(self, ch: Channels, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            topo.declare_credit_queue(ch.admin, topo.credit_queue_name(delivery.queue, delivery.message_id))
        for delivery in deliveries:
            self._publish(ch, Publish("", topo.credit_queue_name(delivery.queue, delivery.message_id),
                                      str(delivery.delivery_count).encode(), delivery.message_id, None))

    @staticmethod
    def unread(data: bytes) -> list[Delivery]:
        """``RabbitMQBroker.unread_deliveries``: the deliveries in ``data`` (``_unread``), counted as ``fetch``
        counts them."""
        return [Delivery(u.queue, u.message_id, b"", _delivery_count(u.headers))
                for u in deliveries_in(data)]

    def _count_lost(self, ch: Channels, delivery: Delivery, raw: RawDelivery) -> None:
        """Republish a redelivered message with its previous delivery counted as lost, or dead-letter it past
        ``max_deliveries``. The caller acks the redelivery."""
        lost = delivery.delivery_count  # the previous delivery ended without an ack
        if lost >= self.settings.max_deliveries:
            self._to_dead_letters(ch, delivery,
                                  f"delivered {lost} times without an ack (max_deliveries="
                                  f"{self.settings.max_deliveries}): its worker died each time")
        else:
            self._publish(ch, _republish(delivery.queue, raw.body, raw.properties, {LOST_HEADER: lost}))

    # -- settling -----------------------------------------------------------------------------------------------

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """``RabbitMQBroker.ack``: submitted to the link, without waiting for a busy connection."""
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
        acks = [(tags[covered - 1], covered > 1)] if covered else []
        acks += [(tag, False) for tag in tags[covered:]]
        # Queued on the asynchronous channel under it (pika internals, as in _publisher.py) and written at once by
        # the last one: ``BlockingChannel.basic_ack`` flushes the socket per call, a write per ack (the async loop
        # finishes deliveries out of order, so few are covered by ``multiple``).
        for tag, multiple in acks[:-1]:
            ch.consume._impl.basic_ack(delivery_tag=tag, multiple=multiple)
        if acks:
            ch.consume.basic_ack(acks[-1][0], multiple=acks[-1][1])

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """``RabbitMQBroker.release``: stop consuming, then give back these deliveries and the unstarted ones;
        credits for deliveries of other connections."""
        own = [d for d in deliveries if self._receipt(d) is not None]
        self.credit([d for d in deliveries if self._receipt(d) is None])
        if own:
            self._link.call(lambda ch: self._give_back(ch, own), action="release")

    def stop(self) -> None:
        """Before a clean close: stop consuming and give back, uncounted, what RabbitMQ pushed and no fetch took.
        Closing with them held would return them flagged as redelivered, counted as lost, though nothing started
        them (a child that drains or is recycled holds up to a prefetch of them). What a fetch returned and nobody
        settled is left to the close, which gives it back counted."""
        consuming = self._consuming
        if consuming is None or self._link.closed or consuming.generation != self._link.generation:
            return
        self._link.call(lambda ch: self._give_back(ch, []), action="stop consuming")

    def _give_back(self, ch: Channels, deliveries: Sequence[Delivery]) -> None:
        consuming = self._consuming
        self._stop_consuming(ch)
        for delivery in deliveries:
            receipt = self._receipt(delivery)
            if receipt is None or not self._take_tag(ch, receipt.generation, receipt.tag):
                continue
            self._requeue(ch, delivery.queue, delivery.data, receipt.properties, receipt.tag)
        for raw in self._link.drain_buffer():
            if consuming is None or not self._take_tag(ch, raw.generation, raw.delivery_tag):
                continue
            delivery = self._delivery(consuming, raw)
            # Not counted yet (fetch counts redeliveries as it takes them): count it now, as fetch would have.
            if raw.redelivered and not self._take_credit(ch, delivery):
                self._count_lost(ch, delivery, raw)
                ch.consume.basic_ack(raw.delivery_tag)
            else:
                self._requeue(ch, delivery.queue, raw.body, raw.properties, raw.delivery_tag)

    def _requeue(self, ch: Channels, queue: str, body: bytes, props: pika.BasicProperties, tag: int) -> None:
        self._publish(ch, _republish(queue, body, props, {}))
        ch.consume.basic_ack(tag)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """``RabbitMQBroker.nack``: requeue interrupted deliveries of this connection."""
        own = self._own(deliveries)
        if own:
            self._link.call(lambda ch: [ch.consume.basic_nack(r.tag, requeue=True) for r in own
                                        if self._take_tag(ch, r.generation, r.tag)], action="nack")

    def held(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """``RabbitMQBroker.extend``: the deliveries received on this connection, which is still open, and not
        settled yet. Reads what has arrived first, so a connection the server closed (say, while this process was
        stopped past its heartbeats) is dropped and raises ``BrokerConnectionError``."""
        own = [d for d in deliveries if self._receipt(d) is not None]
        if not own:
            return []

        def check(ch: Channels) -> list[Delivery]:
            ch.connection.process_data_events(0)
            return [d for d in own if (receipt := self._receipt(d)) is not None
                    and receipt.generation == ch.generation and (receipt.generation, receipt.tag) in self._unsettled]

        return self._link.call(check, action="extend")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """``RabbitMQBroker.dead_letter``: copy to the dead-letter queue, then ack."""
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
        self._declarations.declare(ch, delivery.queue, ladder=False)
        headers = {REASON_HEADER: reason, QUEUE_HEADER: delivery.queue, DEAD_AT_HEADER: repr(time.time()),
                   LOST_HEADER: delivery.delivery_count}
        self._publish(ch, Publish("", topo.dead_queue_name(delivery.queue), delivery.data, delivery.message_id,
                                  None, headers))

    # -- helpers ------------------------------------------------------------------------------------------------

    def _receipt(self, delivery: Delivery) -> _Receipt | None:
        receipt = delivery.receipt
        if isinstance(receipt, _Receipt) and receipt.link is self._link:
            return receipt
        return None

    def _own(self, deliveries: Sequence[Delivery]) -> list[_Receipt]:
        return [r for r in map(self._receipt, deliveries) if r is not None]


def _delivery_count(headers: dict[str, Any]) -> int:
    """A delivery's count: the deliveries counted as lost (``LOST_HEADER``), plus this one."""
    return _int(headers.get(LOST_HEADER)) + 1


def _int(value: Any) -> int:
    if value is None:  # the usual case (no such header): no exception raised and caught per delivery
        return 0
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
