"""Specification of ``StreamAppender`` (taskfleet.brokers.rabbitmq._appender): how far it writes ahead of RabbitMQ's
confirms, and what it reports when they do not come. A fake stands in for pika's channel: it decodes what was
written and confirms only when the appender waits (so every write that did not wait is visibly unconfirmed), the
way the test says."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from pika import frame, spec

from taskfleet.brokers.rabbitmq._appender import WINDOW_BYTES, StreamAppender
from taskfleet.errors import BrokerConnectionError, BrokerError
from tests.support.amqp_frames import decoded_frames

KiB = 2**10


class FakeRabbit:
    """pika's blocking and asynchronous channel as far as ``StreamAppender`` uses them. ``answer`` is how RabbitMQ
    answers when the appender waits: "ack" (one multiple ack of all written), "nack" (each written one nacked) or
    "silence" (nothing, until the appender's timer fires)."""

    def __init__(self, answer: str = "ack") -> None:
        self.answer = answer
        self.channel_number = 1
        self.is_open = True
        self.bodies: list[tuple[str, int]] = []  # (routing key, body bytes), by delivery tag - 1
        self.confirmed = 0  # tags up to this one were answered
        self.unconfirmed_at_write: list[int] = []  # unconfirmed bytes once each message was written
        self.waits = 0
        self._impl = self
        self._timers: list[Callable[[], None]] = []
        self.connection = SimpleNamespace(params=SimpleNamespace(frame_max=131072),
                                          _output_marshaled_frames=self._received,
                                          ioloop=SimpleNamespace(call_later=self._call_later,
                                                                 remove_timeout=self._timers.remove))

    # pika's asynchronous channel (``_impl``) and its connection
    def confirm_delivery(self, ack_nack_callback: Callable[[Any], None], callback: Callable[[Any], None]) -> None:
        self.on_confirm = ack_nack_callback
        callback(None)

    def _raise_if_not_open(self) -> None:
        assert self.is_open

    def _call_later(self, _delay: float, callback: Callable[[], None]) -> Callable[[], None]:
        self._timers.append(callback)
        return callback

    def _received(self, chunks: list[bytes]) -> None:
        for parsed in decoded_frames(chunks):
            if isinstance(parsed, frame.Method):
                self.bodies.append((parsed.method.routing_key, 0))
            elif isinstance(parsed, frame.Header):
                self.bodies[-1] = (self.bodies[-1][0], parsed.body_size)
                self.unconfirmed_at_write.append(sum(size for _, size in self.bodies[self.confirmed:]))

    # pika's blocking channel
    def _flush_output(self, *waiters: Callable[[], bool]) -> None:
        if not waiters or any(ready() for ready in waiters):
            return
        self.waits += 1
        written = len(self.bodies)
        if self.answer == "ack" and written > self.confirmed:
            self.on_confirm(SimpleNamespace(method=spec.Basic.Ack(delivery_tag=written, multiple=True)))
        elif self.answer == "nack":
            for tag in range(self.confirmed + 1, written + 1):
                self.on_confirm(SimpleNamespace(method=spec.Basic.Nack(delivery_tag=tag, multiple=False)))
        else:
            for fire in list(self._timers):
                fire()
        self.confirmed = written
        assert any(ready() for ready in waiters), "the appender would wait forever"

    def channel(self) -> FakeRabbit:
        return self

    def close(self) -> None:
        self.is_open = False


def appender(rabbit: FakeRabbit) -> StreamAppender:
    return StreamAppender(rabbit)  # type: ignore[arg-type]


def test_small_writes_go_out_without_waiting_while_the_window_has_room() -> None:
    rabbit = FakeRabbit()
    writer = appender(rabbit)

    for i in range(100):  # 100 x 300 bytes: well inside the window
        writer.append("events", [b"%03d" % i + b"." * 297], confirms_within_s=5)

    assert rabbit.waits == 0
    assert writer.unconfirmed_bytes == 30_000
    assert [key for key, _ in rabbit.bodies] == ["events"] * 100


def test_a_write_past_the_window_waits_for_the_earlier_confirms_first() -> None:
    rabbit = FakeRabbit()
    writer = appender(rabbit)

    for _ in range(10):  # 40 KiB each: two do not fit in the window
        writer.append("events", [b"x" * 40 * KiB], confirms_within_s=5)

    assert rabbit.waits == 9
    assert max(rabbit.unconfirmed_at_write) == 40 * KiB


def test_a_batch_of_many_messages_waits_between_them_so_no_write_is_far_ahead() -> None:
    rabbit = FakeRabbit()
    writer = appender(rabbit)

    writer.append("events", [b"x" * 60 * KiB] * 8, confirms_within_s=5)

    assert len(rabbit.bodies) == 8
    assert max(rabbit.unconfirmed_at_write) <= WINDOW_BYTES


def test_a_message_bigger_than_the_window_goes_alone() -> None:
    rabbit = FakeRabbit()
    writer = appender(rabbit)

    writer.append("events", [b"small"], confirms_within_s=5)
    writer.append("events", [b"x" * 3 * WINDOW_BYTES], confirms_within_s=5)

    assert rabbit.waits == 1  # for "small" only
    assert rabbit.unconfirmed_at_write == [5, 3 * WINDOW_BYTES]


def test_no_confirm_within_the_time_raises_a_connection_error_naming_the_stream() -> None:
    writer = appender(FakeRabbit(answer="silence"))
    writer.append("events", [b"x" * 40 * KiB], confirms_within_s=5)

    with pytest.raises(BrokerConnectionError, match="did not confirm 40960 bytes written to stream events within 5s"):
        writer.append("events", [b"x" * 40 * KiB], confirms_within_s=5)


def test_a_nack_is_reported_by_the_next_append_which_writes_nothing_and_the_one_after_writes_again() -> None:
    rabbit = FakeRabbit(answer="nack")
    writer = appender(rabbit)
    writer.append("events", [b"x" * 40 * KiB], confirms_within_s=5)
    writer.append("events", [b"x" * 40 * KiB], confirms_within_s=5)  # waits: the first is nacked meanwhile

    with pytest.raises(BrokerError, match="refused to store 1 earlier message"):
        writer.append("events", [b"third"], confirms_within_s=5)
    writer.append("events", [b"fourth"], confirms_within_s=5)

    assert [size for _, size in rabbit.bodies] == [40 * KiB, 40 * KiB, 6]
