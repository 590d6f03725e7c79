"""Specification of finding deliveries in the bytes a dead worker child left unread in its RabbitMQ connection
(taskfleet.brokers.rabbitmq._unread): what its supervisor gives back uncounted. The bytes are made by pika's own
encoder, as RabbitMQ would send them."""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec

from taskfleet.brokers.base import Delivery
from taskfleet.brokers.rabbitmq import RabbitMQBroker
from taskfleet.brokers.rabbitmq._topology import delay_routing_key
from taskfleet.settings import BrokerSettings

CHANNEL = 2


def deliver(message_id: str | None, *, tag: int = 1, body: bytes = b'{"task": "t"}', exchange: str = "",
            routing_key: str = "emails", headers: dict[str, Any] | None = None, channel: int = CHANNEL) -> bytes:
    """The frames of one ``basic.deliver``: method, content header, body."""
    method = pika.frame.Method(channel, pika.spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=tag,
                                                               exchange=exchange, routing_key=routing_key))
    props = pika.spec.BasicProperties(message_id=message_id, headers=headers, delivery_mode=2)
    header = pika.frame.Header(channel, len(body), props)
    return method.marshal() + header.marshal() + pika.frame.Body(channel, body).marshal()


def found(data: bytes) -> list[Delivery]:
    broker = RabbitMQBroker(BrokerSettings(url="amqp://guest:guest@127.0.0.1:5672/"))
    return broker.unread_deliveries(data)


def test_each_whole_delivery_is_found_in_order_with_its_queue_id_and_count() -> None:
    data = (deliver("a", tag=7) + deliver("b", tag=8, headers={"x-taskfleet-lost": 2})
            + pika.frame.Heartbeat().marshal())

    assert found(data) == [Delivery("emails", "a", b"", 1), Delivery("emails", "b", b"", 3)]


def test_a_delayed_message_names_its_queue_after_the_delay_bits() -> None:
    data = deliver("a", exchange="taskfleet.delay.deliver", routing_key=delay_routing_key(5, "reports.daily"))

    assert [d.queue for d in found(data)] == ["reports.daily"]


def test_bytes_that_begin_inside_a_frame_still_yield_the_deliveries_after_it() -> None:
    # The child had read part of the first delivery (its method frame and some of the header) before it died
    first, second = deliver("a"), deliver("b")

    assert [d.message_id for d in found(first[20:] + second)] == ["b"]


def test_a_delivery_cut_off_before_its_header_is_whole_is_not_found() -> None:
    whole, cut = deliver("a"), deliver("b")
    method_bytes = len(pika.frame.Method(CHANNEL, pika.spec.Basic.Deliver(
        consumer_tag="ctag", delivery_tag=1, exchange="", routing_key="emails")).marshal())

    assert [d.message_id for d in found(whole + cut[:method_bytes + 5])] == ["a"]
    assert [d.message_id for d in found(whole + cut[:method_bytes])] == ["a"]


def test_a_delivery_without_a_message_id_and_bodies_that_look_like_frames_are_left_out() -> None:
    lookalike = deliver("a")  # a body holding a whole delivery's bytes is a body, not a delivery
    data = deliver(None) + deliver("b", body=lookalike) + deliver("c")

    assert [d.message_id for d in found(data)] == ["b", "c"]


def test_garbage_and_ciphertext_yield_nothing() -> None:
    assert found(b"") == []
    assert found(bytes(range(256)) * 64) == []
