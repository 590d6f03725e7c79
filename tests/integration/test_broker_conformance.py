"""Specification of the ``Broker`` contract, run against every broker (``broker_kind``) on a real private server.

Written once against the interface. Where a broker cannot honour part of the contract, the test says so through
the kind's capabilities (skipped with the reason); where the behaviour exists in another form, that form is tested.
Counts are asserted with ``kind.expect_depth``, which waits out brokers whose counts lag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from taskfleet.brokers import connect
from taskfleet.brokers.base import Broker, Delivery, Outgoing
from taskfleet.errors import BrokerConnectionError
from taskfleet.settings import BrokerSettings, PublishRetry
from tests.conftest import MakeBroker
from tests.support.brokers import CONFORMANCE_KIND_NAMES, BrokerKind, Capability

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("broker_kind", CONFORMANCE_KIND_NAMES, indirect=True)]

FAST_RETRY = PublishRetry(max_attempts=3, backoff_s=0.01, backoff_max_s=0.02)


@pytest.fixture
def broker(make_broker: MakeBroker) -> Broker:
    return make_broker()


def fetch_exactly(broker: Broker, count: int, queues: Sequence[str] = ("q",), timeout_s: float = 3.0) -> list[Delivery]:
    """``count`` deliveries from ``queues``, gathered over as many fetches as needed (a broker that pushes messages
    to its consumer returns what has arrived so far)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"expected {count} messages from {list(queues)} within {timeout_s}s, got {got}"
        got += broker.fetch(list(queues), max_messages=count, timeout_s=remaining)
    assert len(got) == count, f"fetched more than the {count} asked for: {got}"
    return got


def fetch_one(broker: Broker, queue: str = "q", timeout_s: float = 3.0) -> Delivery:
    [delivery] = fetch_exactly(broker, 1, [queue], timeout_s)
    return delivery


def lose_to_another_consumer(first: Broker, second: Broker, broker_kind: BrokerKind) -> tuple[Delivery, Delivery]:
    """One message fetched by ``first``, lost to it the broker's way, then fetched by ``second``: returns
    ``(stale, current)``, the two deliveries of it."""
    first.enqueue("q", "m1", b"x")
    stale = fetch_one(first)
    broker_kind.lose_deliveries(first)
    return stale, fetch_one(second, timeout_s=5.0)


def ids(deliveries: Sequence[Delivery]) -> list[str]:
    return [d.message_id for d in deliveries]


# -- round trip and waiting --------------------------------------------------------------------------------------


def test_an_enqueued_message_is_fetched_and_then_deleted_by_ack(broker: Broker, broker_kind: BrokerKind) -> None:
    broker.enqueue("q", "m1", b"payload")

    delivery = fetch_one(broker)
    broker.ack([delivery])

    assert delivery == Delivery(queue="q", message_id="m1", data=b"payload", delivery_count=1)
    assert not delivery.redelivered
    broker_kind.expect_depth(broker, "q", ready=0, in_flight=0, dead=0)
    assert broker.fetch(["q"], max_messages=1, timeout_s=0.3) == []


def test_fetch_returns_nothing_once_its_timeout_has_passed(broker: Broker) -> None:
    broker.ping()  # connected: the timeout is measured, not the connection set-up
    started = time.monotonic()

    deliveries = broker.fetch(["q"], max_messages=10, timeout_s=0.3)

    elapsed = time.monotonic() - started
    assert deliveries == []
    assert 0.3 <= elapsed < 0.6


def test_an_enqueue_wakes_a_blocked_fetch_at_once(make_broker: MakeBroker) -> None:
    consumer, producer = make_broker(), make_broker()
    producer.ping()
    enqueued_at: list[float] = []

    def produce() -> None:
        time.sleep(0.5)  # let the consumer block first
        enqueued_at.append(time.monotonic())
        producer.enqueue("q", "m1", b"x")

    thread = threading.Thread(target=produce)
    thread.start()
    deliveries = consumer.fetch(["q"], max_messages=1, timeout_s=5.0)
    woke_at = time.monotonic()
    thread.join()

    assert ids(deliveries) == ["m1"]
    assert woke_at - enqueued_at[0] < 0.1


