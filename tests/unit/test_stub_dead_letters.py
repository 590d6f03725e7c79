"""Specification of ``requeue_dead_letters`` on the stub broker (``memory://``), which unit tests of its callers (the
CLI) rely on to behave like the real brokers (tests/integration/test_broker_conformance.py)."""

from __future__ import annotations

import pytest

from taskfleet.brokers import connect
from taskfleet.brokers.base import Broker, Delivery
from taskfleet.settings import BrokerSettings


@pytest.fixture
def broker() -> Broker:
    return connect(BrokerSettings(url="memory://", max_deliveries=2))


def fetch(broker: Broker, count: int) -> list[Delivery]:
    got = broker.fetch(["q"], max_messages=count, timeout_s=0)
    assert len(got) == count, got
    return got


def dead_letter_each(broker: Broker, *message_ids: str, reason: str = "bad") -> None:
    """Given: ``message_ids`` enqueued to "q" (their bytes are their ids), fetched and dead-lettered, in order."""
    for message_id in message_ids:
        broker.enqueue("q", message_id, message_id.encode())
    for delivery in fetch(broker, len(message_ids)):
        broker.dead_letter(delivery, reason)


def test_requeue_dead_letters_makes_every_dead_letter_ready_again_oldest_first_with_its_bytes(broker: Broker) -> None:
    dead_letter_each(broker, "a", "b", "c")

    assert broker.requeue_dead_letters("q") == 3

    depth = broker.queue_depth("q")
    assert (depth.ready, depth.dead) == (3, 0)
    assert [(d.message_id, d.data, d.delivery_count) for d in fetch(broker, 3)] == [
        ("a", b"a", 1), ("b", b"b", 1), ("c", b"c", 1),
    ]


def test_a_requeued_dead_letter_starts_its_delivery_count_again(broker: Broker) -> None:
    broker.enqueue("q", "m1", b"x")
    broker.nack(fetch(broker, 1))
    broker.dead_letter(fetch(broker, 1)[0], "failed on its second delivery")

    broker.requeue_dead_letters("q")

    [first] = fetch(broker, 1)
    assert first.delivery_count == 1
    broker.nack([first])
    assert fetch(broker, 1)[0].delivery_count == 2  # within max_deliveries=2 again: not dead-lettered


def test_requeue_dead_letters_with_message_ids_moves_only_those_and_leaves_the_others_in_order(
    broker: Broker,
) -> None:
    dead_letter_each(broker, "a", "b", "c", "d")

    assert broker.requeue_dead_letters("q", message_ids=["d", "b", "not-a-dead-letter"]) == 2

    assert [d.message_id for d in broker.dead_letters("q")] == ["a", "c"]
    assert [d.message_id for d in fetch(broker, 2)] == ["b", "d"]


@pytest.mark.parametrize("message_ids", [None, [], ["a"]])
def test_requeue_dead_letters_of_a_queue_without_dead_letters_moves_nothing(
    broker: Broker, message_ids: list[str] | None
) -> None:
    broker.enqueue("q", "m1", b"x")

    assert broker.requeue_dead_letters("q", message_ids=message_ids) == 0
    assert broker.requeue_dead_letters("never-used", message_ids=message_ids) == 0

    assert [d.message_id for d in fetch(broker, 1)] == ["m1"]


def test_a_requeued_dead_letter_comes_back_at_priority_0_behind_the_messages_ready_before_it(broker: Broker) -> None:
    broker.enqueue("q", "urgent", b"x", priority=9)
    broker.dead_letter(fetch(broker, 1)[0], "bad")
    broker.enqueue("q", "earlier", b"x", priority=0)

    broker.requeue_dead_letters("q")
    broker.enqueue("q", "later", b"x", priority=1)

    assert [d.message_id for d in fetch(broker, 3)] == ["later", "earlier", "urgent"]


def test_a_requeued_message_that_fails_again_is_dead_lettered_again(broker: Broker) -> None:
    dead_letter_each(broker, "m1", reason="first failure")
    broker.requeue_dead_letters("q")

    broker.dead_letter(fetch(broker, 1)[0], "second failure")

    assert [(d.message_id, d.reason) for d in broker.dead_letters("q")] == [("m1", "second failure")]
