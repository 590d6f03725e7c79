"""Pipelined publishing with publisher confirms: ``ConfirmPublisher`` writes a whole batch, then waits once for
RabbitMQ to confirm or refuse each of its messages, instead of one round trip per message.

pika's ``BlockingChannel.basic_publish`` in confirm mode waits for each message's confirm before the next is sent.
This publishes on the asynchronous channel under it (``BlockingChannel._impl``), keeps its own count of delivery
tags (1, 2, 3... per channel once in confirm mode) and pumps the connection through the blocking channel until every
tag of the batch is answered:

- ``basic.ack`` confirms the message (``multiple`` confirms every tag up to it);
- ``basic.nack`` refuses it (RabbitMQ could not store it);
- a ``mandatory`` message no queue took comes back as ``basic.return`` *before* its ``basic.ack``: refused too.

Nothing is reported confirmed that RabbitMQ did not ack, and a lost channel or connection raises (the caller knows
from ``confirmed`` which messages made it). The frames are encoded by ``_frames`` (pika's encoder takes
longer than RabbitMQ takes to store a message) and handed to pika's output buffer ``WRITE_EVERY`` messages at a time.
Used by the link's I/O owner only (see ``_link``).

Windowed mode (``send``): a single message is written to the socket at once, the confirms that have arrived are read
after it, and its own confirm is not waited for; a ``ConfirmWindow`` (``_window``) keeps it until RabbitMQ answers,
whenever the connection is next pumped, and the channel's confirms and returns are shared between the window's tags
and a batch's.

The pika internals this relies on, fenced by tests/unit/test_pika_internals.py (which names whichever one a pika
release changes) and by the pin in pyproject.toml: ``BlockingChannel._impl`` (the asynchronous channel: its
``confirm_delivery``, ``add_on_return_callback``, ``channel_number`` and ``_raise_if_not_open``),
``BlockingChannel._flush_output`` (pump until a predicate holds), the negotiated ``frame_max`` in
``connection.params`` and ``Connection._output_marshaled_frames`` (our bytes into pika's output buffer); for
windowed sends on plain TCP, the connection's ``_transport`` (``_AsyncPlaintextTransport``: ``get_write_buffer_size``,
``_on_socket_writable`` and ``_on_socket_readable``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pika
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as PlaintextTransport

from taskfleet.brokers.rabbitmq import _frames as frames
from taskfleet.brokers.rabbitmq import _output as output

if TYPE_CHECKING:
    from taskfleet.brokers.rabbitmq._window import ConfirmWindow

#: Most messages ``ConfirmPublisher`` keeps unconfirmed: past it, it waits for confirms down to half of it before
#: writing more, so its output buffer stays bounded and RabbitMQ's flow control can act.
PUBLISH_WINDOW = 2000
#: Messages whose frames ``ConfirmPublisher`` joins into one write.
WRITE_EVERY = 256
#: Distinct (exchange, routing key) whose ``basic.publish`` frame is kept encoded.
_MAX_METHOD_CACHE = 1024


@dataclass(frozen=True, slots=True)
class Publish:
    """One persistent message for ``ConfirmPublisher.publish``: where it goes, its body, ``message_id`` and
    ``priority``; ``headers`` when it has any (encoded by pika, the slower path)."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None
    priority: int | None = 0
    headers: dict[str, Any] | None = None

    @property
    def properties(self) -> pika.BasicProperties:
        return pika.BasicProperties(delivery_mode=frames.PERSISTENT, message_id=self.message_id,
                                    priority=self.priority, headers=self.headers)


#: Why ``ConfirmPublisher.publish`` reports a message as not stored.
RETURNED = "returned"  # mandatory and unroutable: RabbitMQ sent it back (basic.return), then confirmed it
NACKED = "nacked"  # RabbitMQ could not store it (basic.nack)

_PENDING, _RETURNED, _SETTLED = 0, 1, 2