# -- priorities and delays ---------------------------------------------------------------------------------------


def test_higher_priorities_are_fetched_first_and_equal_priorities_in_order(broker: Broker) -> None:
    for message_id, priority in [("low1", 0), ("high1", 9), ("mid", 5), ("low2", 0), ("high2", 9)]:
        broker.enqueue("q", message_id, b"x", priority=priority)

    deliveries = fetch_exactly(broker, 5)

    assert ids(deliveries) == ["high1", "high2", "mid", "low1", "low2"]


def test_a_priority_outside_0_to_9_is_refused(broker: Broker) -> None:
    with pytest.raises(ValueError, match="priority"):
        broker.enqueue("q", "m1", b"x", priority=10)


def test_a_delayed_message_is_not_fetched_before_it_is_due(broker: Broker) -> None:
    broker.enqueue("q", "later", b"x", delay_s=2.0)

    assert broker.fetch(["q"], max_messages=1, timeout_s=1.0) == []


def test_a_delayed_message_is_fetched_within_a_second_of_being_due(broker: Broker) -> None:
    broker.enqueue("q", "later", b"x", delay_s=1.0)
    started = time.monotonic()

    delivery = fetch_one(broker, timeout_s=5.0)

    assert delivery.message_id == "later"
    assert 0.95 <= time.monotonic() - started < 2.0


def test_a_short_delay_is_not_held_up_behind_a_longer_one_published_before_it(broker: Broker) -> None:
    broker.enqueue("q", "in-3s", b"x", delay_s=3.0)
    broker.enqueue("q", "in-1s", b"x", delay_s=1.0)
    started = time.monotonic()

    first = fetch_one(broker, timeout_s=5.0)
    first_at = time.monotonic() - started
    broker.ack([first])
    second = fetch_one(broker, timeout_s=5.0)
    second_at = time.monotonic() - started
    broker.ack([second])

    assert (first.message_id, second.message_id) == ("in-1s", "in-3s")
    assert 0.95 <= first_at < 2.0, f"the 1 s delay arrived after {first_at:.2f}s"
    assert 2.95 <= second_at < 4.0, f"the 3 s delay arrived after {second_at:.2f}s"


def test_a_due_delayed_message_does_not_jump_ahead_of_messages_ready_before_it(broker: Broker) -> None:
    broker.enqueue("q", "ready", b"x")
    broker.enqueue("q", "delayed", b"x", delay_s=0.2)
    time.sleep(0.6)

    deliveries = fetch_exactly(broker, 2)

    assert ids(deliveries) == ["ready", "delayed"]


def test_a_delayed_message_keeps_its_priority(broker: Broker) -> None:
    broker.enqueue("q", "low", b"x", delay_s=0.2, priority=0)
    broker.enqueue("q", "high", b"x", delay_s=0.2, priority=9)
    time.sleep(0.8)

    deliveries = fetch_exactly(broker, 2)

    assert ids(deliveries) == ["high", "low"]


# -- counting ----------------------------------------------------------------------------------------------------


def test_queue_depth_counts_ready_in_flight_and_dead_messages(make_broker: MakeBroker, broker_kind: BrokerKind) -> None:
    holder, rejecter = make_broker(), make_broker()
    for message_id in ["a", "b", "c", "d"]:
        holder.enqueue("q", message_id, b"x")
    fetch_one(holder)
    rejected = fetch_one(rejecter, timeout_s=5.0)

    rejecter.dead_letter(rejected, "bad input")
    rejecter.close()  # a consumer that stays may already be sent the next message (RabbitMQ refills its prefetch)

    broker_kind.expect_depth(holder, "q", ready=2, in_flight=1, dead=1)
    depth = holder.queue_depth("q")
    assert depth.in_flight_known
    assert depth.total == 3


