"""Specification of ``ConfirmPublisher`` (taskfleet.brokers.rabbitmq._publisher): what it reports confirmed or refused
for each way RabbitMQ answers a pipelined batch. A scripted fake stands in for pika's channel: it decodes what the
publisher wrote and answers with confirms, nacks and returns as the test says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from pika import frame, spec

from taskfleet.brokers.rabbitmq import _publisher as rabbitmq_publisher
from taskfleet.brokers.rabbitmq._publisher import NACKED, RETURNED, ConfirmPublisher, Publish
from taskfleet.brokers.rabbitmq._window import ConfirmWindow
from tests.support.amqp_frames import decoded_frames

#: How the fake broker answers the messages written since its last answer: a list of (tag, kind) with kind
#: "ack", "ack+" (multiple), "nack", "nack+" or "return" (a basic.return, to be followed by an ack), in order.
Script = Callable[[list[int]], list[tuple[int, str]]]


def ack_each(tags: list[int]) -> list[tuple[int, str]]:
    return [(tag, "ack") for tag in tags]


@dataclass
class FakeBroker:
    """pika's blocking and asynchronous channel as far as ``ConfirmPublisher`` uses them."""

    script: Script = ack_each
    channel_number: int = 1
    written: list[tuple[int, str, str, str | None]] = field(default_factory=list)  # tag, exchange, key, id
    answered: int = 0
    flushes: int = 0
    is_open: bool = True

    def __post_init__(self) -> None:
        self._impl = self
        self.connection = SimpleNamespace(params=SimpleNamespace(frame_max=131072),
                                          _output_marshaled_frames=self._received)

    # pika's asynchronous channel (``_impl``)
    def confirm_delivery(self, ack_nack_callback: Callable[[Any], None], callback: Callable[[Any], None]) -> None:
        self.on_confirm = ack_nack_callback
        callback(None)

    def add_on_return_callback(self, callback: Callable[..., None]) -> None:
        self.on_return = callback

    def _raise_if_not_open(self) -> None:
        assert self.is_open

    def _received(self, chunks: list[bytes]) -> None:
        for parsed in decoded_frames(chunks):
            if isinstance(parsed, frame.Method):
                publish = parsed.method
                self.written.append((len(self.written) + 1, publish.exchange, publish.routing_key, None))
            elif isinstance(parsed, frame.Header):
                tag, exchange, key, _ = self.written[-1]
                self.written[-1] = (tag, exchange, key, parsed.properties.message_id)

    # pika's blocking channel
    def _flush_output(self, *waiters: Callable[[], bool]) -> None:
        self.flushes += 1
        # RabbitMQ's answers (``script``) to what was written since the last flush, as the connection reads them
        new = [tag for tag, *_ in self.written[self.answered:]]
        self.answered = len(self.written)
        for tag, kind in self.script(new) if new else []:
            if kind == "return":
                _, exchange, key, message_id = self.written[tag - 1]
                self.on_return(self, SimpleNamespace(exchange=exchange, routing_key=key),
                               SimpleNamespace(message_id=message_id), b"")
                continue
            method = spec.Basic.Ack if kind.startswith("ack") else spec.Basic.Nack
            self.on_confirm(SimpleNamespace(method=method(delivery_tag=tag, multiple=kind.endswith("+"))))
        assert not waiters or any(ready() for ready in waiters), "the publisher would wait forever"

    def channel(self) -> FakeBroker:
        return self

    def close(self) -> None:
        self.is_open = False


def batch(count: int, queue: str = "q") -> list[Publish]:
    return [Publish("", queue, b"body", f"m{i}", 0) for i in range(count)]


def publish(broker: FakeBroker, messages: list[Publish],
            confirmed: list[bool] | None = None) -> tuple[dict[int, str], list[bool]]:
    confirmed = [False] * len(messages) if confirmed is None else confirmed
    refused = ConfirmPublisher(broker).publish(messages, confirmed)  # type: ignore[arg-type]
    return refused, confirmed


def test_a_batch_is_written_whole_before_its_confirms_are_awaited_once() -> None:
    broker = FakeBroker()

    refused, confirmed = publish(broker, batch(10))

    assert (refused, confirmed) == ({}, [True] * 10)
    assert broker.flushes == 2  # confirm.select, then one wait for the whole batch
    assert [message_id for *_, message_id in broker.written] == [f"m{i}" for i in range(10)]


def test_one_multiple_ack_confirms_every_message_up_to_its_tag() -> None:
    broker = FakeBroker(script=lambda tags: [(tags[-1], "ack+")])

    assert publish(broker, batch(5)) == ({}, [True] * 5)


def test_confirms_in_any_order_are_matched_by_tag() -> None:
    broker = FakeBroker(script=lambda tags: [(3, "ack"), (1, "ack"), (4, "ack+"), (2, "ack")])

    assert publish(broker, batch(4)) == ({}, [True] * 4)


