"""Specification of quorum task queues and of our AMQP usage RabbitMQ 4.x still accepts: the declare arguments of
each queue type, what a quorum queue refuses (priorities, redeclaring a classic queue), and a fence over every
``queue_declare`` and ``basic_qos`` in taskfleet.brokers.rabbitmq: RabbitMQ 4.x denies transient non-exclusive
queues and global QoS by default. The same on a real server: tests/integration/test_rabbitmq_quorum.py."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pika.exceptions
import pytest

import taskfleet.brokers.rabbitmq
from taskfleet.brokers.rabbitmq import _topology as topo
from taskfleet.errors import BrokerError, ConfigurationError
from taskfleet.settings import AppSettings, BrokerSettings, settings_from_env

PACKAGE = Path(taskfleet.brokers.rabbitmq.__file__).parent


class RecordingChannel:
    """Records every declare; refuses the queues named in ``refuse`` with ``refuse[name]`` (reply code, text)."""

    def __init__(self, refuse: dict[str, tuple[int, str]] | None = None) -> None:
        self.queues: dict[str, dict[str, Any]] = {}
        self.refuse = refuse or {}

    def queue_declare(self, queue: str, **options: Any) -> None:
        if queue in self.refuse:
            raise pika.exceptions.ChannelClosedByBroker(*self.refuse[queue])
        self.queues[queue] = options

    def exchange_declare(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def queue_bind(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def exchange_bind(self, **_kwargs: Any) -> None:
        pass


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _calls(method: str) -> list[tuple[str, ast.Call]]:
    """(file:line, call) of every ``<x>.<method>(...)`` in the RabbitMQ broker package."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
                found.append((f"{path.name}:{node.lineno}", node))
    return found


def test_every_queue_our_code_declares_is_durable_or_exclusive_never_transient_and_shared() -> None:
    declares = [(where, call) for where, call in _calls("queue_declare") if not _is_true(_keyword(call, "passive"))]

    transient = [where for where, call in declares
                 if not _is_true(_keyword(call, "durable")) and not _is_true(_keyword(call, "exclusive"))]
    assert len(declares) >= 6  # the fence sees the ladder, task, dead, credit, fleet and beat declares
    assert transient == [], "RabbitMQ 4.x refuses transient non-exclusive queues by default"


def test_no_basic_qos_of_ours_is_global() -> None:
    qos = _calls("basic_qos")

    assert qos, "the consumer and the stream reader set a prefetch"
    assert [where for where, call in qos if _keyword(call, "global_qos") is not None or len(call.args) > 2] == []


def test_a_classic_task_queue_keeps_priorities_and_a_quorum_one_dead_letters_into_our_dead_letter_queue() -> None:
    classic, quorum = RecordingChannel(), RecordingChannel()

    topo.declare_task_queue(classic, "billing", ladder_ready=False)
    topo.declare_task_queue(quorum, "billing", ladder_ready=False, queue_type="quorum")

    assert classic.queues["billing"] == {"durable": True, "arguments": {"x-max-priority": 9}}
    assert quorum.queues["billing"] == {"durable": True, "arguments": {
        "x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "taskfleet.dead.billing"}}
    assert classic.queues["taskfleet.dead.billing"] == quorum.queues["taskfleet.dead.billing"] == {"durable": True}


def test_credit_queues_are_durable_and_expire_so_rabbitmq_4_accepts_them() -> None:
    channel = RecordingChannel()
    topo.declare_credit_queue(channel, "taskfleet.unstarted.abc")

    assert channel.queues["taskfleet.unstarted.abc"] == {"durable": True,
                                                         "arguments": {"x-expires": topo.CREDIT_EXPIRES_MS}}


def test_a_transient_credit_queue_left_by_an_older_version_is_used_as_it_is() -> None:
    channel = RecordingChannel(refuse={"taskfleet.unstarted.abc": (406, "PRECONDITION_FAILED - inequivalent arg "
                                                                        "'durable'")})
    topo.declare_credit_queue(channel, "taskfleet.unstarted.abc")  # no error: the credit goes to the old queue


def test_redeclaring_a_classic_queue_as_quorum_is_refused_with_what_to_do() -> None:
    text = "PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'billing'"
    channel = RecordingChannel(refuse={"billing": (406, text)})

    with pytest.raises(BrokerError) as refused:
        topo.declare_task_queue(channel, "billing", ladder_ready=False, queue_type="quorum")

    message = str(refused.value)
    assert "as a quorum queue" in message
    assert text in message
    assert "cannot change a queue's type" in message
    assert "rabbitmqctl delete_queue billing" in message


def test_another_refused_declare_is_reported_as_rabbitmq_said_it() -> None:
    channel = RecordingChannel(refuse={"billing": (403, "ACCESS_REFUSED")})

    with pytest.raises(BrokerError, match=r"refused to declare task queue 'billing': 403 ACCESS_REFUSED$"):
        topo.declare_task_queue(channel, "billing", ladder_ready=False, queue_type="quorum")


@pytest.mark.parametrize(("queue_type", "priority", "refused"), [
    ("quorum", 1, True), ("quorum", 9, True), ("quorum", 0, False), ("classic", 9, False),
])
def test_only_a_priority_sent_to_a_quorum_queue_is_refused(queue_type: str, priority: int, refused: bool) -> None:
    if refused:
        with pytest.raises(ConfigurationError, match=f"no message priorities: priority={priority}"):
            topo.check_priority_supported("billing", queue_type, priority)
    else:
        topo.check_priority_supported("billing", queue_type, priority)


def test_the_queue_type_is_classic_unless_an_app_opts_in_and_reaches_the_broker_settings() -> None:
    assert AppSettings(broker_url="amqp://h").broker_settings().queue_type == "classic"
    opted_in = AppSettings(broker_url="amqp://h", task_default_queue_type="quorum")
    assert opted_in.broker_settings().queue_type == "quorum"


@pytest.mark.parametrize("queue_type", ["stream", "Quorum", ""])
def test_an_unknown_queue_type_is_a_configuration_error(queue_type: str) -> None:
    with pytest.raises(ConfigurationError, match="task_default_queue_type must be one of classic, quorum"):
        AppSettings(task_default_queue_type=queue_type)
    with pytest.raises(ConfigurationError, match="task_default_queue_type"):
        BrokerSettings(url="amqp://h", queue_type=queue_type)


def test_the_queue_type_is_read_from_the_environment_at_an_entrypoint() -> None:
    assert settings_from_env({"TASKFLEET_TASK_DEFAULT_QUEUE_TYPE": "quorum"}) == {"task_default_queue_type": "quorum"}
    assert settings_from_env({"TASKFLEET_TASK_DEFAULT_QUEUE_TYPE": ""}) == {}