def test_queue_depth_counts_delayed_messages(broker: Broker, broker_kind: BrokerKind) -> None:
    broker_kind.require(Capability.COUNT_DELAYED)
    broker.enqueue("q", "now", b"x")
    broker.enqueue("q", "later", b"x", delay_s=60)

    depth = broker.queue_depth("q")

    assert (depth.ready, depth.delayed, depth.due, depth.delayed_known) == (1, 1, 0, True)
    assert depth.total == 1, "work that is not due yet is not work to do now"


def test_a_due_delayed_message_is_work_to_do_before_any_fetch(broker: Broker, broker_kind: BrokerKind) -> None:
    # Given a delayed message whose time has come, and no consumer that fetched since
    broker.enqueue("q", "soon", b"x", delay_s=0.3)
    time.sleep(0.8)

    # Then queue_depth counts it as work to do now (what the operator wakes a queue at zero replicas on): ready where
    # a due message becomes ready by itself (SQLite by its due time, RabbitMQ by its delay ladder), else due
    if broker_kind.supports(Capability.READY_WHEN_DUE):
        broker_kind.expect_depth(broker, "q", ready=1, due=0, in_flight=0, total=1)
    else:
        broker_kind.expect_depth(broker, "q", ready=0, due=1, in_flight=0, total=1)
    if broker_kind.supports(Capability.COUNT_DELAYED):
        assert broker.queue_depth("q").delayed == 0, "a due message is no longer delayed"


def test_a_due_message_is_counted_once_until_a_fetch_takes_it(broker: Broker, broker_kind: BrokerKind) -> None:
    broker.enqueue("q", "ready", b"x")
    broker.enqueue("q", "soon", b"x", delay_s=0.3)
    broker.enqueue("q", "later", b"x", delay_s=60)
    time.sleep(0.8)
    broker_kind.expect_depth(broker, "q", total=2)

    deliveries = fetch_exactly(broker, 2)

    assert sorted(ids(deliveries)) == ["ready", "soon"]
    broker_kind.expect_depth(broker, "q", ready=0, due=0, in_flight=2, total=2)
    if broker_kind.supports(Capability.COUNT_DELAYED):
        assert broker.queue_depth("q").delayed == 1


def test_queue_depth_says_when_it_cannot_count_delayed_messages(broker: Broker, broker_kind: BrokerKind) -> None:
    broker.enqueue("q", "later", b"x", delay_s=60)

    depth = broker.queue_depth("q")

    assert depth.delayed_known is broker_kind.supports(Capability.COUNT_DELAYED)
    if not depth.delayed_known:
        assert depth.delayed == 0
    assert depth.due == 0, "due is never unknown: a broker that cannot count it makes due messages ready itself"


def test_queue_depth_of_a_queue_that_never_had_a_message_is_zero(broker: Broker) -> None:
    depth = broker.queue_depth("never-used")

    assert (depth.ready, depth.in_flight, depth.delayed, depth.due, depth.dead) == (0, 0, 0, 0, 0)


# -- redelivery --------------------------------------------------------------------------------------------------


def test_a_delivery_held_by_a_consumer_that_goes_away_is_delivered_again_and_counted(
    make_broker: MakeBroker,
) -> None:
    gone, survivor = make_broker(), make_broker()
    gone.enqueue("q", "m1", b"x")
    fetch_one(gone)

    gone.close()  # no ack: Redis waits for the lease to run out, RabbitMQ takes it back with the connection

    again = fetch_one(survivor, timeout_s=5.0)
    assert (again.message_id, again.data, again.delivery_count, again.redelivered) == ("m1", b"x", 2, True)


def test_a_delivery_whose_lease_runs_out_is_delivered_again_though_its_consumer_is_alive(
    make_broker: MakeBroker, broker_kind: BrokerKind
) -> None:
    broker_kind.require(Capability.LEASES)
    slow, other = make_broker(), make_broker()
    slow.enqueue("q", "m1", b"x")
    fetch_one(slow)  # and never extended

    again = fetch_one(other, timeout_s=3.0)

    assert (again.message_id, again.delivery_count) == ("m1", 2)


