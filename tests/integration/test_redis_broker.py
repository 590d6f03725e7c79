"""Specification of the Redis broker against a real, private redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from taskfleet.brokers.base import Delivery, Outgoing, QueueDepth
from taskfleet.brokers.redis import RedisBroker
from taskfleet.errors import BrokerConnectionError
from taskfleet.settings import BrokerSettings, PublishRetry
from tests.support.servers import RedisServer, free_port

pytestmark = pytest.mark.integration

MakeBroker = Callable[..., RedisBroker]
FAST_RETRY = PublishRetry(max_attempts=3, backoff_s=0.01, backoff_max_s=0.02)


@pytest.fixture
def make_broker(redis_url: str) -> Iterator[MakeBroker]:
    """Factory of brokers on the test's clean server; keyword arguments override ``BrokerSettings``."""
    brokers: list[RedisBroker] = []

    def make(**overrides: Any) -> RedisBroker:
        broker = RedisBroker(BrokerSettings(**{"url": redis_url, **overrides}))
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(make_broker: MakeBroker) -> RedisBroker:
    return make_broker()


def fetch_one(broker: RedisBroker, queue: str = "q", timeout_s: float = 2.0) -> Delivery:
    deliveries = broker.fetch([queue], max_messages=1, timeout_s=timeout_s)
    assert len(deliveries) == 1, f"expected one message from {queue!r} within {timeout_s}s"
    return deliveries[0]


def test_an_enqueued_message_is_fetched_and_then_deleted_by_ack(broker: RedisBroker) -> None:
    broker.enqueue("q", "m1", b"payload")

    delivery = fetch_one(broker)
    broker.ack([delivery])

    assert delivery == Delivery(queue="q", message_id="m1", data=b"payload", delivery_count=1)
    assert broker.queue_depth("q") == QueueDepth(ready=0, in_flight=0)


def test_fetch_returns_nothing_once_its_timeout_has_passed(broker: RedisBroker) -> None:
    started = time.monotonic()

    deliveries = broker.fetch(["q"], max_messages=10, timeout_s=0.3)

    elapsed = time.monotonic() - started
    assert deliveries == []
    assert 0.3 <= elapsed < 0.6


def test_an_enqueue_wakes_a_blocked_fetch_at_once(make_broker: MakeBroker) -> None:
    consumer, producer = make_broker(), make_broker()
    enqueued_at: list[float] = []

    def produce() -> None:
        time.sleep(0.3)  # let the consumer block first
        enqueued_at.append(time.monotonic())
        producer.enqueue("q", "m1", b"x")

    thread = threading.Thread(target=produce)
    thread.start()
    deliveries = consumer.fetch(["q"], max_messages=1, timeout_s=5.0)
    woke_at = time.monotonic()
    thread.join()

    assert [d.message_id for d in deliveries] == ["m1"]
    assert woke_at - enqueued_at[0] < 0.1


def test_higher_priorities_are_fetched_first_and_equal_priorities_in_order(broker: RedisBroker) -> None:
    for message_id, priority in [("low1", 0), ("high1", 9), ("mid", 5), ("low2", 0), ("high2", 9)]:
        broker.enqueue("q", message_id, b"x", priority=priority)

    deliveries = broker.fetch(["q"], max_messages=10, timeout_s=0)

    assert [d.message_id for d in deliveries] == ["high1", "high2", "mid", "low1", "low2"]


def test_a_delayed_message_is_not_fetched_before_it_is_due(broker: RedisBroker) -> None:
    broker.enqueue("q", "later", b"x", delay_s=2.0)

    assert broker.fetch(["q"], max_messages=1, timeout_s=1.0) == []


def test_a_delayed_message_is_fetched_within_a_second_of_being_due(broker: RedisBroker) -> None:
    broker.enqueue("q", "later", b"x", delay_s=1.0)
    started = time.monotonic()

    delivery = fetch_one(broker, timeout_s=5.0)

    assert delivery.message_id == "later"
    assert 0.95 <= time.monotonic() - started < 2.0


