"""How the RabbitMQ broker lays out queues and exchanges, as names and pure functions (table-tested), plus the
declare calls that create them on a channel and ``Declarations``, which remembers what one connection has declared.

Everything Taskfleet creates is durable and named ``taskfleet.*``; users' queues may not use that prefix.

- A task queue ``Q`` is a classic durable queue named ``Q`` with ``x-max-priority: 9``, or, with
  ``queue_type="quorum"`` (``BrokerSettings.queue_type``), a quorum queue with no priorities whose own dead-lettering
  (RabbitMQ 4.x's ``delivery-limit``, 20 by default) goes to ``taskfleet.dead.Q``. Publishing uses the default
  exchange (routing key = queue name).
- Its dead-letter queue is ``taskfleet.dead.Q`` (always classic: browsing it relies on a closed channel giving its
  messages back in order): a message that cannot be processed is copied there with the reason in its headers
  (``x-taskfleet-reason``), then acked.

Nothing here is what RabbitMQ 4.x refuses by default (deprecated features): every queue is durable or exclusive (no
transient non-exclusive queue), and no ``basic.qos`` is global. ``tests/unit/test_rabbitmq_amqp_usage.py`` fences it.
- Delays use a ladder of ``DELAY_LEVELS`` queues with fixed TTLs (``taskfleet.delay.<k>`` holds a message
  ``2**k * DELAY_UNIT_S`` seconds). A delay is written in binary, one routing-key word per level from the highest:
  ``"0.1.1.0.....Q"``. Each level's topic exchange sends the message to its level's queue when its bit is 1 and on
  to the next level down when it is 0; a level's queue dead-letters expired messages (all of the same age, so no
  message ever waits behind a later one) to the next level's exchange. After level 0, the exchange
  ``taskfleet.delay.deliver`` routes the message to ``Q`` by the last word(s) of its routing key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pika.exceptions

from taskfleet.brokers.base import MAX_PRIORITY
from taskfleet.errors import BrokerError, ConfigurationError
from taskfleet.settings import CLASSIC, QUORUM, validate_queue_name

if TYPE_CHECKING:
    from taskfleet.brokers.rabbitmq._link import Channels

PREFIX = "taskfleet."
DEAD_PREFIX = PREFIX + "dead."
DELAY_PREFIX = PREFIX + "delay."
DELIVER_EXCHANGE = DELAY_PREFIX + "deliver"
CREDIT_PREFIX = PREFIX + "unstarted."
#: A credit not used within this long is deleted (its message was purged, or redelivered only after that long).
CREDIT_EXPIRES_MS = 24 * 3600 * 1000
#: Resolution of delays: a delay is rounded to the nearest multiple.
DELAY_UNIT_S = 0.1
#: Levels of the delay ladder: delays up to (2**DELAY_LEVELS - 1) * DELAY_UNIT_S, about 9.7 days.
DELAY_LEVELS = 23
MAX_DELAY_S = (2**DELAY_LEVELS - 1) * DELAY_UNIT_S
#: Arguments of every classic task queue; a queue declared elsewhere with other arguments is a clear error at declare.
TASK_QUEUE_ARGUMENTS: dict[str, Any] = {"x-max-priority": MAX_PRIORITY}
#: AMQP reply code of a declare whose arguments differ from the existing queue's.
PRECONDITION_FAILED = 406


def task_queue_name(queue: str) -> str:
    """``queue`` itself, after checking it is a valid Taskfleet queue name outside the reserved prefix."""
    validate_queue_name(queue)
    if queue.startswith(PREFIX):
        raise ConfigurationError(f"queue name {queue!r} uses the prefix {PREFIX!r}, reserved by Taskfleet on RabbitMQ")
    return queue


def dead_queue_name(queue: str) -> str:
    """The dead-letter queue of ``queue``."""
    return DEAD_PREFIX + task_queue_name(queue)


def credit_queue_name(queue: str, message_id: str) -> str:
    """The queue holding the credit of an unstarted delivery of ``message_id`` from ``queue`` (a hash: message ids
    may be as long as a queue name may be)."""
    digest = hashlib.sha1(f"{queue}\0{message_id}".encode(), usedforsecurity=False).hexdigest()
    return CREDIT_PREFIX + digest


def declare_credit_queue(channel: Any, name: str) -> None:
    """Declare a credit queue: durable (RabbitMQ 4.x refuses transient non-exclusive queues, and a credit must
    outlive the supervisor's connection that leaves it), deleted by RabbitMQ once unused for ``CREDIT_EXPIRES_MS``.
    One left by an older Taskfleet (declared transient) is used as it is: PRECONDITION_FAILED closes only
    ``channel``, which reopens on next use, and the credit is published to the existing queue."""
    try:
        channel.queue_declare(name, durable=True, arguments={"x-expires": CREDIT_EXPIRES_MS})
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != PRECONDITION_FAILED:
            raise


def task_queue_arguments(queue: str, queue_type: str) -> dict[str, Any]:
    """The ``queue_declare`` arguments of task queue ``queue`` of type ``queue_type`` (``classic``: priorities 0-9;
    ``quorum``: what RabbitMQ itself dead-letters, a message returned ``delivery-limit`` times, goes to our
    dead-letter queue instead of being dropped)."""
    if queue_type == QUORUM:
        return {"x-queue-type": QUORUM, "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead_queue_name(queue)}
    return TASK_QUEUE_ARGUMENTS


def check_priority_supported(queue: str, queue_type: str, priority: int) -> None:
    """``ConfigurationError`` for a message with a priority sent to a quorum queue, which would ignore it (RabbitMQ
    3.x quorum queues have no priorities, 4.x only two levels): refused rather than silently run out of order."""
    if priority and queue_type == QUORUM:
        raise ConfigurationError(
            f"queue {queue!r} is a RabbitMQ quorum queue (task_default_queue_type='quorum'), which has no message "
            f"priorities: priority={priority} would be ignored, so it is refused. Send it with priority 0, or send "
            f"prioritised tasks through an app whose task_default_queue_type is 'classic', to another queue")


def refused_declare(queue: str, queue_type: str, exc: pika.exceptions.ChannelClosedByBroker) -> BrokerError:
    """The error for RabbitMQ refusing to declare task queue ``queue``: for PRECONDITION_FAILED, what differs and
    what to do (a queue's type and arguments cannot change in place)."""
    said = f"{exc.reply_code} {exc.reply_text}"
    if exc.reply_code != PRECONDITION_FAILED:
        return BrokerError(f"rabbitmq refused to declare task queue {queue!r}: {said}")
    other = CLASSIC if queue_type == QUORUM else QUORUM
    return BrokerError(
        f"rabbitmq refused to declare task queue {queue!r} as a {queue_type} queue: it exists with other arguments "
        f"({said}). RabbitMQ cannot change a queue's type or arguments in place. Declare it alike everywhere "
        f"(every app and worker using it with the same task_default_queue_type; it may be a {other} queue, or one "
        f"created by another client), or recreate it: stop its producers, drain it with its workers, delete it "
        f"(rabbitmqctl delete_queue {queue}, or the management UI) and the next declare creates it as a "
        f"{queue_type} queue (docs/brokers.md, 'Queue types')")


def delay_level_name(level: int) -> str:
    """Name of the exchange and of the queue of one ladder level."""
    return f"{DELAY_PREFIX}{level}"


def delay_units(delay_s: float) -> int:
    """``delay_s`` in ladder units (rounded); 0 means publish straight to the queue. Longer than ``MAX_DELAY_S`` is
    a ``ValueError``."""
    if delay_s != delay_s or delay_s > MAX_DELAY_S + DELAY_UNIT_S / 2:  # NaN or too long
        raise ValueError(f"delay of {delay_s}s is longer than the RabbitMQ broker's maximum of {MAX_DELAY_S:.0f}s")
    return max(0, round(delay_s / DELAY_UNIT_S))


def delay_routing_key(units: int, queue: str) -> str:
    """The routing key that walks the ladder for ``units`` and ends in ``queue``: one bit per level, highest
    level first, then the queue name."""
    if not 0 < units < 2**DELAY_LEVELS:
        raise ValueError(f"delay units must be 1..{2**DELAY_LEVELS - 1}, got {units}")
    bits = ".".join("1" if units >> level & 1 else "0" for level in reversed(range(DELAY_LEVELS)))
    return f"{bits}.{queue}"


def queue_of(exchange: str, routing_key: str) -> str:
    """The task queue a message published (or dead-lettered) to ``exchange`` with ``routing_key`` is for: the
    routing key itself through the default exchange; a delayed one names it after its delay bits."""
    return routing_key.split(".", DELAY_LEVELS)[-1] if exchange else routing_key


def level_pattern(level: int, bit: str) -> str:
    """Topic pattern that matches routing keys whose bit for ``level`` is ``bit``."""
    return "*." * (DELAY_LEVELS - 1 - level) + bit + ".#"


def deliver_pattern(queue: str) -> str:
    """Topic pattern that matches exactly the delay routing keys ending in ``queue`` (word count fixed, so queue
    ``b.c`` never matches a key for ``a.b.c``)."""
    return "*." * DELAY_LEVELS + queue


@dataclass(frozen=True, slots=True)
class LadderLevel:
    """One rung of the delay ladder: its exchange and queue (same name), TTL and where expired messages go."""

    level: int
    name: str
    ttl_ms: int
    next_exchange: str


def ladder() -> Iterator[LadderLevel]:
    """The levels from 0 (shortest) up, so each level's next exchange is declared before it."""
    for level in range(DELAY_LEVELS):
        yield LadderLevel(
            level=level,
            name=delay_level_name(level),
            ttl_ms=round(2**level * DELAY_UNIT_S * 1000),
            next_exchange=delay_level_name(level - 1) if level else DELIVER_EXCHANGE,
        )


def declare_ladder(channel: Any) -> None:
    """Declare the delay ladder on ``channel`` (a pika ``BlockingChannel``); idempotent."""
    channel.exchange_declare(DELIVER_EXCHANGE, exchange_type="topic", durable=True)
    for rung in ladder():  # level 0 first: its next exchange (deliver) exists; level k needs k-1
        channel.exchange_declare(rung.name, exchange_type="topic", durable=True)
        channel.queue_declare(rung.name, durable=True, arguments={
            "x-message-ttl": rung.ttl_ms,
            "x-dead-letter-exchange": rung.next_exchange,
        })
        channel.queue_bind(rung.name, rung.name, routing_key=level_pattern(rung.level, "1"))
        channel.exchange_bind(destination=rung.next_exchange, source=rung.name,
                              routing_key=level_pattern(rung.level, "0"))


def declare_task_queue(channel: Any, queue: str, *, ladder_ready: bool, queue_type: str = CLASSIC) -> None:
    """Declare ``queue`` (of ``queue_type``) and its dead-letter queue; bind it to the ladder's deliver exchange
    when the ladder exists (delayed messages for an unbound queue would be dropped by RabbitMQ). A refused declare
    raises ``BrokerError`` saying what to do (``refused_declare``); it closes only ``channel``."""
    try:
        channel.queue_declare(task_queue_name(queue), durable=True, arguments=task_queue_arguments(queue, queue_type))
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise refused_declare(queue, queue_type, exc) from exc
    channel.queue_declare(dead_queue_name(queue), durable=True)
    if ladder_ready:
        channel.queue_bind(queue, DELIVER_EXCHANGE, routing_key=deliver_pattern(queue))


class Declarations:
    """The task queues (and the delay ladder) one broker has declared on its current connection, so that each is
    declared once per connection generation. Used only by the thread driving the connection."""

    def __init__(self, *, queue_type: str = CLASSIC) -> None:
        #: The type task queues are declared as (``BrokerSettings.queue_type``).
        self.queue_type = queue_type
        self._declared: tuple[int, set[str]] = (0, set())
        self._ladder_generation = 0
        #: Every task queue this client has declared (what ``queues()`` lists without the management API).
        self.known: set[str] = set()

    def declare(self, ch: Channels, queue: str, *, ladder: bool) -> None:
        """Declare ``queue`` (and first the delay ladder when ``ladder``) on ``ch`` unless already done on this
        connection."""
        generation, declared = self._declared
        if generation != ch.generation:
            declared = set()
            self._declared = (ch.generation, declared)
        if ladder and self._ladder_generation != ch.generation:
            declare_ladder(ch.admin)
            self._ladder_generation = ch.generation
            declared.clear()  # queues declared before the ladder need their deliver binding
        if queue not in declared:
            declare_task_queue(ch.admin, queue, ladder_ready=self._ladder_generation == ch.generation,
                               queue_type=self.queue_type)
            declared.add(queue)
            self.known.add(queue)

    def forget(self) -> None:
        """Declare every queue again on next use (one may have been deleted behind our back); the ladder is kept."""
        self._declared = (0, set())