def test_a_delivery_its_consumer_keeps_extending_is_never_delivered_to_another(
    make_broker: MakeBroker, broker_kind: BrokerKind
) -> None:
    holder, other = make_broker(), make_broker()
    holder.enqueue("q", "m1", b"x")
    delivery = fetch_one(holder)

    until = time.monotonic() + 2.5  # more than twice the visibility timeout
    while time.monotonic() < until:
        holder.extend([delivery])
        assert other.fetch(["q"], max_messages=1, timeout_s=0.3) == []

    broker_kind.expect_depth(holder, "q", ready=0, in_flight=1)
    holder.ack([delivery])


def test_extend_returns_the_deliveries_it_still_holds_and_leaves_out_settled_ones(broker: Broker) -> None:
    broker.enqueue_many([Outgoing("q", message_id, b"x") for message_id in ("m1", "m2", "m3")])
    deliveries = fetch_exactly(broker, 3)
    broker.ack(deliveries[:1])

    assert broker.extend(deliveries) == deliveries[1:]
    assert broker.extend([]) == []
    broker.ack(deliveries[1:])
    assert broker.extend(deliveries) == []


def test_extend_leaves_out_a_delivery_lost_to_another_consumer_and_leaves_its_redelivery_alone(
    make_broker: MakeBroker, broker_kind: BrokerKind
) -> None:
    first, second = make_broker(), make_broker()
    stale, current = lose_to_another_consumer(first, second, broker_kind)

    assert first.extend([stale]) == []

    assert second.extend([current]) == [current]
    broker_kind.expect_depth(second, "q", ready=0, in_flight=1)
    second.ack([current])
    broker_kind.expect_depth(second, "q", ready=0, in_flight=0)


def test_a_released_message_is_delivered_again_without_counting_the_delivery(broker: Broker) -> None:
    broker.enqueue("q", "m1", b"x")
    taken = fetch_one(broker)

    broker.release([taken])

    again = fetch_one(broker)
    assert (again.message_id, again.delivery_count, again.redelivered) == ("m1", 1, False)


def test_a_released_message_is_fetched_before_the_others_of_its_priority(
    broker: Broker, broker_kind: BrokerKind
) -> None:
    broker_kind.require(Capability.RELEASE_TO_HEAD)
    broker.enqueue("q", "first", b"x")
    broker.enqueue("q", "second", b"x")
    taken = fetch_one(broker)

    broker.release([taken])

    again = fetch_one(broker)
    assert (again.message_id, again.delivery_count) == ("first", 1)


def test_a_nacked_message_is_ready_again_with_its_delivery_counted(broker: Broker) -> None:
    broker.enqueue("q", "m1", b"x")

    broker.nack([fetch_one(broker)])

    again = fetch_one(broker)
    assert (again.message_id, again.delivery_count, again.redelivered) == ("m1", 2, True)


def test_a_consumer_can_fetch_more_while_it_holds_earlier_deliveries(broker: Broker, broker_kind: BrokerKind) -> None:
    broker_kind.require(Capability.FETCH_WHILE_HOLDING)
    for message_id in ["a", "b", "c"]:
        broker.enqueue("q", message_id, b"x")
    held = fetch_exactly(broker, 2)

    more = fetch_exactly(broker, 1)

    assert ids(held + more) == ["a", "b", "c"]


# -- dead letters ------------------------------------------------------------------------------------------------


def test_a_message_delivered_max_deliveries_times_without_an_ack_is_dead_lettered(
    make_broker: MakeBroker, broker_kind: BrokerKind
) -> None:
    broker = make_broker(max_deliveries=2)
    broker.enqueue("q", "m1", b"poison")
    broker.nack([fetch_one(broker)])
    broker.nack([fetch_one(broker)])

    assert broker.fetch(["q"], max_messages=1, timeout_s=0.5) == []

    [dead] = broker.dead_letters("q")
    assert (dead.queue, dead.message_id, dead.data) == ("q", "m1", b"poison")
    assert dead.reason.startswith("delivered 2 times without an ack"), dead.reason
    broker_kind.expect_depth(broker, "q", ready=0, in_flight=0, dead=1)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 256, 100_000])
