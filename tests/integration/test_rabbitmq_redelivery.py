"""How RabbitMQ counts and orders lost and given-back deliveries (issue 15): a redelivery keeps its count through a
give-back, a dead child's unstarted prefetched messages come back uncounted and in their place, and what RabbitMQ
cannot do is documented in docs/brokers.md."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from taskfleet import App
from taskfleet.brokers.base import Delivery
from taskfleet.brokers.rabbitmq import RabbitMQBroker
from taskfleet.settings import BrokerSettings
from tests import tasks
from tests.conftest import StartWorker
from tests.support.rabbitmq_server import RabbitMQServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def make_rabbit(rabbitmq_server: RabbitMQServer) -> Iterator[Any]:
    vhost = rabbitmq_server.new_vhost()
    made: list[RabbitMQBroker] = []

    def make(**settings: Any) -> RabbitMQBroker:
        broker = RabbitMQBroker(BrokerSettings(url=rabbitmq_server.vhost_url(vhost), **settings))
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()
    rabbitmq_server.delete_vhost(vhost)


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


# -- a dead worker child's prefetched messages -------------------------------------------------------------------

rabbitmq_only = pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)


def _kill_child_holding_unstarted(start_worker: StartWorker, marker: str, backlog: int) -> None:
    """One child with prefetch 4 takes a slow task and three quick ones; it is SIGKILLed while the slow one runs
    (before ``prefetch_release_s`` gives the quick ones back), with ``backlog`` more messages queued behind them."""
    tasks.slow_record.delay(marker, 3)
    for i in range(3):
        tasks.record_delivery.delay(marker, f"held{i}")
    for i in range(backlog):
        tasks.record_delivery.delay(marker, f"backlog{i}")
    start_worker(concurrency=1, extra=["--prefetch", "4"])
    wait_for(lambda: any(line.startswith("start") for line in tasks.lines(marker)), timeout=15,
             interval=0.005, message="the slow task started")
    os.kill(int(next(line for line in tasks.lines(marker) if line.startswith("start")).split()[1]), signal.SIGKILL)


@rabbitmq_only
def test_a_dead_childs_unstarted_prefetched_messages_come_back_uncounted(
        app: App, start_worker: StartWorker, marker: str) -> None:
    _kill_child_holding_unstarted(start_worker, marker, backlog=0)
    wait_for(lambda: sum(line.startswith("held") for line in tasks.lines(marker)) == 3, timeout=20,
             message="the held tasks ran after the crash")
    counts = sorted(line for line in tasks.lines(marker) if line.startswith("held"))
    assert counts == ["held0 1", "held1 1", "held2 1"], "never started, so not counted as lost deliveries"


@rabbitmq_only
def test_a_dead_childs_unstarted_prefetched_messages_keep_their_place_ahead_of_the_backlog(
        app: App, start_worker: StartWorker, marker: str) -> None:
    _kill_child_holding_unstarted(start_worker, marker, backlog=30)
    wait_for(lambda: sum(line.startswith(("held", "backlog")) for line in tasks.lines(marker)) == 33, timeout=30,
             message="every quick task ran after the crash")
    order = [line.split()[0] for line in tasks.lines(marker) if line.startswith(("held", "backlog"))]
    assert order[:3] == ["held0", "held1", "held2"], order
