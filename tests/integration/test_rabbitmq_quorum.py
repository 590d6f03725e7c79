"""Quorum task queues (``task_default_queue_type="quorum"``) on a real RabbitMQ: how they are declared, what they
refuse (priorities, an existing classic queue), and that every declare and ``basic.qos`` our code sends is one
RabbitMQ 4.x still accepts (no transient non-exclusive queue, no global QoS). Debian's RabbitMQ 3.10 cannot deny
deprecated features itself, so the last is checked by recording the calls (docs/brokers.md says what was not
testable)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from taskfleet import App
from taskfleet.errors import BrokerError, ConfigurationError
from tests import tasks
from tests.integration.conftest import MakeRabbit
from tests.support.brokers import BrokerKind
from tests.support.rabbitmq_server import RabbitMQServer
from tests.support.workers import WorkerProcess

StartWorker = Callable[..., WorkerProcess]






@pytest.fixture
def amqp_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every ``queue_declare`` and ``basic_qos`` made through pika's ``BlockingChannel`` during the test."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in ("queue_declare", "basic_qos"):
        original = getattr(BlockingChannel, name)

        def record(self: BlockingChannel, *args: Any, _name: str = name, _original: Any = original,
                   **kwargs: Any) -> Any:
            calls.append((_name, {"args": args, **kwargs}))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(BlockingChannel, name, record)
    return calls


def test_a_quorum_app_declares_quorum_task_queues_that_run_tasks_and_dead_letter_to_a_classic_queue(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit(queue_type="quorum")
    broker.enqueue("billing", "m1", b"x")
    broker.enqueue("billing", "m2", b"y", delay_s=0.2)

    got = broker.fetch(["billing"], max_messages=1, timeout_s=5)
    broker.dead_letter(got[0], "boom")
    later = broker.fetch(["billing"], max_messages=1, timeout_s=5)
    broker.ack(later)

    queue = rabbitmq_server.queue(vhost, "billing")
    assert (queue["type"], queue["durable"]) == ("quorum", True)
    assert queue["arguments"] == {"x-queue-type": "quorum", "x-dead-letter-exchange": "",
                                  "x-dead-letter-routing-key": "taskfleet.dead.billing"}
    assert rabbitmq_server.queue(vhost, "taskfleet.dead.billing")["type"] == "classic"
    assert [d.message_id for d in got + later] == ["m1", "m2"]
    assert [(d.message_id, d.reason) for d in broker.dead_letters("billing")] == [("m1", "boom")]


def test_a_message_with_a_priority_is_refused_by_a_quorum_queue_before_anything_is_sent(
    make_rabbit: MakeRabbit,
) -> None:
    broker = make_rabbit(queue_type="quorum")

    with pytest.raises(ConfigurationError, match=r"quorum queue .* no message priorities: priority=5"):
        broker.enqueue("billing", "m1", b"x", priority=5)
    broker.enqueue("billing", "m2", b"x", priority=0)
    assert broker.queue_depth("billing").ready == 1


def test_an_existing_classic_queue_is_not_switched_to_quorum_and_the_error_says_what_to_do(
    make_rabbit: MakeRabbit,
) -> None:
    make_rabbit().enqueue("billing", "m1", b"x")  # classic, as before the switch
    quorum = make_rabbit(queue_type="quorum")

    with pytest.raises(BrokerError, match=r"(?s)as a quorum queue.*PRECONDITION_FAILED.*cannot change a queue's "
                                          r"type.*rabbitmqctl delete_queue billing"):
        quorum.enqueue("billing", "m2", b"x")
    quorum.enqueue("other", "m3", b"x")  # the refused declare closed only a channel
    assert quorum.queue_depth("other").ready == 1


def test_our_amqp_calls_are_all_ones_rabbitmq_4_accepts(
    make_rabbit: MakeRabbit, amqp_calls: list[tuple[str, dict[str, Any]]]
) -> None:
    """Given a publisher, a consumer and a supervisor releasing a dead child's deliveries (the credit queues),
    when they run, then no declared queue is transient and non-exclusive and no basic.qos is global."""
    child, supervisor = make_rabbit(queue_type="quorum"), make_rabbit(queue_type="quorum")
    for i in range(3):
        child.enqueue("work", f"m{i}", b"x")
    held = child.fetch(["work"], max_messages=3, timeout_s=5)
    supervisor.release(held)  # another connection's deliveries: leaves credits
    child.close()
    assert supervisor.fetch(["work"], max_messages=3, timeout_s=5)

    declares = [call for name, call in amqp_calls if name == "queue_declare" and not call.get("passive")]
    assert any(str(call["args"][0]).startswith("taskfleet.unstarted.") for call in declares)
    assert [c for c in declares if not c.get("durable") and not c.get("exclusive")] == []
    assert [c for name, c in amqp_calls if name == "basic_qos" and c.get("global_qos")] == []


@pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)
def test_a_worker_given_the_queue_type_in_its_environment_declares_quorum_queues_and_runs_their_tasks(
    app: App, start_worker: StartWorker, broker_kind: BrokerKind, broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker started as the operator starts one for spec.broker.rabbitmq.queueType: quorum
    monkeypatch.setenv("TASKFLEET_TASK_DEFAULT_QUEUE_TYPE", "quorum")
    start_worker(concurrency=1)

    # When a task is sent to its queue by an app that agrees on the type
    app.configure(task_default_queue_type="quorum")
    try:
        result = tasks.add.delay(2, 3).get(timeout=20)
    finally:
        app.configure(task_default_queue_type="classic")  # the test tasks' app is shared by the session

    # Then the worker declared the queue as a quorum queue and ran the task
    assert result == 5
    server = broker_kind.server
    assert isinstance(server, RabbitMQServer)
    assert server.queue(broker_url.rsplit("/", 1)[1], "tests")["type"] == "quorum"