def test_a_message_dead_lettered_for_too_many_deliveries_keeps_its_exact_bytes(
    make_broker: MakeBroker, size: int
) -> None:
    broker = make_broker(max_deliveries=1)
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    broker.enqueue("q", "m1", data)
    broker.nack([fetch_one(broker)])

    assert broker.fetch(["q"], max_messages=1, timeout_s=0.5) == []

    [dead] = broker.dead_letters("q")
    assert dead.data == data


def test_dead_letter_keeps_the_exact_bytes_and_the_reason(broker: Broker, broker_kind: BrokerKind) -> None:
    data = bytes(range(256)) * 3 + b"\n\x00"
    broker.enqueue("q", "m1", data)
    before = time.time()

    broker.dead_letter(fetch_one(broker), "cannot decode")

    [dead] = broker.dead_letters("q")
    assert (dead.queue, dead.message_id, dead.reason, dead.data) == ("q", "m1", "cannot decode", data)
    assert before - 1 <= dead.dead_at <= time.time() + 1
    broker_kind.expect_depth(broker, "q", ready=0, in_flight=0, dead=1)


def test_dead_letters_lists_the_oldest_entries_up_to_the_limit_without_removing_them(broker: Broker) -> None:
    for message_id in ["a", "b", "c"]:
        broker.enqueue("q", message_id, b"x")
    for delivery in fetch_exactly(broker, 3):
        broker.dead_letter(delivery, "bad")

    assert [d.message_id for d in broker.dead_letters("q", limit=2)] == ["a", "b"]
    assert [d.message_id for d in broker.dead_letters("q")] == ["a", "b", "c"]
    assert broker.dead_letters("q", limit=0) == []


def test_dead_letter_after_the_delivery_was_lost_leaves_the_message_alone(
    make_broker: MakeBroker, broker_kind: BrokerKind
) -> None:
    first, second = make_broker(), make_broker()
    stale, current = lose_to_another_consumer(first, second, broker_kind)

    first.dead_letter(stale, "too late")

    assert first.dead_letters("q") == []
    broker_kind.expect_depth(second, "q", ready=0, in_flight=1, dead=0)
    second.ack([current])


def test_acking_a_delivery_that_was_lost_leaves_its_redelivery_alone(
    make_broker: MakeBroker, broker_kind: BrokerKind
) -> None:
    first, second = make_broker(), make_broker()
    stale, current = lose_to_another_consumer(first, second, broker_kind)

    first.ack([stale])

    broker_kind.expect_depth(second, "q", ready=0, in_flight=1)
    second.ack([current])
    broker_kind.expect_depth(second, "q", ready=0, in_flight=0)


# -- requeueing dead letters -------------------------------------------------------------------------------------


def dead_letter_each(make_broker: MakeBroker, messages: dict[str, bytes], reason: str = "bad") -> None:
    """Given: ``messages`` (id -> bytes) enqueued to "q", fetched and dead-lettered in this order by a worker's
    broker that is gone afterwards (on RabbitMQ its consumer would otherwise take what is requeued)."""
    worker = make_broker()
    order = {message_id: i for i, message_id in enumerate(messages)}
    worker.enqueue_many([Outgoing("q", message_id, data) for message_id, data in messages.items()])
    for delivery in sorted(fetch_exactly(worker, len(messages)), key=lambda d: order[d.message_id]):
        worker.dead_letter(delivery, reason)
    worker.close()


