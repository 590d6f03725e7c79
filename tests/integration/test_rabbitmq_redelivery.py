"""How RabbitMQ counts and orders lost and given-back deliveries (issue 15): a redelivery keeps its count through a
give-back, a dead child's unstarted prefetched messages come back uncounted and in their place, and what RabbitMQ
cannot do is documented in docs/brokers.md."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers.base import Delivery, Outgoing
from taskfleet.brokers.rabbitmq import RabbitMQBroker
from taskfleet.brokers.rabbitmq._topology import credit_queue_name
from taskfleet.errors import BrokerError
from tests import tasks
from tests.conftest import StartWorker
from tests.support.waiting import wait_for
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.integration




def _fetch(broker: RabbitMQBroker, count: int, timeout_s: float = 5.0, prefetch: int | None = None) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        got += broker.fetch(["work"], max_messages=prefetch or count, timeout_s=deadline - time.monotonic())
    return got


def test_a_redelivery_given_back_from_the_buffer_keeps_its_lost_delivery_counted(make_rabbit: Any) -> None:
    dies, gives_back, third = make_rabbit(), make_rabbit(), make_rabbit()
    dies.enqueue("work", "m", b"x")
    [held] = _fetch(dies, 1)
    dies.enqueue("work", "n", b"y")
    [n] = _fetch(gives_back, 1, prefetch=2)  # room for one more
    assert (held.message_id, n.message_id) == ("m", "n")

    dies.close()  # died holding m: RabbitMQ pushes m, flagged redelivered, into gives_back's buffer
    time.sleep(1.5)  # the I/O thread pumps the connection every 0.5 s
    gives_back.release([n])  # the buffered m goes back with it

    got = {d.message_id: d for d in _fetch(third, 2)}
    assert sorted(got) == ["m", "n"]
    assert (got["m"].delivery_count, got["m"].redelivered) == (2, True), "the lost delivery of m was forgotten"
    assert got["n"].delivery_count == 1


def test_a_redelivery_given_back_from_the_buffer_past_max_deliveries_is_dead_lettered(make_rabbit: Any) -> None:
    dies, gives_back, third = make_rabbit(max_deliveries=1), make_rabbit(max_deliveries=1), make_rabbit()
    dies.enqueue("work", "m", b"x")
    _fetch(dies, 1)
    dies.enqueue("work", "n", b"y")
    [n] = _fetch(gives_back, 1, prefetch=2)
    dies.close()
    time.sleep(1.5)
    gives_back.release([n])

    assert [d.message_id for d in _fetch(third, 2, timeout_s=2.0)] == ["n"]
    assert [d.message_id for d in third.dead_letters("work")] == ["m"]


# -- what a consumer's buffer holds -------------------------------------------------------------------------------


def test_fetch_buffered_takes_what_rabbitmq_pushed_in_order_without_waiting(make_rabbit: Any) -> None:
    broker = make_rabbit()
    broker.enqueue("work", "m0", b"x")
    assert [d.message_id for d in _fetch(broker, 1, prefetch=4)] == ["m0"]
    for i in range(1, 4):
        broker.enqueue("work", f"m{i}", b"x")

    got: list[Delivery] = []
    wait_for(lambda: _take_into(got, broker) == 3, timeout=5, interval=0.01, message="pushed to the buffer")
    began = time.monotonic()
    assert broker.fetch_buffered(8) == []
    assert time.monotonic() - began < 0.2, "fetch_buffered does not wait"

    assert [(d.message_id, d.delivery_count) for d in got] == [("m1", 1), ("m2", 1), ("m3", 1)]
    broker.ack(got)
    assert broker.fetch(["work"], max_messages=4, timeout_s=0.3) == [], "each delivery is returned once"


def _take_into(got: list[Delivery], broker: RabbitMQBroker) -> int:
    got += broker.fetch_buffered(8)
    return len(got)


def test_fetch_buffered_without_reading_the_socket_takes_what_the_connection_has_read(make_rabbit: Any) -> None:
    """What a worker child asks before each task: no system call, yet everything its connection holds in memory."""
    broker, producer = make_rabbit(), make_rabbit()
    broker.enqueue("work", "m0", b"x")
    assert [d.message_id for d in _fetch(broker, 1, prefetch=4)] == ["m0"]
    for i in range(1, 4):
        producer.enqueue("work", f"m{i}", b"x")
    time.sleep(1.5)  # the I/O thread pumps the connection every 0.5 s: m1..m3 are read into its buffer

    got = broker.fetch_buffered(8, read_socket=False)

    assert [(d.message_id, d.delivery_count) for d in got] == [("m1", 1), ("m2", 1), ("m3", 1)]
    assert broker.fetch_buffered(8, read_socket=False) == []


def test_fetch_buffered_counts_a_redelivery_as_fetch_does(make_rabbit: Any) -> None:
    dies, holds = make_rabbit(), make_rabbit()
    dies.enqueue("work", "m", b"x")
    _fetch(dies, 1)
    holds.enqueue("work", "n", b"y")
    [n] = _fetch(holds, 1, prefetch=2)  # room for one more
    dies.close()  # m is pushed, flagged redelivered, into holds' buffer

    # The redelivery is counted (republished), then the counted copy is pushed to holds' buffer in turn.
    got: list[Delivery] = []
    wait_for(lambda: _take_into(got, holds) >= 1, timeout=5, interval=0.05, message="m came back")
    assert [(d.message_id, d.delivery_count) for d in got] == [("m", 2)]
    assert n.delivery_count == 1


# -- a clean stop counts nothing ---------------------------------------------------------------------------------


def test_closing_gives_back_uncounted_what_rabbitmq_pushed_and_no_fetch_took(make_rabbit: Any) -> None:
    """A child that stops cleanly (drain, recycling) closes its broker while its consumer's buffer may hold messages
    pushed since its last fetch: they were never started, so they must not come back counted as lost."""
    stops, next_one = make_rabbit(), make_rabbit()
    stops.enqueue("work", "m0", b"x")
    [m0] = _fetch(stops, 1, prefetch=4)
    stops.ack([m0])
    for i in range(1, 4):
        stops.enqueue("work", f"m{i}", b"x")
    time.sleep(1.5)  # the I/O thread pumps the connection every 0.5 s: m1..m3 wait in the buffer, unfetched

    stops.close()

    got = _fetch(next_one, 3)
    assert sorted((d.message_id, d.delivery_count) for d in got) == [("m1", 1), ("m2", 1), ("m3", 1)]


def test_releasing_while_rabbitmq_is_still_pushing_counts_nothing(make_rabbit: Any) -> None:
    """Releasing cancels the consumer while RabbitMQ may still be pushing to it. pika rejects (requeues) what arrives
    between the cancel and its reply, which would come back flagged as redelivered and be counted: those are kept
    and given back uncounted like the rest."""
    releases, next_one = make_rabbit(), make_rabbit()
    releases.enqueue_many([Outgoing(queue="work", message_id=f"m{i}", data=b"x" * 2000) for i in range(400)])
    first = releases.fetch(["work"], max_messages=400, timeout_s=5)  # what has arrived so far; more on the way
    assert 0 < len(first) < 400, "the fetch should return while RabbitMQ is still pushing"

    releases.release(first)

    got = _fetch(next_one, 400, timeout_s=15, prefetch=400)
    assert len(got) == 400
    assert {d.delivery_count for d in got} == {1}, sorted(d.message_id for d in got if d.delivery_count > 1)


# -- credits: a supervisor vouching for a dead child's unstarted deliveries --------------------------------------


def _exists(broker: RabbitMQBroker, queue: str) -> bool:
    try:
        broker._link.call(lambda ch: ch.admin.queue_declare(queue, passive=True), action="test")
    except BrokerError:
        return False
    return True


def test_a_credit_keeps_a_redelivery_uncounted_and_is_deleted_once_used(make_rabbit: Any) -> None:
    dies, supervisor, third = make_rabbit(), make_rabbit(), make_rabbit()
    dies.enqueue("work", "m", b"x")
    held = _fetch(dies, 1)
    credit = credit_queue_name("work", "m")

    supervisor.release(held)  # not its delivery: leaves a credit
    assert _exists(third, credit)
    dies.close()

    [m] = _fetch(third, 1)
    assert (m.message_id, m.delivery_count) == ("m", 1)
    assert not _exists(third, credit), "a used credit is deleted"


def test_a_redelivery_without_a_credit_is_counted_and_the_consumer_carries_on(make_rabbit: Any) -> None:
    dies, third = make_rabbit(), make_rabbit()
    dies.enqueue("work", "m", b"x")
    _fetch(dies, 1)
    dies.close()  # no credit: the lookup's basic.get meets NOT_FOUND, which closes a channel

    [m] = _fetch(third, 1)
    assert (m.message_id, m.delivery_count) == ("m", 2)
    third.ack([m])
    third.enqueue("work", "n", b"y")
    assert [d.message_id for d in _fetch(third, 1)] == ["n"]


def test_two_credits_for_one_message_id_each_keep_one_redelivery_uncounted(make_rabbit: Any) -> None:
    dies, supervisor, third = make_rabbit(), make_rabbit(), make_rabbit()
    dies.enqueue("work", "m", b"x")
    dies.enqueue("work", "m", b"y")  # AMQP does not deduplicate: two copies of one id
    held = _fetch(dies, 2)
    supervisor.release(held)
    dies.close()

    got = _fetch(third, 2)  # the first credit's queue is not empty yet when it is used: it stays, then goes
    assert sorted((d.data, d.delivery_count) for d in got) == [(b"x", 1), (b"y", 1)]
    assert not _exists(third, credit_queue_name("work", "m"))


# -- a dead worker child's prefetched messages -------------------------------------------------------------------

rabbitmq_only = pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)


def _in_flight(worker: WorkerProcess) -> float:
    """The supervisor's count of the deliveries its children hold (what it knows of them)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.health_port}/metrics", timeout=2) as response:
            body = response.read().decode()
    except OSError:
        return -1.0
    return next((float(line.split()[1]) for line in body.splitlines() if line.startswith("taskfleet_tasks_in_flight ")),
                -1.0)


