"""RabbitMQ's windowed publisher confirms (``broker_publish_confirms="windowed"``, the default): ``delay`` returns
before its confirm, yet nothing is lost silently. A refused message (nack, unroutable) is raised by ``flush`` and
the next publish, a connection lost with messages unconfirmed publishes them again, and a process that exits
normally has every message it published stored."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pika
import pytest

from taskfleet.errors import PublishNotConfirmed
from tests.integration.conftest import MakeRabbit
from tests.support.rabbitmq_server import RabbitMQServer, vhost_path
from tests.support.waiting import wait_for


def _ready(server: RabbitMQServer, vhost: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(server.vhost_url(vhost)))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _ctl(server: RabbitMQServer, *args: str) -> None:
    subprocess.run([server.ctl_binary, "-n", server.node, *args], env=server._env(), cwd=server.dir,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=True)


def _memory_limit(server: RabbitMQServer) -> int:
    """The node's memory high watermark in bytes (its statistics appear a moment after it starts)."""
    found: list[int] = []

    def read() -> bool:
        found.extend(int(node["mem_limit"]) for node in server.api("GET", "/api/nodes") if "mem_limit" in node)
        return bool(found)

    wait_for(read, timeout=15, interval=0.2, message="the management API reports no mem_limit")
    return found[0]


def _refuse_past_one_message(server: RabbitMQServer, vhost: str, queue: str) -> None:
    """A policy making ``queue`` refuse (nack) publishes past one message (taskfleet declares its own arguments)."""
    server.api("PUT", f"/api/policies/{vhost_path(vhost)}/full", {
        "pattern": f"^{queue}$", "definition": {"max-length": 1, "overflow": "reject-publish"}, "apply-to": "queues"})


def test_windowed_publishes_return_before_their_confirm_and_flush_waits_for_every_one(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit(confirm_window=50)
    for i in range(300):
        broker.enqueue_nowait("jobs", f"m{i}", b"x")
        assert broker._link.window.outstanding <= 50  # the window bounds what is kept
    broker.flush(timeout_s=10)
    assert broker._link.window.outstanding == 0
    assert _ready(rabbitmq_server, vhost, "jobs") == 300


def test_a_message_rabbitmq_refuses_to_store_is_raised_by_flush_with_its_id(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    # Given a queue that refuses publishes past one message (a policy: taskfleet declares its own arguments)
    _refuse_past_one_message(rabbitmq_server, vhost, "jobs")
    broker = make_rabbit()
    broker.enqueue("jobs", "first", b"x")
    # When a second message is published without waiting
    broker.enqueue_nowait("jobs", "second", b"x")
    # Then flush raises, naming it, and what follows is published normally
    with pytest.raises(PublishNotConfirmed, match="nack") as raised:
        broker.flush(timeout_s=10)
    assert raised.value.message_ids == ("second",)
    broker.flush(timeout_s=10)


def test_a_delivery_whose_task_published_a_refused_message_is_given_back_not_acked(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    _refuse_past_one_message(rabbitmq_server, vhost, "next")
    broker = make_rabbit()
    broker.enqueue("next", "filler", b"x")
    broker.enqueue("jobs", "cause", b"x")
    [delivery] = broker.fetch(["jobs"], max_messages=1, timeout_s=5)
    # Given a task that published a follow-up RabbitMQ refuses
    broker.enqueue_nowait("next", "follow-up", b"x")
    # When the worker acks the task's delivery
    with pytest.raises(PublishNotConfirmed):
        broker.ack([delivery])
    # Then the delivery was given back, to run again
    [again] = broker.fetch(["jobs"], max_messages=1, timeout_s=5)
    assert again.message_id == "cause"


def test_an_unroutable_message_is_raised_by_the_next_publish(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit()
    broker.enqueue("jobs", "m0", b"x")
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_server.vhost_url(vhost)))
    connection.channel().queue_delete("jobs")  # behind the client's back
    connection.close()
    broker.enqueue_nowait("jobs", "lost", b"x")
    wait_for(lambda: broker._link.window.refusals, timeout=5, message="the I/O thread collects the return")
    with pytest.raises(PublishNotConfirmed, match="unroutable") as raised:
        broker.enqueue_nowait("jobs", "next", b"x")
    assert raised.value.message_ids == ("lost",)
    broker.enqueue_nowait("jobs", "next", b"x")  # the queue is declared again
    broker.flush(timeout_s=10)
    assert _ready(rabbitmq_server, vhost, "jobs") == 1


def test_messages_unconfirmed_when_the_server_closes_the_connection_are_published_again(
    make_rabbit: MakeRabbit, rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    broker = make_rabbit()
    broker.enqueue("jobs", "m0", b"x")  # declared, connected
    # Given publishes RabbitMQ does not confirm yet (a memory alarm blocks publishers)
    limit = _memory_limit(rabbitmq_server)
    _ctl(rabbitmq_server, "set_vm_memory_high_watermark", "0")
    try:
        for i in range(1, 50):
            broker.enqueue_nowait("jobs", f"m{i}", b"x")
        assert broker._link.window.outstanding == 49
        # When the server closes the connection
        connections: list[dict[str, Any]] = []
        wait_for(lambda: connections.extend(rabbitmq_server.api(
            "GET", f"/api/vhosts/{vhost_path(vhost)}/connections")) or connections, timeout=15, interval=0.2,
            message="the management API lists the client's connection")  # a moment after it opens
        for connection in connections:
            rabbitmq_server.api("DELETE", f"/api/connections/{vhost_path(connection['name'])}")
        wait_for(lambda: broker._link.generation > 2, timeout=10, message="the link notices and reconnects")
    finally:
        _ctl(rabbitmq_server, "set_vm_memory_high_watermark", "absolute", str(limit))
    # Then every message is stored (at least once) once flushed
    broker.flush(timeout_s=20)
    assert _ready(rabbitmq_server, vhost, "jobs") >= 50


def test_a_process_that_publishes_then_exits_normally_has_every_message_stored(
    rabbitmq_server: RabbitMQServer, vhost: str
) -> None:
    script = textwrap.dedent(f"""
        from taskfleet import App
        app = App("exiting", broker={rabbitmq_server.vhost_url(vhost)!r})

        @app.task
        def noop() -> None: ...

        for _ in range(2000):
            noop.delay()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert _ready(rabbitmq_server, vhost, "default") == 2000