def test_requeue_dead_letters_makes_every_dead_letter_ready_again_oldest_first_with_its_bytes(
    make_broker: MakeBroker, broker: Broker, broker_kind: BrokerKind
) -> None:
    messages = {"a": bytes(range(256)), "b": b"", "c": b"\x00\n" * 1000}
    dead_letter_each(make_broker, messages)

    moved = broker.requeue_dead_letters("q")

    assert moved == 3
    broker_kind.expect_depth(broker, "q", ready=3, in_flight=0, dead=0)
    assert broker.dead_letters("q") == []
    got = fetch_exactly(broker, 3)
    assert [(d.message_id, d.data, d.delivery_count) for d in got] == [(i, data, 1) for i, data in messages.items()]


def test_a_requeued_dead_letter_starts_its_delivery_count_again(make_broker: MakeBroker) -> None:
    broker = make_broker(max_deliveries=2)
    broker.enqueue("q", "m1", b"x")
    broker.nack([fetch_one(broker)])
    broker.dead_letter(fetch_one(broker), "failed on its second delivery")

    broker.requeue_dead_letters("q")

    first = fetch_one(broker)
    assert (first.delivery_count, first.redelivered) == (1, False)
    broker.nack([first])
    assert fetch_one(broker).delivery_count == 2  # within max_deliveries again: not dead-lettered
    assert broker.dead_letters("q") == []


def test_requeue_dead_letters_with_message_ids_moves_only_those_and_leaves_the_others_in_order(
    make_broker: MakeBroker, broker: Broker, broker_kind: BrokerKind
) -> None:
    dead_letter_each(make_broker, {"a": b"1", "b": b"2", "c": b"3", "d": b"4"})

    moved = broker.requeue_dead_letters("q", message_ids=["d", "b", "not-a-dead-letter"])

    assert moved == 2
    assert [d.message_id for d in broker.dead_letters("q")] == ["a", "c"]
    assert [(d.message_id, d.data) for d in fetch_exactly(broker, 2)] == [("b", b"2"), ("d", b"4")]
    broker_kind.expect_depth(broker, "q", ready=0, in_flight=2, dead=2)


def test_requeue_dead_letters_of_a_long_list_keeps_the_order_of_what_it_moves_and_of_what_it_leaves(
    make_broker: MakeBroker, broker: Broker
) -> None:
    messages = {f"m{i:03}": f"payload {i}".encode() for i in range(250)}  # more than one read of 100 on Redis
    dead_letter_each(make_broker, messages)
    chosen = [message_id for i, message_id in enumerate(messages) if i % 3 == 1]

    moved = broker.requeue_dead_letters("q", message_ids=chosen)

    assert moved == len(chosen)
    assert [d.message_id for d in broker.dead_letters("q", limit=1000)] == [m for m in messages if m not in chosen]
    assert [(d.message_id, d.data) for d in fetch_exactly(broker, len(chosen))] == [(m, messages[m]) for m in chosen]


def test_requeue_dead_letters_with_an_empty_selection_moves_nothing(make_broker: MakeBroker, broker: Broker) -> None:
    dead_letter_each(make_broker, {"a": b"1"})

    assert broker.requeue_dead_letters("q", message_ids=[]) == 0

    assert [d.message_id for d in broker.dead_letters("q")] == ["a"]


def test_requeue_dead_letters_of_a_queue_that_never_had_a_message_moves_nothing(broker: Broker) -> None:
    assert broker.requeue_dead_letters("never-used") == 0
    assert broker.requeue_dead_letters("never-used", message_ids=["a"]) == 0
    assert broker.dead_letters("never-used") == []


def test_requeue_dead_letters_of_a_queue_without_dead_letters_leaves_its_messages_alone(
    broker: Broker, broker_kind: BrokerKind
) -> None:
    broker.enqueue("q", "m1", b"x")

    assert broker.requeue_dead_letters("q") == 0

    broker_kind.expect_depth(broker, "q", ready=1, in_flight=0, dead=0)
    assert (fetch_one(broker).message_id, broker.dead_letters("q")) == ("m1", [])