def _kill_child_holding_unstarted(start_worker: StartWorker, marker: str, backlog: int,
                                  kill_supervisor: bool = False) -> WorkerProcess:
    """One child with prefetch 4 takes a slow task and three quick ones; it is SIGKILLed while the slow one runs
    once the supervisor knows it holds all four (however many of them its first fetch returned: the others are
    taken from its connection's buffer within a tick), and before ``prefetch_release_s`` (0.5 s) gives the quick
    ones back; ``backlog`` more messages are queued behind them. ``kill_supervisor``: SIGKILL the supervisor
    instead."""
    tasks.slow_record.delay(marker, 3)
    for i in range(3):
        tasks.record_delivery.delay(marker, f"held{i}")
    for i in range(backlog):
        tasks.record_delivery.delay(marker, f"backlog{i}")
    worker = start_worker(concurrency=1, extra=["--prefetch", "4"])
    wait_for(lambda: any(line.startswith("start") for line in tasks.lines(marker)), timeout=15,
             interval=0.005, message="the slow task started")
    wait_for(lambda: _in_flight(worker) == 4, timeout=0.4, interval=0.005,
             message="the supervisor knows the child holds the slow task and the three quick ones")
    child = int(next(line for line in tasks.lines(marker) if line.startswith("start")).split()[1])
    os.kill(worker.pid if kill_supervisor else child, signal.SIGKILL)
    return worker


