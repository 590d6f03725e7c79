"""``StreamAppender``: writes messages to stream queues without a round trip each, yet never far ahead of RabbitMQ.

A stream stores what reaches its writer together as one *chunk*, and a segment is closed only between chunks; when
RabbitMQ then enforces a byte cap it drops whole segments, always keeping the newest. So a flood of unconfirmed
writes, arriving while the server is slow (on a loaded machine), can land as one chunk larger than the cap: the segment
holding it is dropped whole on the next roll (a reader's marker is enough), and with it every event the stream had.
The appender therefore keeps at most ``WINDOW_BYTES`` unconfirmed on a confirm-mode channel of its own: a write
past that waits for RabbitMQ's confirms first. A writer's share of one chunk is then at most about twice that,
while sparse writes (a ``task-sent`` per ``delay()``) still cost no round trip.

A nack (RabbitMQ could not store a message) is reported by the next ``append`` (``BrokerError``); a message lost
with its connection is not written again: what goes through here is best effort (events), bounded, not guaranteed.
Used under the link's I/O lock (its confirms are read by whichever thread pumps the connection). The pika internals
(``_impl``, ``confirm_delivery``, ``_flush_output``, and those of ``_output``) are fenced by
tests/unit/test_pika_internals.py.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from taskfleet.brokers.rabbitmq import _frames as frames
from taskfleet.brokers.rabbitmq import _output as output
from taskfleet.errors import BrokerConnectionError, BrokerError

#: The most bytes of message bodies written and not yet confirmed: a write past it waits for confirms first.
WINDOW_BYTES = 64 * 2**10


class StreamAppender:
    """A confirm-mode channel of ``connection`` that appends to stream queues (see the module notes)."""

    def __init__(self, connection: BlockingConnection, *, window_bytes: int = WINDOW_BYTES) -> None:
        self.window_bytes = window_bytes
        self.channel: BlockingChannel = connection.channel()
        self._impl = self.channel._impl
        self._tag = 0  # delivery tag of the last message written on this channel
        self._unconfirmed: OrderedDict[int, int] = OrderedDict()  # delivery tag -> body bytes, ascending
        self._unconfirmed_bytes = 0
        self._nacked = 0  # messages RabbitMQ refused, not reported yet
        selected: list[object] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected.append)
        self.channel._flush_output(lambda: bool(selected))

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open)

    @property
    def unconfirmed_bytes(self) -> int:
        return self._unconfirmed_bytes

    def append(self, queue: str, bodies: Sequence[bytes], *, confirms_within_s: float) -> None:
        """Write ``bodies`` to ``queue`` (through the default exchange) in order, each once the window has room for
        it, waiting for confirms up to ``confirms_within_s`` seconds per wait (``BrokerConnectionError`` past it).
        ``BrokerError`` first, writing nothing, when RabbitMQ refused earlier messages."""
        if self._nacked:
            refused, self._nacked = self._nacked, 0
            raise BrokerError(f"rabbitmq refused to store {refused} earlier message(s) in stream {queue}")
        number = self._impl.channel_number
        frame_max = self._impl.connection.params.frame_max
        method = frames.publish_method(number, "", queue, mandatory=False)
        pending: list[bytes] = []
        for body in bodies:
            if self._unconfirmed and self._unconfirmed_bytes + len(body) > self.window_bytes:
                output.write(self.channel, pending)
                self._wait_for_room(len(body), confirms_within_s, queue)
            pending.append(method + frames.content_header(number, len(body), delivery_mode=None, priority=None,
                                                          message_id=None)
                           + frames.body_frames(number, body, frame_max=frame_max))
            self._tag += 1
            self._unconfirmed[self._tag] = len(body)
            self._unconfirmed_bytes += len(body)
        output.write(self.channel, pending)
        self.channel._flush_output()

    def _wait_for_room(self, size: int, timeout_s: float, queue: str) -> None:
        def roomy() -> bool:
            return not self._unconfirmed or self._unconfirmed_bytes + size <= self.window_bytes

        if not output.pump_until(self.channel, roomy, timeout_s):
            raise BrokerConnectionError(f"rabbitmq did not confirm {self._unconfirmed_bytes} bytes written to "
                                        f"stream {queue} within {timeout_s:.0f}s")

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        settled = 0
        if method.multiple:
            while self._unconfirmed and next(iter(self._unconfirmed)) <= tag:
                self._unconfirmed_bytes -= self._unconfirmed.popitem(last=False)[1]
                settled += 1
        elif tag in self._unconfirmed:
            self._unconfirmed_bytes -= self._unconfirmed.pop(tag)
            settled = 1
        if not isinstance(method, pika.spec.Basic.Ack):
            self._nacked += settled