def test_a_requeued_dead_letter_comes_back_at_priority_0_behind_the_messages_ready_before_it(
    make_broker: MakeBroker,
) -> None:
    failed = make_broker()
    failed.enqueue("q", "urgent", b"x", priority=9)
    failed.dead_letter(fetch_one(failed), "bad")
    failed.close()  # its consumer would take the next message (RabbitMQ pushes to consumers)
    broker = make_broker()
    broker.enqueue("q", "earlier", b"x", priority=0)

    broker.requeue_dead_letters("q")
    broker.enqueue("q", "later", b"x", priority=1)

    assert ids(fetch_exactly(broker, 3)) == ["later", "earlier", "urgent"]


def test_a_requeued_dead_letter_whose_id_was_enqueued_again_replaces_that_message(
    make_broker: MakeBroker, broker: Broker, broker_kind: BrokerKind
) -> None:
    broker_kind.require(Capability.REPLACE_BY_ID)
    dead_letter_each(make_broker, {"m1": b"old"})
    broker.enqueue("q", "m1", b"new")

    assert broker.requeue_dead_letters("q") == 1

    broker_kind.expect_depth(broker, "q", ready=1, in_flight=0, dead=0)
    assert (fetch_one(broker).data, broker.fetch(["q"], max_messages=1, timeout_s=0.3)) == (b"old", [])


def test_a_requeued_message_that_fails_again_is_dead_lettered_again(
    make_broker: MakeBroker, broker: Broker, broker_kind: BrokerKind
) -> None:
    dead_letter_each(make_broker, {"m1": b"poison"}, reason="first failure")
    broker.requeue_dead_letters("q")

    broker.dead_letter(fetch_one(broker), "second failure")

    assert [(d.message_id, d.reason, d.data) for d in broker.dead_letters("q")] == [("m1", "second failure", b"poison")]
    broker_kind.expect_depth(broker, "q", ready=0, in_flight=0, dead=1)


# -- purge, batches, queues --------------------------------------------------------------------------------------


def test_purge_deletes_ready_messages_but_not_in_flight_ones(broker: Broker, broker_kind: BrokerKind) -> None:
    for message_id in ["a", "b", "c"]:
        broker.enqueue("q", message_id, b"x")
    in_flight = fetch_one(broker)

    assert broker.purge("q") == 2

    broker_kind.expect_depth(broker, "q", ready=0, in_flight=1)
    broker.nack([in_flight])
    assert ids(fetch_exactly(broker, 1)) == ["a"]
    assert broker.fetch(["q"], max_messages=10, timeout_s=0.3) == []


def test_purge_deletes_delayed_messages_too(broker: Broker, broker_kind: BrokerKind) -> None:
    broker_kind.require(Capability.PURGE_DELAYED)
    broker.enqueue("q", "now", b"x")
    broker.enqueue("q", "later", b"x", delay_s=0.5)

    assert broker.purge("q") == 2

    assert broker.fetch(["q"], max_messages=10, timeout_s=1.5) == []


def test_purge_of_a_queue_that_never_had_a_message_deletes_nothing(broker: Broker) -> None:
    assert broker.purge("never-used") == 0


def test_re_enqueueing_the_same_id_replaces_the_message_instead_of_duplicating_it(
    broker: Broker, broker_kind: BrokerKind
) -> None:
    broker_kind.require(Capability.REPLACE_BY_ID)
    broker.enqueue("q", "m1", b"old")
    broker.enqueue("q", "m1", b"new")

    deliveries = fetch_exactly(broker, 1)

    assert [(d.message_id, d.data) for d in deliveries] == [("m1", b"new")]
    assert broker.fetch(["q"], max_messages=10, timeout_s=0.3) == []


def test_enqueue_many_stores_every_message_of_the_batch(broker: Broker, broker_kind: BrokerKind) -> None:
    batch = [Outgoing(queue="q", message_id=f"m{i}", data=b"x", priority=i % 10) for i in range(50)]
    batch.append(Outgoing(queue="other", message_id="later", data=b"x", delay_s=0.5))

    broker.enqueue_many(batch)

    broker_kind.expect_depth(broker, "q", ready=50)
    assert ids(fetch_exactly(broker, 1, ["other"])) == ["later"]