@rabbitmq_only
def test_a_dead_childs_unstarted_prefetched_messages_come_back_uncounted(
        app: App, start_worker: StartWorker, marker: str) -> None:
    _kill_child_holding_unstarted(start_worker, marker, backlog=0)
    wait_for(lambda: sum(line.startswith("held") for line in tasks.lines(marker)) == 3, timeout=20,
             message="the held tasks ran after the crash")
    counts = sorted(line for line in tasks.lines(marker) if line.startswith("held"))
    assert counts == ["held0 1", "held1 1", "held2 1"], "never started, so not counted as lost deliveries"


@rabbitmq_only
def test_messages_pushed_to_a_child_that_died_before_reading_them_come_back_uncounted(
        app: App, start_worker: StartWorker, marker: str) -> None:
    """RabbitMQ pushes deliveries into a child's socket whenever its prefetch has room; a child that dies before it
    reads them (a poison task kills it as it starts, with the rest of the burst still in flight) never reported
    them, so only its supervisor, reading what is left in the socket, can tell they never started."""
    worker = start_worker(concurrency=1, extra=["--prefetch", "4"])
    tasks.slow_record.delay(marker, 2)  # stopped at once; run again (counted) before the others
    wait_for(lambda: any(line.startswith("start") for line in tasks.lines(marker)), timeout=15,
             message="the slow task started")
    child = int(next(line for line in tasks.lines(marker) if line.startswith("start")).split()[1])
    os.kill(child, signal.SIGSTOP)  # it reads nothing from now on
    try:
        for i in range(3):
            tasks.record_delivery.delay(marker, f"pushed{i}")
        time.sleep(1.0)  # pushed into the stopped child's socket: its prefetch has room for three
        assert _in_flight(worker) == 1, "the supervisor knows only the slow task"
    finally:
        os.kill(child, signal.SIGKILL)
    wait_for(lambda: sum(line.startswith("pushed") for line in tasks.lines(marker)) == 3, timeout=20,
             message="the pushed tasks ran after the crash")
    counts = sorted(line for line in tasks.lines(marker) if line.startswith("pushed"))
    assert counts == ["pushed0 1", "pushed1 1", "pushed2 1"], "never started, so not counted as lost deliveries"


@rabbitmq_only
def test_a_dead_childs_unstarted_prefetched_messages_keep_their_place_ahead_of_the_backlog(
        app: App, start_worker: StartWorker, marker: str) -> None:
    _kill_child_holding_unstarted(start_worker, marker, backlog=30)
    wait_for(lambda: sum(line.startswith(("held", "backlog")) for line in tasks.lines(marker)) == 33, timeout=30,
             message="every quick task ran after the crash")
    order = [line.split()[0] for line in tasks.lines(marker) if line.startswith(("held", "backlog"))]
    assert order[:3] == ["held0", "held1", "held2"], order


@rabbitmq_only
def test_when_the_supervisor_dies_its_childs_messages_all_come_back_counted(
        app: App, start_worker: StartWorker, marker: str) -> None:
    """No credit without a supervisor: the orphaned child exits within a tick, its connection closes (no copy of its
    socket is left open anywhere) and every delivery it held comes back counted, to another worker."""
    first = _kill_child_holding_unstarted(start_worker, marker, backlog=0, kill_supervisor=True)
    first.wait_exit(timeout=5)
    start_worker(concurrency=1, extra=["--prefetch", "4"])
    wait_for(lambda: sum(line.startswith("held") for line in tasks.lines(marker)) == 3, timeout=20,
             message="the held tasks ran on the second worker")
    counts = sorted(line for line in tasks.lines(marker) if line.startswith("held"))
    assert counts == ["held0 2", "held1 2", "held2 2"]