class _InFlight:
    """The confirms one ``ConfirmPublisher.publish`` call waits for. Position ``p`` is the message published with
    delivery tag ``first + p``; ``indices[p]`` is its index in the caller's batch."""

    __slots__ = ("confirmed", "first", "indices", "low", "messages", "outstanding", "refused", "states")

    def __init__(self, first: int, messages: Sequence[Publish], confirmed: list[bool]) -> None:
        self.first = first
        self.messages = messages
        self.indices: list[int] = []
        self.states = bytearray()
        self.low = 0  # every position below it is settled
        self.outstanding = 0  # published, neither confirmed nor refused yet
        self.confirmed = confirmed
        self.refused: dict[int, str] = {}

    def settle(self, position: int, ack: bool) -> None:
        state = self.states[position]
        if state == _SETTLED:
            return
        self.states[position] = _SETTLED
        self.outstanding -= 1
        index = self.indices[position]
        if not ack:
            self.refused[index] = NACKED
        elif state == _RETURNED:
            self.refused[index] = RETURNED
        else:
            self.confirmed[index] = True


class ConfirmPublisher:
    """A channel of ``connection`` in publisher-confirm mode that pipelines (see the module notes)."""

    def __init__(self, connection: BlockingConnection, window: ConfirmWindow | None = None) -> None:
        self.channel: BlockingChannel = connection.channel()
        self.window = window
        if window is not None:
            window.channel_lost()  # what the previous channel left unconfirmed is sent again on this one
        self._impl = self.channel._impl
        self._tag = 0  # delivery tag of the last message published on this channel
        self._methods: dict[tuple[str, str], bytes] = {}  # (exchange, routing key) -> its basic.publish frame
        self._batch: _InFlight | None = None
        self._broken = False
        selected: list[object] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        self._impl.add_on_return_callback(self._on_return)
        self.channel._flush_output(lambda: bool(selected))

    @property
    def is_open(self) -> bool:
        return not self._broken and bool(self.channel.is_open)

    def publish(self, messages: Sequence[Publish], confirmed: list[bool]) -> dict[int, str]:
        """Publish every message whose ``confirmed`` entry is False (mandatory, so an unroutable one is refused,
        not dropped), then wait until RabbitMQ has answered for each. Sets ``confirmed[i]`` as message ``i`` is
        confirmed, so after a lost connection a retry sends only the others. Returns the refused messages, index ->
        ``RETURNED`` or ``NACKED``. Raises what pika raises when the channel or the connection closes meanwhile."""
        batch = _InFlight(self._tag + 1, messages, confirmed)
        self._batch = batch
        try:
            pending: list[bytes] = []
            for index, message in enumerate(messages):
                if confirmed[index]:
                    continue
                pending.append(self._frames(message))
                self._tag += 1
                batch.indices.append(index)
                batch.states.append(_PENDING)
                batch.outstanding += 1
                if len(pending) == WRITE_EVERY or batch.outstanding >= PUBLISH_WINDOW:
                    output.write(self.channel, pending)
                    if batch.outstanding >= PUBLISH_WINDOW:
                        self.channel._flush_output(lambda: batch.outstanding <= PUBLISH_WINDOW // 2)
            output.write(self.channel, pending)
            self.channel._flush_output(lambda: batch.outstanding == 0)
        except BaseException:
            # Tags counted here may not match what RabbitMQ received: this channel is done with.
            self._broken = True
            with contextlib.suppress(Exception):
                self.channel.close()
            raise
        finally:
            self._batch = None
        return batch.refused

    def send(self, message: Publish | None) -> None:
        """Windowed publish: write the window's orphans (first) and ``message`` (mandatory), wait only until they
        are handed to the socket, not for their confirms, which the window collects as the connection is pumped.
        When the window is full, wait for confirms down to half of it (back-pressure). None: only the orphans."""
        window = self.window
        if window is None:
            raise RuntimeError("send() needs a publisher made with a ConfirmWindow")
        queued = [*window.take_orphans(), *([] if message is None else [message])]
        pending: list[bytes] = []
        registered = 0  # of ``queued``, those in the window under their tag (``_write`` empties ``pending``)
        try:
            for each in queued:
                pending.append(self._frames(each))
                self._tag += 1
                window.written(self._tag, each)
                registered += 1
            output.write(self.channel, pending)
            if window.full:
                self.channel._flush_output(lambda: window.outstanding <= window.limit // 2)
            else:
                self._write_then_read()
        except BaseException:
            self._broken = True
            window.channel_lost()  # the written ones first, then those not reached: nothing leaves the window
            window.orphans.extend(queued[registered:])
            with contextlib.suppress(Exception):
                self.channel.close()
            raise

    def drain(self, timeout_s: float) -> bool:
        """Pump the connection until the window has no message outstanding (written orphans included) or
        ``timeout_s`` seconds have passed; True when it is empty."""
        window = self.window
        if window is None:
            return True
        if window.orphans:
            self.send(None)
        if not window.outstanding:
            return True
        try:
            return output.pump_until(self.channel, lambda: not window.outstanding, timeout_s)
        except BaseException:
            self._broken = True
            window.channel_lost()
            raise

    def _frames(self, message: Publish) -> bytes:
        channel = self._impl.channel_number
        key = (message.exchange, message.routing_key)
        method = self._methods.get(key)
        if method is None:
            if len(self._methods) >= _MAX_METHOD_CACHE:
                self._methods.clear()
            method = self._methods[key] = frames.publish_method(channel, *key, mandatory=True)
        frame_max = self._impl.connection.params.frame_max
        message_id = None if message.message_id is None else message.message_id.encode()
        if message.headers is None and message.priority is not None and message_id is not None \
                and len(message_id) <= 255:
            return frames.persistent_message(method, channel, message.body, priority=message.priority,
                                             message_id=message_id, frame_max=frame_max)
        header: bytes = pika.frame.Header(channel, len(message.body), message.properties).marshal()
        return method + header + frames.body_frames(channel, message.body, frame_max=frame_max)

    def _write_then_read(self) -> None:
        """Send what was written to the socket now, from this thread, then read the confirms that have arrived,
        without waiting. pika's own poll would read and dispatch those confirms first: the message is on the wire
        about 0.06 ms sooner this way. Reading them at all matters: after a lost connection every message whose
        confirm was not read is published again (a duplicate). On plain TCP only, straight from pika's transport
        (it sends until the socket would block and keeps the rest, which the poll then sends); over TLS one poll
        does both, as before."""
        transport: Any = getattr(self._impl.connection, "_transport", None)
        if type(transport) is not PlaintextTransport:
            self.channel._flush_output()
            return
        if transport.get_write_buffer_size():
            transport._on_socket_writable()
        self.channel._flush_output()  # what the socket did not take at once (nothing, usually)
        transport._on_socket_readable()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ack = isinstance(method, pika.spec.Basic.Ack)
        if self.window is not None:
            self.window.confirmed(method.delivery_tag, multiple=bool(method.multiple), ack=ack)
        batch = self._batch
        if batch is None:  # a batch abandoned by an exception: its confirms no longer matter
            return
        position = method.delivery_tag - batch.first  # negative: a tag of an abandoned batch
        if method.multiple:
            last = min(position, len(batch.states) - 1)
            for earlier in range(batch.low, last + 1):
                batch.settle(earlier, ack)
            batch.low = max(batch.low, last + 1)
        elif 0 <= position < len(batch.states):
            batch.settle(position, ack)

    def _on_return(self, _channel: Any, method: Any, properties: pika.BasicProperties, _body: bytes) -> None:
        # A return carries no delivery tag, but RabbitMQ sends it before the confirm of the message it returns, so
        # it is the earliest unanswered message of the batch with the same exchange, routing key and message id.
        batch = self._batch
        key = (method.exchange, method.routing_key, properties.message_id)
        if batch is not None:
            for position in range(batch.low, len(batch.states)):
                if batch.states[position] != _PENDING:
                    continue
                message = batch.messages[batch.indices[position]]
                if (message.exchange, message.routing_key, message.message_id) == key:
                    batch.states[position] = _RETURNED
                    return
        if self.window is not None:
            self.window.returned(*key)


def describe_refusals(messages: Sequence[Publish], refused: dict[int, str], queue_of: Callable[[Publish], str]) -> str:
    """What ``publish`` refused, for an error message: per queue (``queue_of``) and reason, how many and the first
    few message ids, then how many of the batch were stored."""
    groups: dict[tuple[str, str], list[str]] = {}
    for index, reason in sorted(refused.items()):
        groups.setdefault((queue_of(messages[index]), reason), []).append(str(messages[index].message_id))
    parts = []
    for (queue, reason), ids in groups.items():
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        if reason == RETURNED:
            parts.append(f"could not route {len(ids)} message(s) to {queue!r} (its queue was deleted?): {shown}")
        else:
            parts.append(f"refused to store {len(ids)} message(s) for {queue!r} (nack): {shown}")
    stored = len(messages) - len(refused)
    return "; ".join(parts) + (f"; the other {stored} message(s) of the batch are stored" if stored else "")