def test_a_due_delayed_message_queues_behind_the_messages_already_ready_of_its_priority(
    broker: RedisBroker,
) -> None:
    broker.enqueue("q", "delayed", b"x", delay_s=0.2)
    time.sleep(0.3)
    broker.enqueue("q", "ready", b"x")

    deliveries = broker.fetch(["q"], max_messages=10, timeout_s=0)

    assert [d.message_id for d in deliveries] == ["ready", "delayed"]


def test_queue_depth_counts_ready_in_flight_delayed_and_dead_messages(broker: RedisBroker) -> None:
    for message_id in ["a", "b", "c", "d"]:
        broker.enqueue("q", message_id, b"x")
    broker.enqueue("q", "later", b"x", delay_s=60)
    _, second = broker.fetch(["q"], max_messages=2, timeout_s=0)

    broker.dead_letter(second, "bad input")

    assert broker.queue_depth("q") == QueueDepth(ready=2, in_flight=1, delayed=1, dead=1)


def test_a_message_whose_lease_expires_is_delivered_again(make_broker: MakeBroker) -> None:
    broker = make_broker(visibility_timeout_s=1)
    broker.enqueue("q", "m1", b"x")
    fetch_one(broker)  # the worker that took it dies: no ack, no extend

    again = fetch_one(broker, timeout_s=3.0)

    assert (again.message_id, again.delivery_count, again.redelivered) == ("m1", 2, True)


def test_extend_keeps_a_message_from_being_delivered_again(make_broker: MakeBroker) -> None:
    broker = make_broker(visibility_timeout_s=1)
    broker.enqueue("q", "m1", b"x")
    delivery = fetch_one(broker)

    until = time.monotonic() + 2.5
    while time.monotonic() < until:
        broker.extend([delivery])
        assert broker.fetch(["q"], max_messages=1, timeout_s=0.3) == []

    assert broker.queue_depth("q").in_flight == 1


def test_a_released_message_is_fetched_first_and_its_delivery_is_not_counted(broker: RedisBroker) -> None:
    broker.enqueue("q", "first", b"x")
    broker.enqueue("q", "second", b"x")
    taken = fetch_one(broker)

    broker.release([taken])

    again = fetch_one(broker)
    assert (again.message_id, again.delivery_count) == ("first", 1)


def test_a_nacked_message_is_ready_again_with_its_delivery_counted(broker: RedisBroker) -> None:
    broker.enqueue("q", "m1", b"x")

    broker.nack([fetch_one(broker)])

    again = fetch_one(broker, timeout_s=0)
    assert (again.message_id, again.delivery_count) == ("m1", 2)


def test_a_message_delivered_max_deliveries_times_without_an_ack_is_dead_lettered(make_broker: MakeBroker) -> None:
    broker = make_broker(max_deliveries=2)
    broker.enqueue("q", "m1", b"poison")
    broker.nack([fetch_one(broker)])
    broker.nack([fetch_one(broker)])

    assert broker.fetch(["q"], max_messages=1, timeout_s=0.2) == []

    [dead] = broker.dead_letters("q")
    assert (dead.message_id, dead.data) == ("m1", b"poison")
    assert dead.reason == "delivered 2 times without an ack (its worker died each time)"
    assert broker.queue_depth("q") == QueueDepth(ready=0, in_flight=0, dead=1)


def test_dead_letter_keeps_the_exact_bytes_and_the_reason(broker: RedisBroker) -> None:
    data = bytes(range(256)) * 3 + b"\n\x00"
    broker.enqueue("q", "m1", data)
    before = time.time()

    broker.dead_letter(fetch_one(broker), "cannot decode")

    [dead] = broker.dead_letters("q")
    assert (dead.queue, dead.message_id, dead.reason, dead.data) == ("q", "m1", "cannot decode", data)
    assert before - 1 <= dead.dead_at <= time.time() + 1
    assert broker.queue_depth("q") == QueueDepth(ready=0, in_flight=0, dead=1)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 256, 100_000])
