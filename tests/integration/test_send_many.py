"""``App.send_many`` on every broker (``broker_kind``): a batch of calls is stored whole, in chunks, and a worker runs
each call of it once."""

from __future__ import annotations

import time

import pytest

from taskfleet import App, producer
from taskfleet.brokers.base import Delivery
from taskfleet.message import Message
from tests import tasks
from tests.conftest import StartWorker

pytestmark = pytest.mark.integration


def drain(app: App, queue: str, count: int, timeout_s: float = 15.0) -> list[Delivery]:
    """Fetch and ack ``count`` messages of ``queue`` (or what arrives within ``timeout_s``)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = app.broker.fetch([queue], max_messages=100, timeout_s=min(1.0, deadline - time.monotonic()))
        app.broker.ack(batch)
        got += batch
    return got


def test_a_batch_of_several_chunks_is_stored_whole_each_message_once(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer, "SEND_MANY_CHUNK", 40)

    results = app.send_many(tasks.add.s(i, i) for i in range(101))  # three chunks, the last one short

    stored = drain(app, "tests", 101)
    assert sorted(d.message_id for d in stored) == sorted(r.id for r in results)
    messages = [Message.decode(d.data, accept=app.settings.accept_content) for d in stored]
    assert sorted(m.args for m in messages) == [(i, i) for i in range(101)]
    assert drain(app, "tests", 1, timeout_s=0.5) == []


def test_calls_for_several_queues_and_priorities_in_one_batch_land_where_each_says(app: App) -> None:
    app.send_many([tasks.add.s(1, 1).set(queue="low", priority=0), tasks.add.s(2, 2).set(queue="high", priority=9),
                   ("tests.add", (3, 3), {}), tasks.add.s(4, 4).set(queue="high", priority=2)])

    assert [Message.decode(d.data, accept=app.settings.accept_content).args for d in drain(app, "low", 1)] == [
        (1, 1)]
    high = [Message.decode(d.data, accept=app.settings.accept_content) for d in drain(app, "high", 2)]
    assert [(m.args, m.priority) for m in high] == [((2, 2), 9), ((4, 4), 2)]
    assert [Message.decode(d.data, accept=app.settings.accept_content).args for d in drain(app, "tests", 1)] == [
        (3, 3)]


def test_a_worker_runs_every_call_of_a_batch_and_each_caller_gets_its_own_result(
    app: App, start_worker: StartWorker
) -> None:
    start_worker(concurrency=2)

    results = app.send_many(tasks.add.s(i, 1000) for i in range(60))

    assert [r.get(timeout=30) for r in results] == [i + 1000 for i in range(60)]


def test_a_batch_with_a_countdown_waits_outside_the_queue_then_runs(app: App, start_worker: StartWorker) -> None:
    start_worker()
    sent = time.time()

    results = app.send_many([tasks.add.s(1, 2), tasks.add.s(3, 4)], countdown=1.5)

    assert [r.get(timeout=20) for r in results] == [3, 7]
    assert time.time() - sent >= 1.4