def test_enqueue_many_of_nothing_does_nothing(broker: Broker) -> None:
    broker.enqueue_many([])

    assert broker.queues() == []


def test_several_queues_are_served_fairly(broker: Broker) -> None:
    for i in range(10):
        broker.enqueue("a", f"a{i}", b"x")
        broker.enqueue("b", f"b{i}", b"x")

    batch = fetch_exactly(broker, 4, ["a", "b"])
    broker.ack(batch)
    # A broker that pushes to its consumers (RabbitMQ) refills their prefetch after the ack; what it pushed is held
    # and served before anything else (a quorum queue may push to a consumer after it is cancelled: still held).
    time.sleep(0.5)
    singles = []
    for _ in range(4):
        [delivery] = fetch_exactly(broker, 1, ["a", "b"])
        broker.ack([delivery])
        singles.append(delivery)

    served = {"batch of 4": ids(batch), "4 single fetches": ids(singles)}
    assert sorted(d.queue for d in batch) == ["a", "a", "b", "b"], served
    assert sorted(d.queue for d in singles) == ["a", "a", "b", "b"], served
    assert all(d.message_id.startswith(d.queue) for d in batch + singles), "each delivery names its own queue"


def test_queues_lists_every_queue_that_received_a_message(broker: Broker) -> None:
    broker.enqueue("emails", "m1", b"x")
    broker.enqueue("reports", "m2", b"x", delay_s=60)

    assert broker.queues() == ["emails", "reports"]


# -- the server goes away ------------------------------------------------------------------------------------------


def test_enqueue_to_an_unreachable_server_raises_after_the_retries_without_the_password(
    broker_kind: BrokerKind,
) -> None:
    broker_kind.require(Capability.UNREACHABLE)
    url = broker_kind.unreachable_url("s3cret-pw")
    broker = connect(BrokerSettings(url=url, publish_retry=FAST_RETRY, socket_timeout_s=1))
    started = time.monotonic()

    with pytest.raises(BrokerConnectionError) as raised:
        broker.enqueue("q", "m1", b"x")

    assert "after 3 attempts" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    assert time.monotonic() - started < 2.0
    broker.close()


def test_a_calls_own_retry_policy_replaces_the_brokers_for_that_publish(broker_kind: BrokerKind) -> None:
    broker_kind.require(Capability.UNREACHABLE)
    broker = connect(BrokerSettings(url=broker_kind.unreachable_url("pw"), publish_retry=FAST_RETRY,
                                    socket_timeout_s=1))

    with pytest.raises(BrokerConnectionError, match="after 1 attempts"):
        broker.enqueue("q", "m1", b"x", retry=PublishRetry(max_attempts=1))
    with pytest.raises(BrokerConnectionError, match="after 2 attempts"):
        broker.enqueue_many([Outgoing("q", "m2", b"x")], retry=PublishRetry(max_attempts=2, backoff_s=0.01))
    broker.close()


def test_when_the_server_dies_a_blocked_fetch_and_later_calls_raise_broker_connection_error_promptly(
    broker: Broker, broker_kind: BrokerKind
) -> None:
    broker_kind.require(Capability.SERVER)
    broker.ping()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            broker.fetch(["q"], max_messages=1, timeout_s=10.0)
        except BrokerConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)
    broker_kind.kill()
    thread.join(timeout=2.0)
    died_at = time.monotonic()

    assert not thread.is_alive(), "a fetch blocked when the server died still blocks 2 s later"
    assert len(errors) == 1
    with pytest.raises(BrokerConnectionError):
        broker.fetch(["q"], max_messages=1, timeout_s=5.0)
    with pytest.raises(BrokerConnectionError):
        broker.ping()
    with pytest.raises(BrokerConnectionError):
        broker.queue_depth("q")
    assert time.monotonic() - died_at < 1.0
    # Reconnecting after the server comes back: test_broker_restart.py.
