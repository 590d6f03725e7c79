"""Specification of ``taskfleet.brokers.rabbitmq._frames``: the bytes of a ``basic.publish`` are exactly pika's."""

from __future__ import annotations

import pika
import pytest
from pika import frame, spec

from taskfleet.brokers.rabbitmq import _frames as frames

FRAME_MAX = 131072


def pika_publish(channel: int, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties,
                 *, frame_max: int = FRAME_MAX) -> bytes:
    """What pika writes for ``basic_publish(..., mandatory=True)``."""
    out = frame.Method(channel, spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True))
    data = out.marshal() + frame.Header(channel, len(body), props).marshal()
    size = frame_max - frames.FRAME_OVERHEAD
    for start in range(0, len(body), size):
        data += frame.Body(channel, body[start:start + size]).marshal()
    return data


@pytest.mark.parametrize(("body", "priority", "message_id"), [
    (b"application/json\n{}", 0, "0123456789abcdef0123456789abcdef"),
    (b"x", 9, "m1"),
    (b"", 3, "empty-body"),
    (b"y" * (FRAME_MAX - frames.FRAME_OVERHEAD), 0, "exactly one frame"),
    (b"z" * (FRAME_MAX - frames.FRAME_OVERHEAD + 1), 5, "one byte into a second frame"),
    (b"w" * 300_000, 1, "three frames"),
    (b"v", 0, "\u00e9" * 100),  # 200 bytes of UTF-8
])
def test_a_persistent_message_is_encoded_as_pika_encodes_it(body: bytes, priority: int, message_id: str) -> None:
    props = pika.BasicProperties(delivery_mode=2, priority=priority, message_id=message_id)
    method = frames.publish_method(7, "", "billing", mandatory=True)

    encoded = frames.persistent_message(method, 7, body, priority=priority, message_id=message_id.encode(),
                                        frame_max=FRAME_MAX)

    assert encoded == pika_publish(7, "", "billing", body, props)


@pytest.mark.parametrize(("delivery_mode", "priority", "message_id"), [
    (2, 4, "id"), (None, None, None), (1, None, "only-an-id"), (None, 0, None),
])
def test_a_content_header_with_any_of_the_hot_properties_is_encoded_as_pika_encodes_it(
    delivery_mode: int | None, priority: int | None, message_id: str | None
) -> None:
    props = pika.BasicProperties(delivery_mode=delivery_mode, priority=priority, message_id=message_id)

    encoded = frames.content_header(3, 42, delivery_mode=delivery_mode, priority=priority, message_id=message_id)

    assert encoded == frame.Header(3, 42, props).marshal()


def test_a_delayed_message_goes_to_the_ladder_exchange_with_its_routing_key() -> None:
    routing_key = "0." * 22 + "1.billing"
    props = pika.BasicProperties(delivery_mode=2, priority=0, message_id="later")
    method = frames.publish_method(1, "taskfleet.delay.22", routing_key, mandatory=True)

    encoded = frames.persistent_message(method, 1, b"x", priority=0, message_id=b"later", frame_max=FRAME_MAX)

    assert encoded == pika_publish(1, "taskfleet.delay.22", routing_key, b"x", props)


def test_pika_decodes_what_is_encoded_here() -> None:
    method = frames.publish_method(2, "ex", "rk", mandatory=True)
    data = frames.persistent_message(method, 2, b"body", priority=6, message_id=b"m-42", frame_max=FRAME_MAX)

    decoded = []
    while data:
        used, parsed = frame.decode_frame(data)
        decoded.append(parsed)
        data = data[used:]

    publish, header, body = decoded
    assert (publish.method.exchange, publish.method.routing_key, publish.method.mandatory) == ("ex", "rk", True)
    assert (header.properties.delivery_mode, header.properties.priority, header.properties.message_id) == (2, 6, "m-42")
    assert (header.body_size, body.fragment) == (4, b"body")


def test_a_short_string_longer_than_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        frames.publish_method(1, "", "q" * 256, mandatory=True)