def test_a_message_dead_lettered_for_too_many_deliveries_keeps_its_exact_bytes(
    make_broker: MakeBroker, size: int
) -> None:
    broker = make_broker(max_deliveries=1)
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    broker.enqueue("q", "m1", data)
    broker.nack([fetch_one(broker)])

    assert broker.fetch(["q"], max_messages=1, timeout_s=0) == []

    [dead] = broker.dead_letters("q")
    assert dead.data == data


def test_dead_letter_after_the_lease_was_lost_leaves_the_message_alone(make_broker: MakeBroker) -> None:
    broker = make_broker(visibility_timeout_s=1)
    broker.enqueue("q", "m1", b"x")
    stale = fetch_one(broker)
    fetch_one(broker, timeout_s=3.0)  # the lease expired and another worker got it

    broker.dead_letter(stale, "too late")

    assert broker.dead_letters("q") == []
    assert broker.queue_depth("q").in_flight == 1


def test_dead_letters_lists_the_oldest_entries_up_to_the_limit(broker: RedisBroker) -> None:
    for message_id in ["a", "b", "c"]:
        broker.enqueue("q", message_id, b"x")
    for delivery in broker.fetch(["q"], max_messages=3, timeout_s=0):
        broker.dead_letter(delivery, "bad")

    assert [d.message_id for d in broker.dead_letters("q", limit=2)] == ["a", "b"]


def test_acking_a_message_whose_lease_was_lost_leaves_its_redelivery_alone(make_broker: MakeBroker) -> None:
    broker = make_broker(visibility_timeout_s=1)
    broker.enqueue("q", "m1", b"x")
    stale = fetch_one(broker)
    current = fetch_one(broker, timeout_s=3.0)  # the lease expired and another worker got it

    broker.ack([stale])

    assert broker.queue_depth("q").in_flight == 1
    broker.ack([current])
    assert broker.queue_depth("q") == QueueDepth(ready=0, in_flight=0)


def test_purge_deletes_ready_and_delayed_messages_but_not_in_flight_ones(broker: RedisBroker) -> None:
    for message_id in ["a", "b", "c"]:
        broker.enqueue("q", message_id, b"x")
    broker.enqueue("q", "later", b"x", delay_s=60)
    in_flight = fetch_one(broker)

    assert broker.purge("q") == 3

    assert broker.queue_depth("q") == QueueDepth(ready=0, in_flight=1, delayed=0)
    broker.nack([in_flight])
    assert [d.message_id for d in broker.fetch(["q"], max_messages=10, timeout_s=0)] == ["a"]


def test_purge_of_a_queue_with_nothing_in_flight_leaves_it_empty(broker: RedisBroker) -> None:
    for message_id in ["a", "b"]:
        broker.enqueue("q", message_id, b"x")
    broker.enqueue("q", "later", b"x", delay_s=60)

    assert broker.purge("q") == 3

    assert broker.queue_depth("q") == QueueDepth(ready=0, in_flight=0, delayed=0)
    assert broker.fetch(["q"], max_messages=10, timeout_s=0) == []


def test_re_enqueueing_the_same_id_replaces_the_message_instead_of_duplicating_it(broker: RedisBroker) -> None:
    broker.enqueue("q", "m1", b"old")
    broker.enqueue("q", "m1", b"new")

    deliveries = broker.fetch(["q"], max_messages=10, timeout_s=0)

    assert [(d.message_id, d.data) for d in deliveries] == [("m1", b"new")]


def test_enqueue_many_stores_every_message_of_the_batch(broker: RedisBroker) -> None:
    batch = [Outgoing(queue="q", message_id=f"m{i}", data=b"x", priority=i % 10) for i in range(50)]
    batch.append(Outgoing(queue="other", message_id="later", data=b"x", delay_s=60))

    broker.enqueue_many(batch)

    assert broker.queue_depth("q").ready == 50
    assert broker.queue_depth("other").delayed == 1


