"""What only the RabbitMQ broker has to get right: its layout on the server, heartbeats under a busy thread, the
delivery count that AMQP does not keep, consumers RabbitMQ cancels, how it reports what it cannot count, and how
far its events writer runs ahead of a stalled server. The behaviour every broker shares is in
test_broker_conformance.py."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from taskfleet.brokers.base import Delivery, Outgoing
from taskfleet.brokers.fleet_store import connect_fleet_store
from taskfleet.brokers.rabbitmq._consumer import LOST_HEADER
from taskfleet.brokers.rabbitmq._dead_letters import REASON_HEADER
from taskfleet.errors import BrokerError
from tests.integration.conftest import MakeRabbit
from tests.support.rabbitmq_server import RabbitMQServer
from tests.support.waiting import wait_for


def _raw_channel(server: RabbitMQServer, vhost: str) -> tuple[pika.BlockingConnection, Any]:
    connection = pika.BlockingConnection(pika.URLParameters(server.vhost_url(vhost)))
    return connection, connection.channel()


@pytest.fixture
def make_rabbit(make_rabbit: MakeRabbit) -> MakeRabbit:
    """The shared ``make_rabbit`` (tests/integration/conftest.py) with the management API unless a test says
    ``management=False``."""
    return functools.partial(make_rabbit, management=True)


def test_task_queues_are_durable_priority_queues_with_their_own_dead_letter_queue(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    make_rabbit().enqueue("billing", "m1", b"x")

    queue = rabbitmq_server.queue(vhost, "billing")
    dead = rabbitmq_server.queue(vhost, "taskfleet.dead.billing")
    assert queue["durable"] is True
    assert queue["arguments"] == {"x-max-priority": 9}
    assert dead["durable"] is True


def test_a_delayed_message_waits_in_the_ladder_not_in_its_queue(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit()
    broker.enqueue("billing", "later", b"x", delay_s=30)

    wait_for(lambda: rabbitmq_server.queue(vhost, "taskfleet.delay.8").get("messages", 0) == 1, 5,
             message="30 s = 300 units = 0b100101100: the first hop is level 8, then 5, 3, 2")
    assert broker.queue_depth("billing").ready == 0
    assert broker.fetch(["billing"], max_messages=1, timeout_s=0.2) == []


def test_the_persistent_messages_of_a_queue_are_published_persistent(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    make_rabbit().enqueue("billing", "m1", b"x", priority=7)
    connection, channel = _raw_channel(rabbitmq_server, vhost)
    try:
        _method, props, body = channel.basic_get("billing", auto_ack=False)
    finally:
        connection.close()
    assert (props.delivery_mode, props.priority, props.message_id, body) == (2, 7, "m1", b"x")


def test_a_busy_thread_does_not_starve_heartbeats_so_a_held_message_stays_held(make_rabbit: MakeRabbit) -> None:
    holder = make_rabbit(query="heartbeat=1")
    other = make_rabbit()
    holder.enqueue("work", "long", b"x")
    [held] = holder.fetch(["work"], max_messages=1, timeout_s=5)

    stop = time.monotonic() + 4  # four heartbeat intervals of pure Python work on this thread
    while time.monotonic() < stop:
        sum(range(1000))

    assert other.fetch(["work"], max_messages=1, timeout_s=0.5) == []
    holder.ack([held])
    assert holder.queue_depth("work").ready == 0


def test_a_redelivery_carries_its_count_of_lost_deliveries_in_a_header(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    first = make_rabbit()
    first.enqueue("work", "m1", b"x")
    assert [d.delivery_count for d in first.fetch(["work"], max_messages=1, timeout_s=5)] == [1]
    first.close()  # died holding it

    second = make_rabbit()
    [again] = second.fetch(["work"], max_messages=1, timeout_s=5)
    assert again.delivery_count == 2
    assert again.data == b"x"
    receipt: Any = again.receipt
    assert receipt.properties.headers[LOST_HEADER] == 1


def test_dead_letters_carry_the_reason_in_their_headers(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit()
    broker.enqueue("work", "bad", b"\x00garbage")
    [delivery] = broker.fetch(["work"], max_messages=1, timeout_s=5)
    broker.dead_letter(delivery, "not a taskfleet message")

    connection, channel = _raw_channel(rabbitmq_server, vhost)
    try:
        _method, props, body = channel.basic_get("taskfleet.dead.work", auto_ack=False)
    finally:
        connection.close()
    assert body == b"\x00garbage"
    assert props.headers[REASON_HEADER] == "not a taskfleet message"
    assert props.message_id == "bad"


def test_settling_a_delivery_twice_is_harmless_and_keeps_the_channel_open(make_rabbit: MakeRabbit) -> None:
    broker = make_rabbit()
    for i in range(3):
        broker.enqueue("work", f"m{i}", b"x")
    batch = broker.fetch(["work"], max_messages=1, timeout_s=5)
    broker.ack(batch)
    broker.ack(batch)  # RabbitMQ would close the channel on an unknown delivery tag
    broker.dead_letter(batch[0], "late")

    rest: list[Delivery] = []

    def fetch_and_ack() -> bool:
        got = broker.fetch(["work"], max_messages=1, timeout_s=0.5)  # same prefetch: the consumer is not restarted
        broker.ack(got)
        rest.extend(got)
        return len(rest) == 2

    wait_for(fetch_and_ack, 10)
    assert sorted(d.message_id for d in rest) == ["m1", "m2"]
    assert all(d.delivery_count == 1 for d in rest)


def test_a_consumer_that_rabbitmq_cancels_is_started_again_by_the_next_fetch(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit()
    broker.enqueue("work", "m1", b"x")
    broker.ack(broker.fetch(["work"], max_messages=1, timeout_s=5))
    rabbitmq_server.api("DELETE", f"/api/queues/{vhost}/work")  # cancels the consumer

    assert broker.fetch(["work"], max_messages=1, timeout_s=0.5) == []
    make_rabbit().enqueue("work", "m2", b"y")
    assert [d.message_id for d in broker.fetch(["work"], max_messages=1, timeout_s=5)] == ["m2"]


def test_a_queue_declared_elsewhere_with_other_arguments_is_a_clear_error(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    connection, channel = _raw_channel(rabbitmq_server, vhost)
    try:
        channel.queue_declare("legacy", durable=True)  # no x-max-priority
    finally:
        connection.close()
    broker = make_rabbit(management=False)

    with pytest.raises(BrokerError, match=r"PRECONDITION_FAILED|inequivalent"):
        broker.enqueue("legacy", "m1", b"x")
    broker.enqueue("fine", "m2", b"x")  # the connection survives the refused declare
    assert broker.queue_depth("fine").ready == 1


def test_without_the_management_api_queue_depth_counts_ready_only_and_says_so(make_rabbit: MakeRabbit) -> None:
    broker = make_rabbit(management=False)
    broker.enqueue("work", "m1", b"x")
    broker.enqueue("work", "m2", b"x")
    broker.fetch(["work"], max_messages=1, timeout_s=5)

    depth = broker.queue_depth("work")
    assert (depth.ready, depth.in_flight, depth.in_flight_known, depth.delayed_known) == (1, 0, False, False)


def test_the_management_api_counts_unacked_messages_as_in_flight(make_rabbit: MakeRabbit) -> None:
    broker = make_rabbit()
    for i in range(3):
        broker.enqueue("work", f"m{i}", b"x")
    broker.fetch(["work"], max_messages=2, timeout_s=5)

    wait_for(lambda: (broker.queue_depth("work").ready, broker.queue_depth("work").in_flight) == (1, 2), 10,
             message="management counters refresh every collect_statistics_interval")
    assert broker.queue_depth("work").in_flight_known


def test_a_delay_longer_than_the_ladder_is_refused_before_anything_is_sent(make_rabbit: MakeRabbit) -> None:
    broker = make_rabbit()
    with pytest.raises(ValueError, match="maximum"):
        broker.enqueue("work", "m1", b"x", delay_s=30 * 24 * 3600)
    assert broker.queue_depth("work").ready == 0


def test_publishes_from_many_threads_share_one_connection_safely(make_rabbit: MakeRabbit) -> None:
    broker = make_rabbit(management=False)  # exact ready counts, no statistics lag

    def publish(worker: int) -> None:
        for i in range(50):
            broker.enqueue("work", f"{worker}-{i}", b"x")

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert broker.queue_depth("work").ready == 200


def test_an_ack_followed_at_once_by_close_still_reaches_the_broker(make_rabbit: MakeRabbit) -> None:
    first = make_rabbit(management=False)
    first.enqueue("work", "m1", b"x")
    first.ack(first.fetch(["work"], max_messages=1, timeout_s=5))  # acks return without waiting
    first.close()

    second = make_rabbit(management=False)
    assert second.fetch(["work"], max_messages=1, timeout_s=0.5) == []
    assert second.queue_depth("work").ready == 0


def test_a_batch_for_a_queue_deleted_behind_the_clients_back_names_the_refused_messages_and_stores_the_others(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit(management=False)
    broker.enqueue("gone", "first", b"x")
    broker.enqueue("kept", "k0", b"x")
    rabbitmq_server.api("DELETE", f"/api/queues/{vhost}/gone")

    batch = [Outgoing("kept", "k1", b"x"), Outgoing("gone", "g1", b"x"), Outgoing("kept", "k2", b"x"),
             Outgoing("gone", "g2", b"x")]
    with pytest.raises(BrokerError, match=r"could not route 2 message\(s\) to 'gone'.*g1, g2.*other 2"):
        broker.enqueue_many(batch)

    assert broker.queue_depth("kept").ready == 3
    broker.enqueue("gone", "again", b"x")  # declared again, not refused forever
    assert broker.queue_depth("gone").ready == 1


def test_a_large_batch_is_pipelined_and_every_message_confirmed_in_order(make_rabbit: MakeRabbit) -> None:
    broker = make_rabbit(management=False)

    broker.enqueue_many([Outgoing("work", f"m{i}", f"{i}".encode()) for i in range(5000)])

    assert broker.queue_depth("work").ready == 5000
    first = broker.fetch(["work"], max_messages=3, timeout_s=5)
    assert [d.message_id for d in first] == ["m0", "m1", "m2"]


def test_acking_some_deliveries_of_a_window_leaves_the_others_unacked(make_rabbit: MakeRabbit) -> None:
    holder = make_rabbit(management=False)
    for i in range(4):
        holder.enqueue("work", f"m{i}", b"x")
    got: list[Delivery] = []
    wait_for(lambda: got.extend(holder.fetch(["work"], max_messages=4, timeout_s=0.5)) or len(got) == 4, 10)

    holder.ack([got[0], got[1], got[3]])  # m2 is still being worked on: one multiple ack must not cover it
    holder.close()

    other = make_rabbit(management=False)
    again = other.fetch(["work"], max_messages=4, timeout_s=5)
    assert [(d.message_id, d.delivery_count) for d in again] == [("m2", 2)]


@contextlib.contextmanager
def paused(server: RabbitMQServer) -> Iterator[None]:
    """The node stopped (SIGSTOP) for the block, as a server stalled on a busy disk is, then let go (SIGCONT)."""
    pids = server.processes()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_an_events_writer_stays_within_its_window_of_a_stalled_server_so_no_flood_lands_as_one_chunk(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer
) -> None:
    # Given a fleet store writing events in batches of about 40 KB, and its node stalled
    emitter = connect_fleet_store(make_rabbit(), namespace="spec", events_max_len=1000)
    emitter.emit_events([b"first"])
    batches = [[b"batch-%d:" % n + b"." * 40_000] for n in range(5)]
    emitted: list[int] = []

    def emit() -> None:
        for n, batch in enumerate(batches):
            emitter.emit_events(batch)
            emitted.append(n)

    writer = threading.Thread(target=emit)
    with paused(rabbitmq_server):
        writer.start()
        time.sleep(1.0)
        # Then it writes one batch ahead of the confirms, not all five: a stream stores what reaches it together as
        # one chunk, and dropping one chunk bigger than the cap once emptied the whole events stream
        assert emitted == [0]

    # And once the node goes on, every batch is written and kept
    writer.join(timeout=30)
    assert emitted == [0, 1, 2, 3, 4]
    reader = connect_fleet_store(make_rabbit(), namespace="spec", events_max_len=1000)
    events, _ = reader.read_events(None, limit=100)
    assert [event.split(b":")[0] for event in events] == [b"first"] + [b"batch-%d" % n for n in range(5)]
