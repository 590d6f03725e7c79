"""The dead-letter queues of the RabbitMQ broker: browsing them, and moving their messages back to their task queue.

A dead letter of queue ``Q`` is a persistent message in ``taskfleet.dead.Q`` (``_topology``) with the reason,
the queue and the time in its headers. Both operations read it with ``basic.get`` on a channel of their own and never
ack what they leave: closing that channel gives the unacked messages back to the dead-letter queue at their old
places, so a browse changes nothing and a requeue keeps the order of what it does not move.

A requeue publishes each selected message to ``Q`` and acks its dead letter only once RabbitMQ has confirmed the
publish, so a crash or a lost connection at any point leaves the message dead-lettered, or ready, or (between the
confirm and the ack) both; never neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from taskfleet.brokers.base import DeadLetter
from taskfleet.brokers.rabbitmq import _topology as topo
from taskfleet.brokers.rabbitmq._link import AmqpLink, Channels
from taskfleet.errors import BrokerConnectionError

REASON_HEADER = "x-taskfleet-reason"
QUEUE_HEADER = "x-taskfleet-queue"
DEAD_AT_HEADER = "x-taskfleet-dead-at"
#: Longest one step of a requeue holds the connection (far below ``AmqpLink.call``'s timeout): a long dead-letter
#: queue is moved in several steps, and other calls (acks of running tasks) get their turn in between.
REQUEUE_STEP_S = 2.0

#: Publishes one message (its id, its body) to the task queue and returns once RabbitMQ has confirmed it.
Publish = Callable[[Channels, str | None, bytes], None]


def browse(link: AmqpLink, queue: str, *, limit: int) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters of ``queue``, read and put back in order."""
    name = topo.dead_queue_name(queue)

    def read(ch: Channels) -> list[DeadLetter]:
        channel = ch.connection.channel()
        found: list[DeadLetter] = []
        try:
            while len(found) < limit:
                method, props, body = channel.basic_get(name, auto_ack=False)
                if method is None:
                    break
                found.append(dead_letter(queue, props, body))
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
        finally:
            if channel.is_open:
                channel.close()
        return found

    return link.call(read, action="dead_letters")


def requeue(link: AmqpLink, queue: str, *, wanted: frozenset[str] | None, publish: Publish) -> int:
    """Move the dead letters of ``queue`` whose id is in ``wanted`` (all when ``None``), oldest first, with
    ``publish``; returns how many were moved. Only the messages in the dead-letter queue when it starts are looked
    at. A connection lost midway raises ``BrokerConnectionError`` (what was not moved yet is still dead-lettered)."""
    move = _Requeue(queue, wanted, publish)
    try:
        while not link.call(move.step, action="requeue_dead_letters"):
            pass
    except BaseException:
        link.submit(move.close)  # without waiting: the connection may be what failed
        raise
    link.call(move.close, action="requeue_dead_letters")  # the dead letters left are back in place on return
    return move.moved


class _Requeue:
    """One requeue, run by the thread driving the connection in steps of up to ``REQUEUE_STEP_S``; its channel
    stays open between steps and holds the dead letters it leaves unacked until ``close``."""

    def __init__(self, queue: str, wanted: frozenset[str] | None, publish: Publish) -> None:
        self.queue = queue
        self.name = topo.dead_queue_name(queue)
        self.wanted = wanted
        self.publish = publish
        self.moved = 0
        self._channel: BlockingChannel | None = None
        self._generation = 0
        self._unread = 0

    def step(self, ch: Channels) -> bool:
        """Move what this step has time for; True when done."""
        channel = self._channel
        if channel is None:
            channel = self._channel = ch.connection.channel()
            self._generation = ch.generation
            try:
                self._unread = int(channel.queue_declare(self.name, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:  # never dead-lettered anything: nothing to move
                    return True
                raise
        elif ch.generation != self._generation or not channel.is_open:
            raise BrokerConnectionError(f"the connection was lost while requeueing dead letters of {self.queue!r} "
                                        f"after {self.moved} were moved; the others are still dead-lettered")
        deadline = time.monotonic() + REQUEUE_STEP_S
        while self._unread > 0:  # at least one message per step, so every step makes progress
            method, props, body = channel.basic_get(self.name, auto_ack=False)
            if method is None:
                return True
            self._unread -= 1
            if self.wanted is None or (props.message_id or "") in self.wanted:
                self.publish(ch, props.message_id, body)
                channel.basic_ack(method.delivery_tag)
                self.moved += 1
            if time.monotonic() >= deadline:
                break
        return self._unread <= 0

    def close(self, ch: Channels) -> None:
        """Give back the dead letters left unacked, in their order (a channel of a lost connection is gone
        already)."""
        channel, self._channel = self._channel, None
        if channel is not None and ch.generation == self._generation and channel.is_open:
            channel.close()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def dead_letter(queue: str, props: pika.BasicProperties, body: bytes) -> DeadLetter:
    """The ``DeadLetter`` of a message read from ``queue``'s dead-letter queue."""
    headers = props.headers or {}
    try:
        dead_at = float(_text(headers.get(DEAD_AT_HEADER, "0")))
    except ValueError:
        dead_at = 0.0
    return DeadLetter(queue=_text(headers.get(QUEUE_HEADER, queue)), message_id=props.message_id or "",
                      reason=_text(headers.get(REASON_HEADER) or _rabbitmq_reason(headers)), data=body, dead_at=dead_at)


def _rabbitmq_reason(headers: dict[str, Any]) -> str:
    """The reason of a message RabbitMQ dead-lettered itself (a quorum queue's ``delivery-limit``), from the first
    ``x-death`` entry; ``?`` when there is none."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) and deaths[0].get("reason"):
        return f"dead-lettered by rabbitmq: {_text(deaths[0]['reason'])}"
    return "?"