def test_several_queues_are_served_fairly(broker: RedisBroker) -> None:
    for i in range(10):
        broker.enqueue("a", f"a{i}", b"x")
        broker.enqueue("b", f"b{i}", b"x")

    batch = broker.fetch(["a", "b"], max_messages=4, timeout_s=0)
    singles = [fetch_one_of(broker, ["a", "b"]).queue for _ in range(4)]

    assert sorted(d.queue for d in batch) == ["a", "a", "b", "b"]
    assert sorted(singles) == ["a", "a", "b", "b"]


def fetch_one_of(broker: RedisBroker, queues: list[str]) -> Delivery:
    [delivery] = broker.fetch(queues, max_messages=1, timeout_s=0)
    return delivery


def test_queues_lists_every_queue_that_received_a_message(broker: RedisBroker) -> None:
    broker.enqueue("emails", "m1", b"x")
    broker.enqueue("reports", "m2", b"x", delay_s=60)

    assert broker.queues() == ["emails", "reports"]


def test_enqueue_to_an_unreachable_server_raises_after_the_retries_without_the_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    broker = RedisBroker(BrokerSettings(url=url, publish_retry=FAST_RETRY, socket_timeout_s=1))
    started = time.monotonic()

    with pytest.raises(BrokerConnectionError) as raised:
        broker.enqueue("q", "m1", b"x")

    assert "after 3 attempts" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    assert time.monotonic() - started < 2.0
    broker.close()


def test_fetch_raises_broker_connection_error_promptly_while_the_server_is_down(
    broker: RedisBroker, redis_server: RedisServer
) -> None:
    broker.ping()
    redis_server.stop()
    started = time.monotonic()

    with pytest.raises(BrokerConnectionError):
        broker.fetch(["q"], max_messages=1, timeout_s=5.0)

    assert time.monotonic() - started < 1.0


def test_a_fetch_blocked_when_the_server_goes_down_raises_broker_connection_error(
    broker: RedisBroker, redis_server: RedisServer
) -> None:
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            broker.fetch(["q"], max_messages=1, timeout_s=10.0)
        except BrokerConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.2)
    redis_server.kill()
    thread.join(timeout=5.0)

    assert not thread.is_alive()
    assert len(errors) == 1


def test_fetch_and_enqueue_work_again_after_the_server_restarts(
    broker: RedisBroker, redis_server: RedisServer
) -> None:
    broker.enqueue("q", "before", b"x")
    broker.ack([fetch_one(broker)])
    redis_server.stop()
    with pytest.raises(BrokerConnectionError):
        broker.fetch(["q"], max_messages=1, timeout_s=0.1)

    redis_server.start()  # empty, and without the Lua scripts the broker loaded

    broker.enqueue("q", "after", b"x")
    delivery = fetch_one(broker)
    broker.ack([delivery])
    assert delivery.message_id == "after"


def test_a_batch_is_enqueued_after_the_server_restarts(broker: RedisBroker, redis_server: RedisServer) -> None:
    broker.enqueue_many([Outgoing(queue="q", message_id="before", data=b"x")])
    redis_server.stop()
    redis_server.start()

    broker.enqueue_many([Outgoing(queue="q", message_id=f"m{i}", data=b"x") for i in range(3)])

    assert broker.queue_depth("q").ready == 3


def test_ping_raises_broker_connection_error_while_the_server_is_down(
    broker: RedisBroker, redis_server: RedisServer
) -> None:
    broker.ping()
    redis_server.stop()

    with pytest.raises(BrokerConnectionError):
        broker.ping()


def test_an_idle_consumer_blocks_instead_of_spinning_on_stale_wake_up_tokens(
    broker: RedisBroker, redis_url: str
) -> None:
    for i in range(20):
        broker.enqueue("q", f"m{i}", b"x")  # 20 wake-up tokens that nobody waited for
    broker.ack(broker.fetch(["q"], max_messages=20, timeout_s=0))
    stats = redis.Redis.from_url(redis_url)
    stats.config_resetstat()

    assert broker.fetch(["q"], max_messages=1, timeout_s=0.5) == []

    calls = stats.info("commandstats").get("cmdstat_blpop", {}).get("calls", 0)
    stats.close()
    assert calls == 1
