"""Broker restarts, per broker: what was confirmed before the server went away is still there after it, clients
reconnect by themselves, and a busy publisher and worker ride through a restart without losing a task.

Redis keeps data across a restart only with persistence, which the session server runs without: this module runs
Redis on its own durable server (append-only file, fsync always). RabbitMQ runs on the session node (durable
queues, persistent messages, publisher confirms).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from taskfleet import App, AsyncResult, State
from taskfleet.brokers.base import Broker, Delivery, Outgoing
from taskfleet.errors import BrokerConnectionError, BrokerError
from taskfleet.settings import PublishRetry
from tests import tasks
from tests.conftest import MakeBroker, StartWorker
from tests.support.brokers import KIND_NAMES, BrokerKind, RabbitMQKind, RedisKind
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

#: How long the server stays down (on top of its own stop and start time).
OUTAGE_S = 2.0
#: Publish retries that outlast a restart of either server (about 30 s).
RIDE_THROUGH = PublishRetry(max_attempts=60, backoff_s=0.1, backoff_max_s=0.5)
CONCURRENCY = 2
PREFETCH = 2
#: Tasks that may run twice: at most the deliveries whose ack was in flight when the server went away (what the
#: children held), plus a publish whose confirm was lost and was retried (RabbitMQ stores it twice).
MAX_DUPLICATES = CONCURRENCY * PREFETCH + 2


@pytest.fixture(params=KIND_NAMES)
def broker_kind(request: pytest.FixtureRequest) -> BrokerKind:
    """As in conftest, but Redis on the durable server."""
    if request.param == "redis":
        return RedisKind(request.getfixturevalue("durable_redis_server"))
    return RabbitMQKind(request.getfixturevalue("rabbitmq_server"))


def restart_with_an_outage(broker_kind: BrokerKind) -> None:
    broker_kind.stop()
    time.sleep(OUTAGE_S)
    broker_kind.start()


def fetch_and_ack(broker: Broker, count: int, timeout_s: float) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = broker.fetch(["q"], max_messages=count, timeout_s=deadline - time.monotonic())
        broker.ack(batch)
        got += batch
    return got


def test_messages_confirmed_before_a_crash_are_delivered_after_it_and_the_client_works_again(
    make_broker: MakeBroker, broker_kind: BrokerKind
) -> None:
    broker = make_broker()
    broker.enqueue("q", "dead", b"x")
    broker.dead_letter(broker.fetch(["q"], max_messages=1, timeout_s=5)[0], "bad input")
    broker.enqueue("q", "normal", b"\x00normal", priority=0)
    broker.enqueue("q", "urgent", b"\x00urgent", priority=9)
    broker.enqueue("q", "delayed", b"\x00delayed", delay_s=3.0)  # due while the server is down (RabbitMQ)

    broker_kind.kill()
    with pytest.raises(BrokerConnectionError):
        broker.fetch(["q"], max_messages=1, timeout_s=0.1)
    broker_kind.start()  # Redis: without the Lua scripts the client loaded

    got = fetch_and_ack(broker, 3, timeout_s=15)
    assert [(d.message_id, d.data) for d in got] == [
        ("urgent", b"\x00urgent"), ("normal", b"\x00normal"), ("delayed", b"\x00delayed"),
    ]
    assert [(d.message_id, d.reason) for d in broker.dead_letters("q")] == [("dead", "bad input")]
    broker.enqueue("q", "after", b"x")
    broker.enqueue_many([Outgoing(queue="q", message_id=f"batch{i}", data=b"x") for i in range(2)])
    assert [d.message_id for d in fetch_and_ack(broker, 3, timeout_s=5)] == ["after", "batch0", "batch1"]


def test_a_restart_while_a_publisher_and_a_worker_are_busy_loses_no_confirmed_task(
    app: App, start_worker: StartWorker, broker_kind: BrokerKind, marker: str, tmp_path: Path
) -> None:
    app.configure(publish_retry=RIDE_THROUGH)
    slow_marker = str(tmp_path / "slow.txt")
    worker = start_worker(concurrency=CONCURRENCY, extra=["--prefetch", str(PREFETCH)])
    publisher = Publisher(marker, slow_marker)
    publisher.start()

    wait_for(lambda: len(tasks.lines(marker)) >= 30, timeout=20, message="the worker got busy")
    restart_with_an_outage(broker_kind)
    confirmed_at_restart = len(publisher.confirmed)
    wait_for(lambda: len(publisher.confirmed) >= confirmed_at_restart + 30, timeout=30,
             message=f"publishing resumed after the restart; failures: {publisher.failed[-3:]}")
    publisher.stop()

    # Every confirmed task completes or is visibly dead-lettered.
    def unfinished() -> list[str]:
        dead = {d.message_id for d in app.broker.dead_letters("tests", limit=10_000)}
        return [task_id for _, task_id in publisher.confirmed
                if task_id not in dead and AsyncResult(task_id, app=app).state is not State.SUCCESS]

    wait_for(lambda: not unfinished(), timeout=60, interval=0.5,
             message=f"{broker_kind.name}: confirmed tasks lost: {unfinished()[:10]} (of {len(unfinished())})")
    assert worker.proc.poll() is None, "the worker survived the restart"

    # ... and ran once, apart from the few whose ack (or publish confirm) was in flight during the restart.
    runs = Counter(tasks.lines(marker))
    recorded = [label for label, _ in publisher.confirmed if not label.startswith("slow")]
    assert all(runs[label] >= 1 for label in recorded), "every completed task left its line"
    duplicates = {label: runs[label] for label in recorded if runs[label] > 1}
    print(f"{broker_kind.name}: {len(publisher.confirmed)} tasks confirmed, {len(publisher.failed)} publishes failed, "
          f"duplicates: {duplicates}")
    assert len(duplicates) <= MAX_DUPLICATES, (
        f"{len(duplicates)} tasks ran more than once, expected at most {MAX_DUPLICATES} (the deliveries whose ack "
        f"was in flight during the restart): {duplicates}"
    )


class Publisher(threading.Thread):
    """Publishes ``record`` tasks (every 5th with a 1 s countdown, every 10th a 0.3 s ``slow_record`` instead) until
    stopped, keeping the ones the broker confirmed."""

    def __init__(self, marker: str, slow_marker: str) -> None:
        super().__init__(name="publisher", daemon=True)
        self.marker = marker
        self.slow_marker = slow_marker
        self.confirmed: list[tuple[str, str]] = []  # (label, task id)
        self.failed: list[str] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        for n in itertools.count():
            if self._stopping.is_set():
                return
            try:
                if n % 10 == 0:
                    label = f"slow{n}"
                    result = tasks.slow_record.delay(self.slow_marker, 0.3)
                else:
                    label = f"t{n}"
                    result = tasks.record.apply_async(args=(self.marker, label), countdown=1.0 if n % 5 == 0 else None)
            except BrokerError as exc:
                self.failed.append(f"{n}: {exc}")
                continue
            self.confirmed.append((label, result.id))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=60)
        assert not self.is_alive(), "the publisher is stuck"
