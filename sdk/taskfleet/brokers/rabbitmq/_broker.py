"""``RabbitMQBroker`` (pika): durable queues, persistent messages, publisher confirms, a delay ladder.

This module publishes (``enqueue``, ``enqueue_many``) and administers (depth, purge, dead letters, queue names);
consuming and settling deliveries is ``_consumer``. Layout of queues and exchanges: ``_topology``. Threading:
``_link`` (one connection per process, driven by the thread that needs it, or by an I/O thread that keeps heartbeats
flowing while tasks run). Pipelined publishing: ``_publisher``. Browsing and requeueing dead letters:
``_dead_letters``.

How the ``Broker`` contract maps onto AMQP:

- ``enqueue`` returns once RabbitMQ has confirmed the message (publisher confirms; a nack or an unroutable message
  raises ``BrokerError``). ``enqueue_many`` writes its whole batch, then waits for all the confirms at once, and
  returns only when every message is confirmed (refused ones raise, named). Connection errors are retried per
  ``publish_retry`` (for a batch, the messages not confirmed yet). AMQP cannot replace a message by id, so a publish
  retried after a lost confirm may store it twice (at-least-once).
- ``enqueue_nowait`` (``delay``, ``apply_async``, ``send``) in ``windowed`` confirm mode (the default,
  ``BrokerSettings.publish_confirms``) writes the message and returns; the link's ``ConfirmWindow`` keeps it until
  RabbitMQ confirms it (published again on a new connection if the old one is lost first), and a refusal is raised
  as ``PublishNotConfirmed`` by the next ``enqueue_nowait``, ``flush`` or ``ack``. ``ack`` waits for the window
  first: a task that published from its body is acked only once those messages are stored. ``close`` and an
  ``atexit`` hook flush too. ``sync`` mode: ``enqueue_nowait`` is ``enqueue``.
- ``fetch`` consumes with ``basic.qos`` prefetch = ``max_messages``: at most that many unacked messages per
  consumer connection, all counted as in-flight by RabbitMQ. ``ack`` of several deliveries is one ``basic.ack``
  with ``multiple`` when no other delivery of the connection below them is still held.
- Leases are the connection itself: RabbitMQ gives a connection's unacked messages back the moment it closes or its
  heartbeat stops, so ``extend`` has nothing to renew: it only reports which deliveries the current connection
  still holds. Consumers ask for the longest ``x-consumer-timeout`` so that
  RabbitMQ's ``consumer_timeout`` does not close the channel under a long task (servers older than 3.11.15 ignore
  it: raise ``consumer_timeout`` there; docs/brokers.md).
- Delivery counting: AMQP only flags a redelivery. A redelivered message is republished with its count of lost
  deliveries in the ``x-taskfleet-lost`` header and acked, so the count survives; past ``max_deliveries`` it goes to
  the dead-letter queue instead. ``release`` also republishes (not counted), so a released message goes to the tail
  of its priority, not the head.
  A redelivery still in a consumer's buffer when it gives its buffer back is counted there. A clean stop counts
  nothing: what arrives while consumers are being cancelled is kept (pika would reject it, to come back flagged as
  redelivered), and ``close`` first gives back, uncounted, what RabbitMQ pushed and no fetch took.
- A delivery can only be settled on the connection that received it; ``ack`` and ``nack`` from another process (a
  supervisor for a dead child) are no-ops. ``release`` from another process leaves a *credit* per delivery (a queue
  ``taskfleet.unstarted.<hash>`` holding its count): the redelivery that carries that count is then delivered
  uncounted, in place, instead of being counted and republished. A worker child hands its connection's socket to
  its supervisor (``watch_connections``), which keeps it open until it has released the dead child's unstarted
  deliveries, so the credits exist before RabbitMQ gives the deliveries back (docs/brokers.md). So that the
  supervisor knows them all, the child takes in what RabbitMQ pushes to its buffer while a task runs
  (``fetch_buffered``, every tick of its background thread).
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

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
from taskfleet.brokers.rabbitmq._consumer import Consumer
from taskfleet.brokers.rabbitmq._link import AmqpLink, Channels
from taskfleet.brokers.rabbitmq._management import ManagementApi
from taskfleet.brokers.rabbitmq._publisher import RETURNED, Publish, describe_refusals
from taskfleet.brokers.rabbitmq._window import Refusal, describe
from taskfleet.errors import BrokerConnectionError, BrokerError, PublishNotConfirmed
from taskfleet.settings import PUBLISH_CONFIRMS_WINDOWED, BrokerSettings, PublishRetry
from taskfleet.urls import mask_url

log = logging.getLogger("taskfleet.broker")

#: How long the ``atexit`` hook waits for outstanding windowed publishes to be confirmed (seconds).
EXIT_FLUSH_S = 10.0
#: How long ``close`` and ``ack`` wait for them (seconds).
CLOSE_FLUSH_S = 10.0


class RabbitMQBroker(Broker):
    """A ``Broker`` on RabbitMQ (``amqp://user:pass@host:5672/vhost`` or ``amqps://``). Thread-safe."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._masked_url = mask_url(settings.url)
        self._link = AmqpLink(settings.url, socket_timeout_s=settings.socket_timeout_s,
                              confirm_window=settings.confirm_window)
        self._link.resend = self._resend
        self._windowed = settings.publish_confirms == PUBLISH_CONFIRMS_WINDOWED
        self._exit_hook = False  # registered on the first windowed publish
        self._declarations = topo.Declarations(queue_type=settings.queue_type)
        self._consumer = Consumer(self._link, self._declarations, self._confirmed, settings=settings)
        self._management: ManagementApi | None = None
        if settings.management_url:
            parts = urlsplit(settings.url)
            vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
            self._management = ManagementApi(
                settings.management_url, vhost=vhost, timeout_s=settings.socket_timeout_s,
                fallback_user=unquote(parts.username or "guest"), fallback_password=unquote(parts.password or "guest"),
            )

    # -- publishing ---------------------------------------------------------------------------------------------

    def enqueue(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0,
                retry: PublishRetry | None = None) -> None:
        """Publish and wait for RabbitMQ's confirm. See ``Broker.enqueue`` and the module notes."""
        self.enqueue_many([Outgoing(queue, message_id, data, priority, delay_s)], retry=retry)

    def enqueue_nowait(self, queue: str, message_id: str, data: bytes, *, priority: int = 0, delay_s: float = 0.0,
                       retry: PublishRetry | None = None) -> None:
        """Windowed mode: write the message and return without waiting for its confirm (see the module notes).
        Raises ``PublishNotConfirmed`` first if windowed publishes were refused since the last report (this message
        is then not sent). ``sync`` mode: ``enqueue``."""
        if not self._windowed:
            self.enqueue(queue, message_id, data, priority=priority, delay_s=delay_s, retry=retry)
            return
        message, ladder = _publish_of(Outgoing(queue, message_id, data, priority, delay_s), self.settings.queue_type)
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(self._flush_at_exit, os.getpid())
        queued: list[bool] = []  # one attempt puts the message in the window; a retry only publishes what is there

        def send(ch: Channels) -> None:
            self._raise_refusals()
            self._declarations.declare(ch, topo.task_queue_name(queue), ladder=ladder)
            if not queued:
                queued.append(True)
                self._link.window.orphans.append(message)
            self._resend(ch)

        publish_with_retry(lambda: self._link.call(send, action="publish"), retry or self.settings.publish_retry,
                           retry_on=(BrokerConnectionError,), target=f"rabbitmq broker {self._masked_url}")

    def flush(self, *, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` seconds until every windowed publish is confirmed (publishing again those a lost
        connection left unconfirmed); raise ``PublishNotConfirmed`` for refused ones, or ones still unconfirmed."""
        if not self._windowed or (not self._link.window.outstanding and not self._link.window.refusals):
            return

        def drain(ch: Channels) -> None:
            self._resend(ch)
            if not ch.publisher.drain(timeout_s):
                window = self._link.window
                raise PublishNotConfirmed(
                    f"rabbitmq broker {self._masked_url}: {window.outstanding} published message(s) still "
                    f"unconfirmed after {timeout_s:g}s")
            self._raise_refusals()

        self._link.call(drain, action="flush", timeout_s=timeout_s + self.settings.socket_timeout_s)

    def _resend(self, ch: Channels) -> None:
        """Publish the window's queued and orphaned messages (declaring their queues for this connection)."""
        window = self._link.window
        for message in window.orphans:
            self._declarations.declare(ch, _queue_of(message), ladder=bool(message.exchange))
        ch.publisher.send(None)

    def _await_window(self) -> None:
        """Read your writes: wait (up to ``CLOSE_FLUSH_S``) until this process's windowed publishes are confirmed,
        so that counting or purging a queue right after ``delay`` sees the message. Refusals are left for the next
        publish or ``flush`` to raise."""
        if self._link.window.outstanding:
            def drain(ch: Channels) -> None:
                self._resend(ch)
                ch.publisher.drain(CLOSE_FLUSH_S)

            self._link.call(drain, action="confirm", timeout_s=CLOSE_FLUSH_S + self.settings.socket_timeout_s)

    def _raise_refusals(self) -> None:
        refusals: list[Refusal] = self._link.window.take_refusals()
        if refusals:
            if any(r.reason == RETURNED for r in refusals):
                self._declarations.forget()
            ids = tuple(str(r.message.message_id) for r in refusals)
            raise PublishNotConfirmed(f"rabbitmq broker {self._masked_url}: {describe(refusals)}", ids)

    def _flush_at_exit(self, pid: int) -> None:
        """``atexit``: confirm what this process published without waiting, for up to ``EXIT_FLUSH_S``; log what
        could not be (a forked child inherits the hook: only the process that published flushes)."""
        if os.getpid() == pid and not self._link.closed:
            self._flush_or_log(EXIT_FLUSH_S, "at exit")

    def _flush_or_log(self, timeout_s: float, when: str) -> None:
        try:
            self.flush(timeout_s=timeout_s)
        except BrokerError as exc:
            log.error("rabbitmq: published messages not confirmed %s, they may be lost: %s", when, exc)

    def enqueue_many(self, items: Sequence[Outgoing], *, retry: PublishRetry | None = None) -> None:
        """Publish a batch pipelined (all of it written, then every confirm awaited once) and return when RabbitMQ
        has confirmed every message. A refused one (nack, or unroutable) raises ``BrokerError`` naming the refused
        messages, once the whole batch is answered; the others are stored. After a lost connection only the
        messages not confirmed yet are sent again."""
        # Checked here, before anything is sent: a bad item fails the batch, not its publishing halfway through.
        messages: list[Publish] = []
        queues: dict[str, bool] = {}  # queue -> whether it needs the delay ladder
        for item in items:
            message, ladder = _publish_of(item, self.settings.queue_type)
            messages.append(message)
            queues[item.queue] = queues.get(item.queue, False) or ladder
        if not messages:
            return
        # Ladder users first: declaring the ladder makes the queues declared after it bind to its deliver exchange.
        declare = sorted(queues.items(), key=lambda entry: not entry[1])
        confirmed = [False] * len(messages)  # shared by the attempts: a retry resends only what was not confirmed
        publish_with_retry(lambda: self._link.call(partial(self._publish_batch, declare=declare, messages=messages,
                                                           confirmed=confirmed), action="publish"),
                           retry or self.settings.publish_retry, retry_on=(BrokerConnectionError,),
                           target=f"rabbitmq broker {self._masked_url}")

    def _publish_batch(self, ch: Channels, *, declare: Sequence[tuple[str, bool]], messages: Sequence[Publish],
                       confirmed: list[bool]) -> None:
        for queue, ladder in declare:
            self._declarations.declare(ch, queue, ladder=ladder)
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
            self._declarations.forget()
        return BrokerError(f"rabbitmq broker {self._masked_url} {describe_refusals(messages, refused, _queue_of)}")

    # -- consuming (``_consumer``) ------------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], *, max_messages: int, timeout_s: float) -> list[Delivery]:
        """Consume from ``queues`` with prefetch ``max_messages`` and return what has arrived, waiting up to
        ``timeout_s`` for the first. See ``Broker.fetch``."""
        return self._consumer.fetch(queues, max_messages=max_messages, timeout_s=timeout_s)

    def fetch_buffered(self, max_messages: int, *, read_socket: bool = True) -> list[Delivery]:
        """What RabbitMQ has already pushed to this connection's consumers and ``fetch`` has not returned, without
        waiting (see ``Broker.fetch_buffered``)."""
        return self._consumer.fetch_buffered(max_messages, read_socket=read_socket)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Ack deliveries of this connection; others are no-ops. Returns without waiting for a busy connection
        (an ack has no reply anyway; one lost with the connection means a redelivery). See ``Broker.ack``.
        Windowed publishes (a task's ``delay`` calls) are confirmed first; when they are not (``PublishNotConfirmed``,
        raised) these deliveries are given back instead (``nack``: delivered again), so that a follow-up RabbitMQ
        refused is not lost with its acked cause."""
        if self._link.window.outstanding or self._link.window.refusals:
            try:
                self.flush(timeout_s=CLOSE_FLUSH_S)
            except PublishNotConfirmed:
                self._consumer.nack(deliveries)
                raise
        self._consumer.ack(deliveries)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Stop consuming (so the messages are not pushed straight back to this connection), then give back
        these deliveries and whatever else arrived unstarted: republished uncounted, then acked. Deliveries of
        another connection (a supervisor's, for a dead child) cannot be settled here: each leaves a credit that
        keeps its redelivery uncounted (see the module notes)."""
        self._consumer.release(deliveries)

    def watch_connections(self, hand_over: Callable[[int], None]) -> None:
        """Hand over the socket of each connection as it opens (see ``Broker.watch_connections``)."""
        self._link.watch_sockets(hand_over)

    def unread_deliveries(self, data: bytes) -> list[Delivery]:
        """The deliveries whose frames are whole in ``data``, bytes left unread in a dead child's connection (see
        ``_unread``). See ``Broker.unread_deliveries``."""
        return self._consumer.unread(data)

    def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Give back interrupted deliveries of this connection (counted on their next delivery)."""
        self._consumer.nack(deliveries)

    def extend(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Nothing to renew: a delivery stays ours while the connection that received it lives (see the module
        notes). Returns those still held: received on this broker's current connection and not settled, once what
        the server sent meanwhile is read (a connection it closed is noticed, and raises)."""
        return self._consumer.held(deliveries)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Copy the message to the queue's dead-letter queue with ``reason`` in its headers, then ack it. No-op for
        a delivery this connection no longer holds."""
        self._consumer.dead_letter(delivery, reason)

    # -- inspection and administration -------------------------------------------------------------------------

    def queue_depth(self, queue: str) -> QueueDepth:
        """Ready and in-flight from the management API when configured (counters lag up to its statistics
        interval); otherwise ready only, from a passive declare (``in_flight_known=False``). Delayed messages
        sit in the shared ladder and cannot be counted per queue (``delayed_known=False``). ``due`` is 0: the
        ladder's TTL queues dead-letter a message into its task queue when it is due, with no consumer needed, so a
        due message is counted as ready."""
        topo.task_queue_name(queue)
        self._await_window()
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
            self._declarations.declare(ch, queue, ladder=False)  # it may have been deleted since
            self._confirmed(ch, Publish("", queue, body, message_id, 0))

        return dead.requeue(self._link, queue, wanted=wanted, publish=publish)

    def purge(self, queue: str) -> int:
        """Delete the ready messages of ``queue`` (delayed ones still in the ladder arrive later). Returns how
        many were deleted."""
        topo.task_queue_name(queue)
        self._await_window()
        return self._link.call(lambda ch: _message_count(lambda: ch.admin.queue_purge(queue)), action="purge")

    def queues(self) -> list[str]:
        """Task queues of the vhost (from the management API), or the ones this client declared without it."""
        if self._management is not None:
            return sorted(n for n in self._management.queue_names() if not n.startswith(topo.PREFIX))
        return sorted(self._declarations.known)

    def ping(self) -> None:
        """One round trip to the broker; ``BrokerConnectionError`` when it does not answer."""
        self._link.call(lambda ch: ch.admin.exchange_declare("amq.direct", passive=True), action="ping")

    def close(self) -> None:
        """Confirm outstanding windowed publishes (up to ``CLOSE_FLUSH_S``; what cannot be is logged), then close
        the connection; unacked deliveries go back to their queues. What RabbitMQ pushed to a consumer and no fetch
        took goes back first, uncounted (``Consumer.stop``)."""
        try:
            self._consumer.stop()
        except BrokerError as exc:  # the connection is going anyway: RabbitMQ takes them back, counted
            log.warning("rabbitmq: could not give back unfetched deliveries before closing: %s", exc)
        if not self._link.closed and (self._link.window.outstanding or self._link.window.refusals):
            self._flush_or_log(CLOSE_FLUSH_S, "at close")
        self._link.close()


def _publish_of(item: Outgoing, queue_type: str) -> tuple[Publish, bool]:
    """The AMQP publish of ``item`` and whether its queue needs the delay ladder (checked: raises before anything
    is sent)."""
    priority, queue, units = check_priority(item.priority), topo.task_queue_name(item.queue), \
        topo.delay_units(item.delay_s)
    topo.check_priority_supported(queue, queue_type, priority)
    if units:
        return Publish(topo.delay_level_name(topo.DELAY_LEVELS - 1), topo.delay_routing_key(units, queue), item.data,
                       item.message_id, priority), True
    return Publish("", queue, item.data, item.message_id, priority), False


def _queue_of(message: Publish) -> str:
    """The task queue a published message is for (a delayed one names it at the end of its routing key)."""
    return topo.queue_of(message.exchange, message.routing_key)


def _message_count(method: Callable[[], Any]) -> int:
    """The ``message_count`` of a queue method's reply (declare-ok, purge-ok); 0 when the queue does not exist."""
    try:
        return int(method().method.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:  # NOT_FOUND closed only the admin channel, which reopens on next use
            return 0
        raise