def test_a_nacked_message_is_refused_and_the_others_confirmed() -> None:
    broker = FakeBroker(script=lambda tags: [(1, "ack"), (2, "nack"), (3, "ack")])

    assert publish(broker, batch(3)) == ({1: NACKED}, [True, False, True])


def test_a_multiple_nack_refuses_every_message_not_yet_answered_up_to_its_tag() -> None:
    broker = FakeBroker(script=lambda tags: [(2, "ack"), (3, "nack+"), (4, "ack")])

    assert publish(broker, batch(4)) == ({0: NACKED, 2: NACKED}, [False, True, False, True])


def test_a_returned_message_is_refused_even_though_rabbitmq_acks_it_after_the_return() -> None:
    broker = FakeBroker(script=lambda tags: [(2, "return"), (3, "ack+")])
    messages = [Publish("", "kept", b"x", "a", 0), Publish("", "gone", b"x", "b", 0), Publish("", "kept", b"x", "c", 0)]

    assert publish(broker, messages) == ({1: RETURNED}, [True, False, True])


def test_a_return_is_matched_to_the_earliest_unanswered_message_with_the_same_destination_and_id() -> None:
    broker = FakeBroker(script=lambda tags: [(1, "ack"), (2, "return"), (3, "ack+")])
    messages = [Publish("", "gone", b"x", "same", 0)] * 3

    assert publish(broker, messages) == ({1: RETURNED}, [True, False, True])


def test_a_retry_sends_only_the_messages_not_confirmed_before() -> None:
    broker = FakeBroker()
    confirmed = [True, False, True, False]

    refused, confirmed = publish(broker, batch(4), confirmed)

    assert (refused, confirmed) == ({}, [True] * 4)
    assert [message_id for *_, message_id in broker.written] == ["m1", "m3"]


class Lost(Exception):
    """The connection went away."""


def test_a_lost_connection_keeps_what_was_confirmed_and_retires_the_channel() -> None:
    broker = FakeBroker()
    publisher = ConfirmPublisher(broker)  # type: ignore[arg-type]

    def answer_then_lose(*waiters: Callable[[], bool]) -> None:
        broker.on_confirm(SimpleNamespace(method=spec.Basic.Ack(delivery_tag=2, multiple=True)))
        raise Lost

    broker._flush_output = answer_then_lose  # type: ignore[method-assign]
    confirmed = [False] * 3
    with pytest.raises(Lost):
        publisher.publish(batch(3), confirmed)

    assert confirmed == [True, True, False]
    assert not publisher.is_open  # its delivery tags can no longer be trusted: the next batch takes a new channel


def test_a_batch_larger_than_the_window_waits_for_confirms_before_writing_more(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rabbitmq_publisher, "PUBLISH_WINDOW", 4)
    monkeypatch.setattr(rabbitmq_publisher, "WRITE_EVERY", 2)
    broker = FakeBroker()

    refused, confirmed = publish(broker, batch(10))

    assert (refused, confirmed) == ({}, [True] * 10)
    assert broker.flushes > 2


# -- windowed publishes (``send``): confirms collected later, in a ``ConfirmWindow`` -------------------------------


def test_a_windowed_message_is_kept_until_its_confirm_and_a_nack_becomes_a_refusal() -> None:
    answers: list[list[tuple[int, str]]] = [[], [(1, "ack"), (2, "nack")]]  # nothing at first, then both
    broker = FakeBroker(script=lambda tags: answers.pop(0) if answers else [])
    window = ConfirmWindow(10)
    publisher = ConfirmPublisher(broker, window)  # type: ignore[arg-type]

    publisher.send(batch(1)[0])
    assert window.outstanding == 1  # returned without its confirm
    publisher.send(batch(2)[1])

    assert window.outstanding == 0
    assert [r.message.message_id for r in window.take_refusals()] == ["m1"]


def test_windowed_messages_and_a_batch_share_the_channels_delivery_tags() -> None:
    broker = FakeBroker(script=lambda tags: [(tags[-1], "ack+")] if tags[-1] > 1 else [])
    window = ConfirmWindow(10)
    publisher = ConfirmPublisher(broker, window)  # type: ignore[arg-type]
    publisher.send(Publish("", "q", b"body", "single", 0))

    confirmed = [False] * 3
    refused = publisher.publish(batch(3), confirmed)

    assert (refused, confirmed) == ({}, [True] * 3)
    assert window.outstanding == 0  # the batch's multiple ack confirmed the windowed message (tag 1) too


def test_a_lost_connection_while_sending_leaves_every_message_in_the_window_in_order() -> None:
    broker = FakeBroker(script=lambda tags: [])
    window = ConfirmWindow(10)
    publisher = ConfirmPublisher(broker, window)  # type: ignore[arg-type]
    publisher.send(batch(1)[0])

    def lose(*waiters: Callable[[], bool]) -> None:
        raise Lost

    broker._flush_output = lose  # type: ignore[method-assign]
    with pytest.raises(Lost):
        publisher.send(batch(2)[1])

    assert not publisher.is_open
    assert [m.message_id for m in window.take_orphans()] == ["m0", "m1"]  # published again on the next channel
