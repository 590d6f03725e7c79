"""The fleet store on RabbitMQ: a fanout exchange for control, exclusive queues for listeners and reply inboxes, and
three stream queues (``_streams``) for the registry, the revocations and the events of an app (namespace ``N``).

- **Registry.** Every heartbeat is a message in the stream ``taskfleet.fleet.N.workers`` carrying the worker id and
  its expiry (Unix ms by the worker's clock) in headers; ``forget_worker`` appends a tombstone. A store reads the
  last ``MAX_RECORD_TTL_S`` of it once, then only what was appended since (it keeps the latest record per worker),
  and lists the records that have not expired. RabbitMQ drops segments older than ``REGISTRY_MAX_AGE``.
- **Revocations.** One message per revocation in ``taskfleet.fleet.N.revocations``, read from the first once and
  incrementally after; the latest per task id wins, expired ones are left out. Kept at most
  ``REVOCATIONS_MAX_AGE`` (7 days) and ``REVOCATIONS_MAX_BYTES``.
- **Control.** ``publish_control`` publishes to the fanout exchange ``taskfleet.fleet.N.control``; each listener
  has a connection of its own and an exclusive, auto-delete queue bound to it before ``control_listener`` returns.
  A listener whose connection dropped subscribes again on its next ``receive`` (requests in between are lost).
- **Replies.** An inbox is an exclusive, auto-delete, server-named queue consumed on the store's connection; its
  name is the address, and workers publish to it through the default exchange. Once it is closed, RabbitMQ drops
  what is sent to it (unroutable).
- **Events.** The stream ``taskfleet.fleet.N.events``, one message per ``emit_events`` batch (``event_entries``: the
  events newline-joined; at most 1000 events or about 64 KiB a message): RabbitMQ's work per message, not per event,
  was most of what task events cost. Streams are capped in bytes, not events: the cap is ``events_max_len *
  ASSUMED_EVENT_BYTES`` (512 B), at least ``MIN_EVENTS_BYTES`` (1 MiB), and RabbitMQ drops whole segments (a quarter
  of the cap) when a new one starts. So it keeps about ``events_max_len`` events of 512 bytes (a packed event takes
  its bytes plus one; the per-message overhead is shared by the batch), more of smaller ones, never more than 1.25
  times the cap in bytes, and at least the newest batch. ``emit_events`` writes through a ``StreamAppender``
  (``_appender``), which waits for confirms only when more than 64 KiB are unconfirmed: RabbitMQ stores what arrives
  together as one chunk, and a flood of unconfirmed batches once landed as one chunk bigger than the cap, whose
  segment was then dropped whole, events and all. The cursor is the stream offset of the last message read (markers
  included), ``"<offset>:<n>"`` when a page ended after the first ``n`` events of that message. A cap declared first
  by another store (another ``events_max_len``) stays as it was.

Heartbeats and revocations are published with confirms, so a marker published after them (``_streams``) comes
after them in the stream. Every connection is the store's own, opened from the broker's settings.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import pika.exceptions

from taskfleet.brokers import event_entries
from taskfleet.brokers.base import Broker
from taskfleet.brokers.event_entries import Cursor
from taskfleet.brokers.fleet_store import ControlListener, FleetStore, ReplyInbox
from taskfleet.brokers.rabbitmq import _streams as streams
from taskfleet.brokers.rabbitmq._appender import StreamAppender
from taskfleet.brokers.rabbitmq._link import AmqpLink, Channels
from taskfleet.brokers.rabbitmq._publisher import Publish
from taskfleet.errors import BrokerConnectionError, BrokerError, ConfigurationError, ControlError, DecodeError
from taskfleet.fleet.revocations import Revocation
from taskfleet.settings import BrokerSettings

WORKER_HEADER = "x-taskfleet-worker"
EXPIRES_HEADER = "x-taskfleet-expires-ms"
FORGET_HEADER = "x-taskfleet-forget"
#: The longest ``ttl_s`` a heartbeat may have: how far back a store first reads the registry (seconds).
MAX_RECORD_TTL_S = 300.0
#: Deliveries taken from a link per wait.
_TAKE = 1000
#: AMQP's longest queue or exchange name (bytes).
_MAX_NAME_BYTES = 255
_OFFSET = re.compile(r"-?\d+")


class _RabbitListener(ControlListener):
    def __init__(self, settings: BrokerSettings, exchange: str, worker_id: str) -> None:
        self._link = AmqpLink(settings.url, socket_timeout_s=settings.socket_timeout_s,
                              name=f"taskfleet-control {worker_id}")
        self._exchange = exchange
        self._generation = self._subscribe()

    def _subscribe(self) -> int:
        def setup(ch: Channels) -> int:
            ch.admin.exchange_declare(self._exchange, exchange_type="fanout", durable=True)
            queue = ch.consume.queue_declare("", exclusive=True, auto_delete=True).method.queue
            ch.consume.queue_bind(queue, self._exchange)
            ch.consume.basic_consume(queue, on_message_callback=self._link.on_message, auto_ack=True)
            return ch.generation

        return self._link.call(setup, action="subscribe to control requests")

    def receive(self, timeout_s: float) -> list[bytes]:
        if self._link.generation != self._generation:
            self._generation = self._subscribe()
        _, deliveries = self._link.take(_TAKE, timeout_s)
        return [d.body for d in deliveries if d.generation == self._generation]

    def close(self) -> None:
        self._link.close()


class _RabbitInbox(ReplyInbox):
    def __init__(self, store: RabbitMQFleetStore, address: str, tag: str, generation: int) -> None:
        self.address = address
        self._store = store
        self._tag = tag
        self._generation = generation
        self._closed = False

    def collect(self, timeout_s: float, *, expected: int | None = None) -> list[bytes]:
        if self._closed:
            raise ControlError("collect on a closed reply inbox")
        return self._store.collect(self._tag, self._generation, timeout_s, expected)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store.close_inbox(self._tag, self._generation)


class RabbitMQFleetStore(FleetStore):
    """A ``FleetStore`` on the RabbitMQ node of ``settings.url`` (connections of its own; module docstring)."""

    @classmethod
    def for_broker(cls, broker: Broker, *, namespace: str, events_max_len: int) -> Self:
        """A store with its own connection to ``broker``'s server (``FleetStore.for_broker``)."""
        return cls(broker.settings, namespace=namespace, events_max_len=events_max_len)

    def __init__(self, settings: BrokerSettings, *, namespace: str, events_max_len: int) -> None:
        self.namespace = namespace
        self.events_max_len = events_max_len
        self._settings = settings
        self._control = streams.fleet_name(namespace, "control")
        self._registry = streams.fleet_name(namespace, "workers")
        self._revoked = streams.fleet_name(namespace, "revocations")
        self._events = streams.fleet_name(namespace, "events")
        if len(self._revoked.encode()) > _MAX_NAME_BYTES:
            raise ConfigurationError(f"app name {namespace!r} is too long for RabbitMQ queue names")
        self._link = AmqpLink(settings.url, socket_timeout_s=settings.socket_timeout_s,
                              name=f"taskfleet-fleet {namespace}")
        self._declared = 0  # the connection generation the exchange and streams were declared on
        #: The registry as read so far: worker id -> (expiry in Unix ms, record), and where to read on.
        self._workers: dict[str, tuple[int, bytes]] = {}
        self._workers_from: Any = None
        self._revocations: dict[str, Revocation] = {}
        self._revocations_from: Any = "first"
        #: Replies received for each open inbox, by consumer tag.
        self._replies: dict[str, list[bytes]] = {}
        #: Where events are written: (connection generation, its appender).
        self._appender: tuple[int, StreamAppender] | None = None

    def _channels(self, ch: Channels) -> Channels:
        """``ch``, with the exchange and the streams declared on its connection."""
        if self._declared != ch.generation:
            ch.admin.exchange_declare(self._control, exchange_type="fanout", durable=True)
            self._declare_stream(ch, self._registry,
                                 streams.stream_arguments(max_bytes=streams.REGISTRY_MAX_BYTES,
                                                          max_age=streams.REGISTRY_MAX_AGE))
            self._declare_stream(ch, self._revoked,
                                 streams.stream_arguments(max_bytes=streams.REVOCATIONS_MAX_BYTES,
                                                          max_age=streams.REVOCATIONS_MAX_AGE))
            self._declare_stream(ch, self._events, streams.stream_arguments(
                max_bytes=streams.events_max_bytes(self.events_max_len)))
            self._declared = ch.generation
        return ch

    @staticmethod
    def _declare_stream(ch: Channels, name: str, arguments: dict[str, Any]) -> None:
        try:
            ch.admin.queue_declare(name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:  # PRECONDITION_FAILED: declared before with another cap, which stays
                raise
            ch.admin.queue_declare(name, passive=True)

    def _read(self, read: Callable[[Channels], streams.StreamRead], *, action: str) -> streams.StreamRead:
        """``read`` on the store's connection, tried once more on a new one when RabbitMQ refused a consumer on a
        stream that is not ready yet (``streams.not_ready``): a stream declared a moment ago, say by this call."""
        try:
            return self._link.call(read, action=action)
        except BrokerConnectionError as exc:
            if not streams.not_ready(exc):
                raise
        time.sleep(streams.NOT_READY_PAUSE_S)
        return self._link.call(read, action=action)

    def _end_within_s(self) -> float:
        return max(5.0, self._settings.socket_timeout_s)

    def _publish_confirmed(self, ch: Channels, messages: list[Publish], action: str) -> None:
        refused = ch.publisher.publish(messages, [False] * len(messages))
        if refused:
            raise BrokerError(f"rabbitmq fleet store {self._link.masked_url} refused to {action}: "
                              f"{len(refused)} of {len(messages)} messages")

    # -- registry --------------------------------------------------------------------------------------------------

    def heartbeat(self, worker_id: str, record: bytes, *, ttl_s: float) -> None:
        if ttl_s > MAX_RECORD_TTL_S:
            raise ConfigurationError(f"a heartbeat's ttl on RabbitMQ is at most {MAX_RECORD_TTL_S:.0f}s, "
                                     f"got {ttl_s}s: heartbeat more often")
        headers = {WORKER_HEADER: worker_id, EXPIRES_HEADER: int((time.time() + ttl_s) * 1000)}
        message = Publish("", self._registry, record, None, None, headers)
        self._link.call(lambda ch: self._publish_confirmed(self._channels(ch), [message], "store a heartbeat"),
                        action="store a heartbeat")

    def forget_worker(self, worker_id: str) -> None:
        message = Publish("", self._registry, b"", None, None, {WORKER_HEADER: worker_id, FORGET_HEADER: True})
        self._link.call(lambda ch: self._publish_confirmed(self._channels(ch), [message], "forget a worker"),
                        action="forget a worker")
        self._workers.pop(worker_id, None)

    def workers(self) -> list[bytes]:
        start = self._workers_from
        if start is None:
            start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=MAX_RECORD_TTL_S + 1)
        read = self._read(lambda ch: streams.read_stream(self._channels(ch).connection, self._registry, start,
                                                         end_within_s=self._end_within_s()),
                          action="list workers")
        for message in read.messages:
            worker = message.headers.get(WORKER_HEADER)
            if worker is None:
                continue
            worker = _text(worker)
            if message.headers.get(FORGET_HEADER):
                self._workers.pop(worker, None)
            else:
                self._workers[worker] = (int(message.headers.get(EXPIRES_HEADER, 0)), message.body)
        if read.last_offset is not None:
            self._workers_from = read.last_offset + 1
        now_ms = time.time() * 1000
        for gone in [w for w, (expires, _) in self._workers.items() if expires <= now_ms]:
            del self._workers[gone]
        return [record for _, record in self._workers.values()]

    # -- revocations -----------------------------------------------------------------------------------------------

    def add_revocations(self, revocations: Sequence[Revocation]) -> None:
        if not revocations:
            return
        messages = [Publish("", self._revoked, r.to_json(), None, None) for r in revocations]
        self._link.call(lambda ch: self._publish_confirmed(self._channels(ch), messages, "store revocations"),
                        action="store revocations")

    def revocations(self) -> list[Revocation]:
        start = self._revocations_from
        read = self._read(lambda ch: streams.read_stream(self._channels(ch).connection, self._revoked, start,
                                                         end_within_s=self._end_within_s()),
                          action="list revocations")
        for message in read.messages:
            try:
                revocation = Revocation.from_json(message.body)
            except DecodeError:
                continue  # written by something else: not ours to honour
            self._revocations[revocation.task_id] = revocation
        if read.last_offset is not None:
            self._revocations_from = read.last_offset + 1
        now = time.time()
        for gone in [t for t, r in self._revocations.items() if r.expires_at <= now]:
            del self._revocations[gone]
        return list(self._revocations.values())

    # -- control ---------------------------------------------------------------------------------------------------

    def publish_control(self, request: bytes) -> None:
        self._link.call(lambda ch: self._channels(ch).admin.basic_publish(self._control, "", request),
                        action="publish a control request")

    def control_listener(self, worker_id: str) -> ControlListener:
        return _RabbitListener(self._settings, self._control, worker_id)

    def reply_inbox(self) -> ReplyInbox:
        def open_inbox(ch: Channels) -> tuple[str, str, int]:
            queue = ch.consume.queue_declare("", exclusive=True, auto_delete=True).method.queue
            tag = ch.consume.basic_consume(queue, on_message_callback=self._link.on_message, auto_ack=True)
            return queue, tag, ch.generation

        address, tag, generation = self._link.call(open_inbox, action="open a reply inbox")
        self._replies[tag] = []
        return _RabbitInbox(self, address, tag, generation)

    def collect(self, tag: str, generation: int, timeout_s: float, expected: int | None) -> list[bytes]:
        """The replies of the inbox consuming as ``tag`` (``ReplyInbox.collect``); replies for the store's other
        inboxes are kept for them."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        mine = self._replies.setdefault(tag, [])
        while True:
            remaining = deadline - time.monotonic()
            if (expected is not None and len(mine) >= expected) or remaining <= 0 \
                    or self._link.generation != generation:  # the inbox went with its connection
                break
            _, deliveries = self._link.take(_TAKE, remaining)
            for delivery in deliveries:
                if delivery.consumer_tag in self._replies and delivery.generation == generation:
                    self._replies[delivery.consumer_tag].append(delivery.body)
        out = list(mine)
        mine.clear()
        return out

    def close_inbox(self, tag: str, generation: int) -> None:
        """Cancel the inbox's consumer: RabbitMQ deletes its auto-delete queue."""
        self._replies.pop(tag, None)
        if self._link.generation == generation:
            self._link.call(lambda ch: ch.consume.basic_cancel(tag), action="close a reply inbox")

    def reply(self, address: str, reply: bytes) -> None:
        self._link.call(lambda ch: ch.admin.basic_publish("", address, reply), action="send a reply")

    # -- events ----------------------------------------------------------------------------------------------------

    def emit_events(self, events: Sequence[bytes]) -> None:
        """Publish the batch as one message (more for a large batch) through the appender: no round trip unless
        more than its window is still unconfirmed (module notes)."""
        if events:
            bodies = [entry.payload for entry in event_entries.pack(events)]
            self._link.call(lambda ch: self._appender_on(ch).append(self._events, bodies,
                                                                      confirms_within_s=self._end_within_s()),
                            action="emit events")

    def _appender_on(self, ch: Channels) -> StreamAppender:
        """The events appender of ``ch``'s connection (a new one after a reconnect or a closed channel)."""
        current = self._appender
        if current is None or current[0] != ch.generation or not current[1].is_open:
            current = self._appender = (ch.generation, StreamAppender(self._channels(ch).connection))
        return current[1]

    def read_events(self, cursor: str | None, *, limit: int = 1000, timeout_s: float = 0.0) -> tuple[list[bytes], str]:
        at = Cursor.parse(cursor, _OFFSET) if cursor is not None else Cursor("-1")
        if limit <= 0:
            return [], str(at)
        offset = int(at.entry)
        # A page that ended inside a message reads it again (it is skipped into below, if still kept).
        start: Any = offset if at.read is not None else "first" if offset < 0 else offset + 1
        read = self._read(lambda ch: streams.read_stream(
            self._channels(ch).connection, self._events, start, limit=limit, wait_s=timeout_s,
            end_within_s=self._end_within_s() + max(0.0, timeout_s)), action="read events")
        entries = [(str(m.offset), event_entries.unpack(m.body),
                    at.read if at.read is not None and m.offset == offset else 0)
                   for m in read.messages if not isinstance(start, int) or m.offset >= start]
        events, after = event_entries.take(entries, limit)
        if after is None or (after.read is None and len(events) < limit):
            # Everything read was taken: read on after the last message seen, markers included.
            after = at if read.last_offset is None else Cursor(str(read.last_offset))
        return events, str(after)

    def events_end(self) -> str:
        read = self._read(lambda ch: streams.read_stream(self._channels(ch).connection, self._events, "last",
                                                         end_within_s=self._end_within_s()),
                          action="find the end of the events")
        return str(-1 if read.last_offset is None else read.last_offset)

    def close(self) -> None:
        self._link.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
